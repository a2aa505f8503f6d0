"""Surgery: choose blocks from scores (select), record the choice (plan), build the shallower model (apply)."""

from layerlottery.surgery.apply import remove_blocks
from layerlottery.surgery.export import export_program, load_pruned, save_pruned
from layerlottery.surgery.filters import (
    FilterPlan,
    FilterTicket,
    apply_filter_plan,
    count_filters,
    filter_sites,
    filter_ticket_at_init,
    filters_to_remove_for,
    remove_filters,
    select_filters,
)
from layerlottery.surgery.layer_lists import renamed_layers
from layerlottery.surgery.plan import RemovalPlan
from layerlottery.surgery.select import (
    candidate_blocks,
    max_removable,
    parse_protect,
    protected_names,
    select_blocks,
)

__all__ = [
    "FilterPlan",
    "FilterTicket",
    "RemovalPlan",
    "apply_filter_plan",
    "count_filters",
    "filter_sites",
    "filter_ticket_at_init",
    "filters_to_remove_for",
    "remove_filters",
    "renamed_layers",
    "select_filters",
    "candidate_blocks",
    "export_program",
    "load_pruned",
    "max_removable",
    "parse_protect",
    "protected_names",
    "remove_blocks",
    "save_pruned",
    "select_blocks",
]
