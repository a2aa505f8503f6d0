"""Other libraries' networks by name: ``torchvision:NAME`` and ``timm:NAME`` (model sources, see ``registry``).

Both factories take the options every model gets (``num_classes``, ``in_channels``, ``image_size`` fitted to
the data, ``shortcut``, ``zero_init_residual``) plus ``model.options``, and refuse in one line what a
network cannot do. Every random draw of their initialization comes from torch's global generator, so
``initial_model(name, options, seed)`` gives the same theta_0 for the same seed, bit for bit.

* ``torchvision:resnet50`` builds ``torchvision.models.get_model(NAME, num_classes=...)``. torchvision's
  networks read 3 channels; for 1-channel data the stem convolution's weights are summed over its RGB
  inputs, so the network computes exactly what the 3-channel network computes on the gray image repeated
  in 3 channels. ``weights`` (``"DEFAULT"``, ``"IMAGENET1K_V2"``) loads pretrained weights (downloaded by
  torchvision, once); if ``num_classes`` differs from the weights' classes, the classifier's last
  ``Linear`` is replaced by a fresh one (seeded) for ``num_classes``, as when fine-tuning. The ViTs
  (``vit_*``) take ``image_size``; the CNNs pool adaptively and take any size.
* ``timm:resnet18``, ``timm:vit_tiny_patch16_224`` build ``timm.create_model(NAME, pretrained=...,
  num_classes=..., in_chans=...)``; models whose input size is fixed (ViTs) get ``img_size``. Further
  ``model.options`` go to timm unchanged (``depth``, ``embed_dim``, ``patch_size`` for a tiny ViT).
  ``zero_init_residual`` sets timm's ``zero_init_last`` for its ResNets (timm's own default zero-initializes
  them; layerlottery's is off, as for every other network, since gradient criteria score such blocks 0).

torchvision and timm are imported inside the factories: listing models imports neither.
"""

from __future__ import annotations

import difflib
from typing import Any

from torch import nn

from layerlottery.errors import ConfigError
from layerlottery.models.registry import register_model_source

_TIMM_INSTALL = "pip install 'layerlottery[timm]'"


def _check_shortcut(name: str, shortcut: str) -> None:
    if shortcut != "B":
        raise ConfigError(
            f"model.shortcut={shortcut} applies to the CIFAR ResNets only; {name} has its own shortcuts "
            "(leave model.shortcut at B)"
        )


def _check_sizes(name: str, num_classes: Any, in_channels: Any, image_size: Any) -> None:
    for option, value in (("num_classes", num_classes), ("in_channels", in_channels), ("image_size", image_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}: {option} must be a positive whole number, not {value!r}")


def _unknown_name(name: str, prefix: str, known: list[str], how_to_list: str) -> ConfigError:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(f'{prefix}:{c}' for c in close)}? " if close else ""
    return ConfigError(f"{prefix} has no classification model {name!r}; {hint}list them with {how_to_list}")


# ------------------------------------------------------------------------------------------- torchvision


@register_model_source(
    "torchvision",
    "a torchvision classification network, e.g. torchvision:resnet50; options: weights (e.g. DEFAULT, downloads)",
)
def torchvision_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    image_size: int = 224,
    shortcut: str = "B",
    zero_init_residual: bool = False,
    weights: str | None = None,
    **options: Any,
) -> nn.Module:
    """``torchvision.models.get_model(name, ...)`` fitted to the data (see the module docstring)."""
    import torchvision

    full = f"torchvision:{name}"
    known = torchvision.models.list_models(module=torchvision.models)
    if name not in known:
        raise _unknown_name(name, "torchvision", known, "python -c 'import torchvision; print(torchvision.models.list_models(module=torchvision.models))'")
    _check_shortcut(full, shortcut)
    _check_sizes(full, num_classes, in_channels, image_size)
    if in_channels not in (1, 3):
        raise ConfigError(
            f"{full} reads 3-channel images (or 1-channel, through its RGB stem summed); the data has {in_channels} "
            "channels: use timm:NAME (it takes in_chans) or a registered model"
        )
    if zero_init_residual:
        options["zero_init_residual"] = True  # the ResNets take it; others refuse it below, in one line
    if name.startswith("vit_"):
        options["image_size"] = image_size
    resolved = _torchvision_weights(full, name, weights)
    classes = len(resolved.meta["categories"]) if resolved is not None else num_classes
    try:
        model = torchvision.models.get_model(name, weights=resolved, num_classes=classes, **options)
    except (TypeError, ValueError, KeyError, AssertionError) as exc:  # ViTs assert their patch grid
        raise ConfigError(f"{full} does not take these options ({_one_line(exc)})") from None
    if classes != num_classes:
        _replace_head(model, classes, num_classes, full)
    if in_channels == 1:
        _sum_stem_channels(model, full)
    model.default_input_shape = (in_channels, image_size, image_size)
    return model


def _torchvision_weights(full: str, name: str, weights: str | None) -> Any:
    """The weights enum member ``weights`` names (``DEFAULT`` or a member name), or None."""
    if weights is None:
        return None
    import torchvision

    if not isinstance(weights, str):
        raise ConfigError(f"{full}: weights must be a name such as DEFAULT or IMAGENET1K_V1, not {weights!r}")
    try:
        enum = torchvision.models.get_model_weights(name)
    except (ValueError, KeyError):
        raise ConfigError(f"{full} has no pretrained weights; leave out the weights option") from None
    try:
        return enum[weights] if weights != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ", ".join(["DEFAULT", *(member.name for member in enum)])
        raise ConfigError(f"{full}: unknown weights {weights!r}; choose one of: {names}") from None


def _replace_head(model: nn.Module, classes: int, num_classes: int, full: str) -> None:
    """Swap the last ``Linear`` with ``classes`` outputs (the pretrained classifier) for a fresh one of ``num_classes``."""
    heads = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.Linear) and module.out_features == classes]
    if not heads:
        raise ConfigError(f"{full}: cannot find the {classes}-class classifier to resize; set num_classes to {classes}")
    name, head = heads[-1]
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, nn.Linear(head.in_features, num_classes, bias=head.bias is not None))


def _sum_stem_channels(model: nn.Module, full: str) -> None:
    """Make the first convolution read one channel: its weights summed over the three it read.

    conv(w, [g, g, g]) = conv(w.sum over input channels, g), so the network on a gray image equals the
    3-channel network on that image repeated in 3 channels (pretrained weights included). No random draw.
    """
    stem = next((m for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels == 3 and m.groups == 1), None)
    if stem is None:
        raise ConfigError(f"{full}: cannot find its 3-channel stem convolution to read 1-channel images; use timm:NAME")
    stem.weight = nn.Parameter(stem.weight.detach().sum(dim=1, keepdim=True))
    stem.in_channels = 1


def _one_line(exc: BaseException) -> str:
    text = str(exc.args[0] if isinstance(exc, KeyError) and exc.args else exc).strip()  # KeyError's str quotes
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------------------------- timm


@register_model_source(
    "timm",
    "a timm network, e.g. timm:resnet50 or timm:vit_tiny_patch16_224; options: pretrained (downloads), depth, ... (needs timm)",
)
def timm_model(
    name: str,
    *,
    num_classes: int = 1000,
    in_channels: int = 3,
    image_size: int | None = None,
    shortcut: str = "B",
    zero_init_residual: bool = False,
    pretrained: bool = False,
    **options: Any,
) -> nn.Module:
    """``timm.create_model(name, ...)`` fitted to the data (see the module docstring)."""
    try:
        import timm
        from timm.models import get_pretrained_cfg_value, is_model_in_modules
    except ImportError:
        raise ConfigError(f"timm:{name} needs timm: {_TIMM_INSTALL}") from None

    full = f"timm:{name}"
    if not timm.is_model(name):
        raise _unknown_name(name, "timm", timm.list_models(), "python -c \"import timm; print(timm.list_models('*resnet*'))\"")
    _check_shortcut(full, shortcut)
    for reserved, setting in (("in_chans", "in_channels"), ("img_size", "image_size")):
        if reserved in options:
            raise ConfigError(f"{full}: leave {reserved} out of model.options; it follows the data ({setting})")
    if not isinstance(pretrained, bool):
        raise ConfigError(f"{full}: pretrained must be true or false, not {pretrained!r}")
    default_size = (get_pretrained_cfg_value(name, "input_size") or (3, 224, 224))[-1]
    size = default_size if image_size is None else image_size
    _check_sizes(full, num_classes, in_channels, size)
    if get_pretrained_cfg_value(name, "fixed_input_size"):
        options["img_size"] = size  # ViTs: patch grid and position embeddings depend on it
    if is_model_in_modules(name, ["resnet"]):
        options["zero_init_last"] = zero_init_residual
    elif zero_init_residual:
        raise ConfigError(f"{full} has no zero_init_residual option (timm's ResNets have); set model.zero_init_residual=false")
    try:
        model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **options)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ConfigError(f"{full} does not take these options ({_one_line(exc)})") from None
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is not None and max(patch) > size:  # timm builds it, but its first forward would fail
        raise ConfigError(
            f"{full}: {size}x{size} images are smaller than its {max(patch)}x{max(patch)} patches; "
            "give a smaller patch_size (model.options, or --model-option patch_size=4)"
        )
    model.default_input_shape = (in_channels, size, size)
    return model
