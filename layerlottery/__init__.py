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

from layerlottery.criteria import BlockScores, DegenerateScoresWarning, get_criterion, list_criteria, score_blocks
from layerlottery.data import ImageDataset, get_dataset, list_datasets
from layerlottery.errors import ConfigError, DataError, LayerLotteryError, PruningError
from layerlottery.metrics import count_flops, count_macs, count_params
from layerlottery.models import create_model, list_models, register_model
from layerlottery.models.blocks import BlockInfo, NetworkBlocks, find_blocks, zero_branches
from layerlottery.surgery import (
    RemovalPlan,
    candidate_blocks,
    export_program,
    load_pruned,
    max_removable,
    remove_blocks,
    save_pruned,
    select_blocks,
)

__version__ = "0.1.0"

__all__ = [
    "BlockInfo",
    "BlockScores",
    "ConfigError",
    "DataError",
    "DegenerateScoresWarning",
    "ImageDataset",
    "LayerLotteryError",
    "NetworkBlocks",
    "PruningError",
    "RemovalPlan",
    "candidate_blocks",
    "count_flops",
    "count_macs",
    "count_params",
    "create_model",
    "export_program",
    "find_blocks",
    "get_criterion",
    "get_dataset",
    "list_criteria",
    "list_datasets",
    "list_models",
    "load_pruned",
    "max_removable",
    "register_model",
    "remove_blocks",
    "save_pruned",
    "score_blocks",
    "select_blocks",
    "zero_branches",
]
