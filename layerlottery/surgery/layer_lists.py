"""Removing blocks from an ``nn.ModuleList`` (transformer layer lists), renumbering what stays.

An ``nn.Sequential`` runs whatever its ``_modules`` hold, so a block is deleted from one and the others
keep their names. A layer list is different: models index it (``layers[: num_hidden_layers]``), caches
are addressed by a layer's position, and ``from_pretrained`` expects ``layers.0 .. layers.N-1``. So a
list is rebuilt with contiguous indices and the names of the layers after a removed one shift: a
:class:`~layerlottery.surgery.plan.RemovalPlan` keeps the *original* names, and
:func:`renamed_layers` gives the original -> new mapping. Hugging Face models are then made consistent
(layer count, ``layer_types``, cache indices) by
:func:`~layerlottery.models.transformers_blocks.renumber_after_removal`.
"""

from __future__ import annotations

from typing import Iterable

from torch import nn

from layerlottery.errors import PruningError
from layerlottery.models.transformers_blocks import check_config_consistency, renumber_after_removal


def list_positions(model: nn.Module, names: Iterable[str]) -> dict[str, list[int]]:
    """``{list name: sorted positions}`` of the named blocks held in an ``nn.ModuleList`` (others skipped)."""
    grouped: dict[str, list[int]] = {}
    for name in names:
        stage, _, child = name.rpartition(".")
        parent = model.get_submodule(stage)
        if isinstance(parent, nn.ModuleList):
            grouped.setdefault(stage, []).append(list(parent._modules).index(child))
    return {stage: sorted(positions) for stage, positions in grouped.items()}


def check_list_removal(model: nn.Module, names: Iterable[str]) -> None:
    """Raise :class:`PruningError` before any change if removing ``names`` would empty a layer list."""
    for stage, positions in list_positions(model, names).items():
        count = len(model.get_submodule(stage))
        if len(positions) >= count:
            raise PruningError(
                f"removing {len(positions)} of the {count} layers of {stage} would leave none; keep at least one layer"
            )
        check_config_consistency(model, stage)


def remove_from_layer_lists(model: nn.Module, names: Iterable[str]) -> None:
    """Delete the named blocks from their ``nn.ModuleList`` in place, renumbering the rest (0..N-1)."""
    for stage, positions in list_positions(model, names).items():
        layers = model.get_submodule(stage)
        old_count = len(layers)
        for position in reversed(positions):
            del layers[position]  # ModuleList.__delitem__ renumbers the keys that follow
        kept = [i for i in range(old_count) if i not in positions]
        renumber_after_removal(model, stage, kept, old_count)


def renamed_layers(model: nn.Module, removed: Iterable[str]) -> dict[str, str]:
    """Original name -> name after removal, for every kept layer of a list that loses layers.

    ``model`` is the dense model the names refer to. Layers of untouched lists and blocks of an
    ``nn.Sequential`` keep their names and are not listed.
    """
    mapping: dict[str, str] = {}
    for stage, positions in list_positions(model, removed).items():
        gone = set(positions)
        keys = list(model.get_submodule(stage)._modules)
        kept = [key for index, key in enumerate(keys) if index not in gone]
        mapping.update({f"{stage}.{key}": f"{stage}.{new}" for new, key in enumerate(kept)})
    return mapping
