"""Hugging Face causal language models as layerlottery networks: the ``hf:ID_OR_PATH`` model source.

``create_model("hf:gpt2", pretrained=True)`` loads a trained model from the Hub or a local folder (the
ShortGPT user pruning a trained LM); without ``pretrained`` (as torchvision's and timm's weights, trained
weights are asked for, never implied) ``create_model("hf:gpt2")`` builds the architecture its
``config.json`` describes with fresh weights drawn from torch's generator, so theta_0 is a function of the
seed as for every other model here, and structural checks (``run --dry-run``) download no weights.

The network is wrapped in :class:`CausalLM`, whose forward takes token ids ``(batch, tokens)`` and returns
the next-token logits flattened to ``(batch * tokens, vocabulary)``. With labels = the next tokens flattened
the same way, the trainer, ``evaluate``, the gradient criteria (SNIP, GraSP, gradient norm: the mean
next-token cross-entropy) and the MAC counter work on it unchanged, as on a classifier whose samples are
tokens. The transformer layers sit at ``lm.<base>.<layers>.<i>`` (``lm.transformer.h.3`` for GPT-2,
``lm.model.layers.3`` for Llama) and are removed as in :mod:`layerlottery.models.transformers_blocks`;
:func:`save_hf_pretrained` writes the pruned model inside as a Hugging Face folder that plain
``transformers`` loads.

``transformers`` is imported only when such a model is built (``pip install 'layerlottery[hf]'``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from layerlottery.atomic import atomic_directory
from layerlottery.errors import ConfigError
from layerlottery.models.registry import register_model_source

INSTALL_HINT = "pip install 'layerlottery[hf]'"
SHIPPED_PREFIX = "layerlottery/"
SHIPPED_CONFIGS = Path(__file__).parent / "hf_configs"
"""Configurations shipped with the package, named ``hf:layerlottery/NAME`` (random weights only, no download):
``tiny-gpt2``, a 6-layer GPT-2 of width 128 for quick CPU runs."""
DEFAULT_SEQ_LEN = 128
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION = ("sdpa", "eager")


def require_transformers() -> Any:
    """The ``transformers`` module, or a one-line ConfigError saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"Hugging Face models need the transformers library; {INSTALL_HINT}") from None
    return transformers


class CausalLM(nn.Module):
    """A Hugging Face causal LM seen as a classifier of tokens: ``forward(input_ids)`` -> ``(B*T, V)`` logits.

    Row ``b * T + t`` holds the logits predicting token ``t + 1`` of sequence ``b``; the labels that go
    with a batch are its next tokens, flattened the same way. The Hugging Face model is ``self.lm``.
    """

    main_input_name = "input_ids"  # token ids, not images (see layerlottery.metrics.macs.takes_token_ids)
    predicts_next_token = True  # bare token ids score as (first T-1 tokens, last T-1): criteria.common

    def __init__(self, lm: nn.Module, seq_len: int = DEFAULT_SEQ_LEN) -> None:
        super().__init__()
        self.lm = lm
        self.default_input_shape = (int(seq_len),)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # No key/value cache: training and scoring see whole windows, and a cache object would be kept alive.
        logits = self.lm(input_ids=input_ids, use_cache=False).logits
        return logits.reshape(-1, logits.shape[-1])


@register_model_source("hf", "a Hugging Face causal language model, a Hub id or a local folder, e.g. hf:gpt2")
def hf_causal_lm(
    identifier: str,
    *,
    pretrained: bool = False,
    num_classes: int | None = None,
    seq_len: int | None = None,
    shortcut: str = "B",
    zero_init_residual: bool = False,
    attn_implementation: str = "sdpa",
    dtype: str = "float32",
    in_channels: int | None = None,
    image_size: int | None = None,
    **config_overrides: Any,
) -> CausalLM:
    """``identifier`` (a Hub id or a folder with ``config.json``) as a :class:`CausalLM`.

    ``pretrained``: load its trained weights (``from_pretrained``), or (the default) build the architecture
    with fresh weights from torch's generator (``from_config``). ``num_classes`` is the data's vocabulary
    size: with fresh weights it sets ``vocab_size``; with trained ones every token id must fit the model's
    vocabulary. ``attn_implementation`` is ``sdpa`` (PyTorch's fused kernels) or ``eager``; ``dtype`` is
    ``float32`` (the default, what SGD trains), ``bfloat16`` or ``float16``.
    ``seq_len`` is the length of the sequences it reads (default: 128, or the model's maximum if smaller).
    Other keyword options override fields of the model's configuration (``num_hidden_layers=4``,
    ``n_embd=64``, ``resid_pdrop=0.0``). ``shortcut`` and ``zero_init_residual`` have no meaning here and
    are refused unless left at their defaults, as are image options (``in_channels``, ``image_size``).
    """
    if in_channels is not None or image_size is not None:
        raise ConfigError(f"hf:{identifier} is a language model and reads text; use data.name=text, not image data")
    if shortcut != "B":
        raise ConfigError(f"model.shortcut={shortcut!r} is for CIFAR ResNets; hf: models take no shortcut option")
    if zero_init_residual:
        raise ConfigError("model.zero_init_residual is for ResNets; hf: models cannot zero-initialize their layers")
    if not isinstance(pretrained, bool):
        raise ConfigError(f"model.options.pretrained must be true or false, not {pretrained!r}")
    if attn_implementation not in ATTENTION:
        raise ConfigError(f"model.options.attn_implementation must be one of {', '.join(ATTENTION)}, not {attn_implementation!r}")
    if dtype not in DTYPES:
        raise ConfigError(f"model.options.dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    transformers = require_transformers()
    identifier = _shipped(identifier, pretrained)
    config = _load_config(transformers, identifier)
    _override(config, identifier, config_overrides)
    length = _sequence_length(config, identifier, seq_len)
    if num_classes is not None and not pretrained:
        config.vocab_size = int(num_classes)
    elif num_classes is not None and int(num_classes) > int(config.vocab_size):
        raise ConfigError(
            f"the data has {num_classes} token ids but hf:{identifier} knows only {config.vocab_size}; tokenize "
            f"with the model's own tokenizer: data.options.tokenizer={identifier}"
        )
    options = {"attn_implementation": attn_implementation, "dtype": DTYPES[dtype]}
    try:
        if pretrained:
            lm = transformers.AutoModelForCausalLM.from_pretrained(identifier, config=config, **options)
        else:
            lm = transformers.AutoModelForCausalLM.from_config(config, **options)
    except (OSError, ValueError, RuntimeError) as exc:  # no weights there, an architecture with no causal LM head
        raise ConfigError(f"hf:{identifier} could not be built: {_first_line(exc)}") from None
    return CausalLM(lm, length)


def _shipped(identifier: str, pretrained: bool) -> str:
    """The folder of a shipped configuration for ``layerlottery/NAME``; any other identifier as it is."""
    if not identifier.startswith(SHIPPED_PREFIX):
        return identifier
    folder = SHIPPED_CONFIGS / identifier[len(SHIPPED_PREFIX) :]
    if not (folder / "config.json").is_file():
        shipped = ", ".join(sorted(SHIPPED_PREFIX + p.name for p in SHIPPED_CONFIGS.iterdir() if p.is_dir()))
        raise ConfigError(f"hf:{identifier} is not a configuration shipped with layerlottery; those are: {shipped}")
    if pretrained:
        raise ConfigError(f"hf:{identifier} is an architecture without trained weights; leave model.options.pretrained false")
    return str(folder)


def _load_config(transformers: Any, identifier: str) -> Any:
    try:
        return transformers.AutoConfig.from_pretrained(identifier)
    except (OSError, ValueError) as exc:  # no such folder or Hub id, no config.json, unknown model type
        raise ConfigError(
            f"hf:{identifier}: no Hugging Face model configuration found ({_first_line(exc)}); "
            "give a Hub id or a folder holding config.json"
        ) from None


def _override(config: Any, identifier: str, overrides: dict[str, Any]) -> None:
    """Set each configuration field of ``overrides``; refuse a name the configuration does not have."""
    known = set(config.to_dict()) | set(getattr(config, "attribute_map", {}))
    unknown = sorted(key for key in overrides if key not in known)
    if unknown:
        raise ConfigError(
            f"hf:{identifier} has no option or configuration field {', '.join(map(repr, unknown))}; options: "
            "pretrained, seq_len, attn_implementation, dtype, or a field of its config.json"
        )
    for key, value in overrides.items():
        setattr(config, key, value)


def _sequence_length(config: Any, identifier: str, seq_len: int | None) -> int:
    limit = getattr(config, "max_position_embeddings", None)
    if seq_len is None:
        return min(DEFAULT_SEQ_LEN, limit) if isinstance(limit, int) else DEFAULT_SEQ_LEN
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ConfigError(f"seq_len must be a positive integer, not {seq_len!r}")
    if isinstance(limit, int) and seq_len > limit:
        raise ConfigError(
            f"sequences of {seq_len} tokens are longer than the {limit} positions hf:{identifier} has; "
            f"set data.options.seq_len={limit} or less"
        )
    return seq_len


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:240]


# --------------------------------------------------------------------------------------------- saving


def hf_model_of(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside ``model`` (a :class:`CausalLM`), or ``model`` itself if it is one."""
    inner = model.lm if isinstance(model, CausalLM) else model
    if not callable(getattr(inner, "save_pretrained", None)):
        raise ConfigError(f"{type(model).__name__} is not a Hugging Face model; only hf: models save as Hugging Face folders")
    return inner


def save_hf_pretrained(
    model: nn.Module, folder: str | os.PathLike[str], *, tokenizer: Any = None, overwrite: bool = False
) -> Path:
    """Write ``model`` (pruned or not) as a Hugging Face folder: ``from_pretrained(folder)`` loads it without
    layerlottery. ``tokenizer`` (a tokenizer object, or a Hub id or folder to load one from) is saved beside it.

    The folder appears complete or not at all (written beside it, then renamed); an existing folder is
    replaced only with ``overwrite``.
    """
    inner = hf_model_of(model)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = require_transformers().AutoTokenizer.from_pretrained(str(tokenizer))
    with atomic_directory(folder, overwrite=overwrite) as staging:
        inner.save_pretrained(staging)
        if tokenizer is not None:
            tokenizer.save_pretrained(staging)
    return Path(folder).resolve()
