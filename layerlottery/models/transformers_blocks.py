"""Hugging Face transformer layers as residual blocks: GPT-2, Llama-style decoders, BERT-style encoders.

A transformer layer maps hidden states ``h -> h'`` through two residual branches. In a pre-norm layer
(GPT-2, Llama, Mistral, Qwen2) ``h1 = h + attn(norm1(h))`` and ``h' = h1 + mlp(norm2(h1))``, so zeroing
both branches gives ``h' = h``: removing the layer equals skipping it. In a post-norm layer (BERT, RoBERTa)
``h1 = norm1(h + attn(h))`` and ``h' = norm2(h1 + ffn(h1))``: zeroing the branches still normalizes, so
there removal is defined as skipping, ``h' = h`` (what ShortGPT-style layer pruning does), and
``skip_by_zeroing`` is off.

The layers sit in an ``nn.ModuleList`` that the model iterates over (``transformer.h``, ``model.layers``,
``encoder.layer``); deleting one rebuilds the list with contiguous indices (``from_pretrained`` expects
``layers.0 .. layers.N-1``) and :func:`renumber_after_removal` keeps the model consistent: the layer count in
its configuration, its per-layer ``layer_types``, and the ``layer_idx`` each attention layer uses to find
its slot in the key/value cache. The pruned model then generates, saves with ``save_pretrained`` and loads
with plain ``from_pretrained``.

Nothing here imports ``transformers``: a model can only hold these layers once their modeling module is
loaded, so the matchers look the classes up in ``sys.modules``.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Sequence

from torch import nn

from layerlottery.errors import PruningError
from layerlottery.models.blocks import BlockKind, register_block_kind


def loaded_class_matcher(module_name: str, class_name: str) -> Callable[[nn.Module], bool]:
    """``isinstance(m, module_name.class_name)`` once that module is imported, ``False`` before (no import)."""

    def matches(module: nn.Module) -> bool:
        loaded = sys.modules.get(module_name)
        cls = getattr(loaded, class_name, None) if loaded is not None else None
        return cls is not None and isinstance(module, cls)

    return matches


def _gpt2_obstacle(layer: nn.Module) -> str:
    if getattr(layer.attn, "scale_attn_by_inverse_layer_idx", False):
        # The scale is fixed at construction from the layer's index: renumbered layers would load with
        # another scale, so the saved model would not compute what the pruned one does.
        return "scale_attn_by_inverse_layer_idx ties each layer's attention scale to its position"
    return ""


def _gpt2_branch_ends(layer: nn.Module) -> tuple[nn.Module, ...]:
    ends = [layer.attn.c_proj]
    if getattr(layer, "crossattention", None) is not None:
        ends.append(layer.crossattention.c_proj)
    return (*ends, layer.mlp.c_proj)


register_block_kind(
    BlockKind(
        name="hf_gpt2",
        matches=loaded_class_matcher("transformers.models.gpt2.modeling_gpt2", "GPT2Block"),
        branch_end=lambda m: m.mlp.c_proj,
        branch_ends=_gpt2_branch_ends,
        has_identity_shortcut=lambda m: True,
        in_module_list=True,
        obstacle=_gpt2_obstacle,
    )
)

# Llama and the decoders that copy its layer (same attribute names, pre-norm, two branches).
LLAMA_STYLE = {"llama": "LlamaDecoderLayer", "mistral": "MistralDecoderLayer", "qwen2": "Qwen2DecoderLayer"}
for _family, _class in LLAMA_STYLE.items():
    register_block_kind(
        BlockKind(
            name=f"hf_{_family}",
            matches=loaded_class_matcher(f"transformers.models.{_family}.modeling_{_family}", _class),
            branch_end=lambda m: m.mlp.down_proj,
            branch_ends=lambda m: (m.self_attn.o_proj, m.mlp.down_proj),
            has_identity_shortcut=lambda m: True,
            in_module_list=True,
        )
    )

# BERT and RoBERTa: post-norm, so removal is skipping (see the module docstring).
for _family, _class in {"bert": "BertLayer", "roberta": "RobertaLayer"}.items():
    register_block_kind(
        BlockKind(
            name=f"hf_{_family}",
            matches=loaded_class_matcher(f"transformers.models.{_family}.modeling_{_family}", _class),
            branch_end=lambda m: m.output.dense,
            branch_ends=lambda m: (m.attention.output.dense, m.output.dense),
            has_identity_shortcut=lambda m: True,
            skip_by_zeroing=False,
            in_module_list=True,
        )
    )


# ------------------------------------------------------------------------------ after a layer is removed


def _configs_above(model: nn.Module, stage: str, old_count: int) -> list[Any]:
    """The distinct configurations of ``stage``'s ancestors that count ``old_count`` layers."""
    found: list[Any] = []
    parts = stage.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        owner = model.get_submodule(".".join(parts[:depth]))
        config = getattr(owner, "config", None)
        if getattr(config, "num_hidden_layers", None) == old_count and all(config is not c for c in found):
            found.append(config)
    return found


def renumber_after_removal(model: nn.Module, stage: str, kept: Sequence[int], old_count: int) -> None:
    """Make a Hugging Face model whose layer list ``stage`` now holds the old layers ``kept`` consistent.

    Sets ``num_hidden_layers`` (GPT-2's ``n_layer`` is the same attribute), keeps the ``layer_types`` of
    the kept layers, and gives every ``layer_idx`` inside layer ``j`` of the new list the value ``j``, the
    slot its keys and values take in the cache. A list not owned by a Hugging Face configuration is left
    alone (a plain ``nn.ModuleList`` needs nothing more than rebuilding).
    """
    configs = _configs_above(model, stage, old_count)
    for config in configs:
        layer_types = getattr(config, "layer_types", None)
        config.num_hidden_layers = len(kept)
        if isinstance(layer_types, (list, tuple)) and len(layer_types) == old_count:
            config.layer_types = [layer_types[i] for i in kept]
    if not configs:
        return
    for new_index, layer in enumerate(model.get_submodule(stage)):
        for module in layer.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index


def check_config_consistency(model: nn.Module, stage: str) -> None:
    """Raise :class:`PruningError` if the configuration above ``stage`` does not count its layers.

    Called before removal: a model whose configuration already disagrees with its layer list (e.g. layers
    appended by hand) cannot be renumbered safely.
    """
    count = len(model.get_submodule(stage))
    parts = stage.split(".")
    for depth in range(len(parts) - 1, -1, -1):
        config = getattr(model.get_submodule(".".join(parts[:depth])), "config", None)
        layers = getattr(config, "num_hidden_layers", None)
        if isinstance(layers, int) and layers != count and config.__class__.__module__.startswith("transformers"):
            raise PruningError(
                f"{stage} holds {count} layers but the model's config says num_hidden_layers={layers}; "
                "make them agree before removing layers"
            )
