"""Block removal: build a genuinely shallower network from a dense one and a removal plan."""

from __future__ import annotations

import copy
from typing import Iterable

from torch import nn

from layerlottery.errors import PruningError
from layerlottery.models.blocks import residual_modules, structural_obstacle
from layerlottery.surgery.layer_lists import check_list_removal, remove_from_layer_lists
from layerlottery.surgery.plan import RemovalPlan


def remove_blocks(model: nn.Module, plan: RemovalPlan | Iterable[str]) -> nn.Module:
    """Return a copy of ``model`` without the plan's blocks; ``model`` itself is not changed.

    Each removed block is deleted from its ``nn.Sequential`` stage, so kept blocks keep their original
    names (``layer1.0, layer1.2, ...``) and weights, so the pruned ``state_dict`` is a subset of the dense
    one. Nothing is left in place of a removed block: no mask, no ``Identity``, no extra call.

    Blocks held in an ``nn.ModuleList`` (transformer layers) are the exception: the list is rebuilt with
    contiguous indices, so later layers are renamed (``layer_lists.renamed_layers`` maps the names) and a
    Hugging Face model's configuration and cache indices follow (``layer_lists`` explains why).
    """
    if isinstance(plan, str):
        raise PruningError("pass block names as a list, e.g. ['layer1.2'], not a single string")
    names = list(plan.removed if isinstance(plan, RemovalPlan) else plan)
    if len(set(names)) != len(names):
        raise PruningError(f"a block is listed twice in {names}")
    if not names:
        return copy.deepcopy(model)
    # Structure alone decides removability, so no forward pass (and no input shape) is needed here.
    found = {name: (module, kind) for name, module, kind in residual_modules(model, required=True)}
    modules = dict(model.named_modules())
    for name in names:
        if name not in found:
            raise PruningError(f"no residual block named {name!r}; blocks are: {', '.join(found)}")
        module, kind = found[name]
        reason = structural_obstacle(module, kind, modules.get(name.rpartition(".")[0]))
        if reason:
            raise PruningError(f"block {name} cannot be removed: {reason}")
    check_list_removal(model, names)

    pruned = copy.deepcopy(model)
    in_lists = [name for name in names if isinstance(modules[name.rpartition(".")[0]], nn.ModuleList)]
    remove_from_layer_lists(pruned, in_lists)
    for name in names:
        if name in in_lists:
            continue
        stage, _, child = name.rpartition(".")
        # nn.Sequential runs whatever is in its _modules, in order: deleting the entry deletes the block
        # and keeps the container's class and the names of its other blocks.
        delattr(pruned.get_submodule(stage), child)
    return pruned
