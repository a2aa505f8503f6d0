"""layerlottery: find layer-pruned lottery tickets.

Score every residual block of a network, delete the weakest blocks (a genuinely shallower network, not a
mask), and account for what that saves::

    import layerlottery as ll

    model = ll.create_model("cifar_resnet32", shortcut="B")
    blocks = ll.find_blocks(model)
    scores = ll.score_blocks(model, "grasp", (images, labels))
    plan = ll.select_blocks(blocks, scores, p=3, model="cifar_resnet32", model_options={"shortcut": "B"})
    ticket = ll.remove_blocks(model, plan)
    ll.count_macs(ticket)  # 54,968,960 = 69,124,736 - 3 x 4,718,592
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Before anything loads torch: idle OpenMP threads sleep instead of spinning, which keeps a CPU training step
# from slowing 10-20x when another process takes a core (measured; see layerlottery.threads). No result changes.
from layerlottery.threads import prefer_passive_waiting as _prefer_passive_waiting  # noqa: E402

_prefer_passive_waiting()

# The public API, imported on first use (PEP 562): `layerlottery --help` and other light commands then
# start without loading torch.
_EXPORTS = {
    "BlockInfo": "layerlottery.models.blocks",
    "BlockScores": "layerlottery.criteria",
    "ConfigError": "layerlottery.errors",
    "DataError": "layerlottery.errors",
    "DegenerateScoresWarning": "layerlottery.criteria",
    "ImageDataset": "layerlottery.data",
    "LayerLotteryError": "layerlottery.errors",
    "NetworkBlocks": "layerlottery.models.blocks",
    "PruningError": "layerlottery.errors",
    "RemovalPlan": "layerlottery.surgery",
    "candidate_blocks": "layerlottery.surgery",
    "count_flops": "layerlottery.metrics",
    "count_macs": "layerlottery.metrics",
    "count_params": "layerlottery.metrics",
    "create_model": "layerlottery.models",
    "export_program": "layerlottery.surgery",
    "find_blocks": "layerlottery.models.blocks",
    "get_criterion": "layerlottery.criteria",
    "get_dataset": "layerlottery.data",
    "list_criteria": "layerlottery.criteria",
    "list_datasets": "layerlottery.data",
    "list_models": "layerlottery.models",
    "load_pruned": "layerlottery.surgery",
    "max_removable": "layerlottery.surgery",
    "register_model": "layerlottery.models",
    "remove_blocks": "layerlottery.surgery",
    "save_pruned": "layerlottery.surgery",
    "score_blocks": "layerlottery.criteria",
    "select_blocks": "layerlottery.surgery",
    "zero_branches": "layerlottery.models.blocks",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from layerlottery.criteria import BlockScores, DegenerateScoresWarning, get_criterion, list_criteria, score_blocks
    from layerlottery.data import ImageDataset, get_dataset, list_datasets
    from layerlottery.errors import ConfigError, DataError, LayerLotteryError, PruningError
    from layerlottery.metrics import count_flops, count_macs, count_params
    from layerlottery.models import create_model, list_models, register_model
    from layerlottery.models.blocks import BlockInfo, NetworkBlocks, find_blocks, zero_branches
    from layerlottery.surgery import RemovalPlan, candidate_blocks, export_program, load_pruned, max_removable, remove_blocks, save_pruned, select_blocks


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'layerlottery' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
