"""Cost accounting: MACs, FLOPs and parameters."""

from layerlottery.metrics.macs import count_flops, count_macs, count_params, flops_by_module

__all__ = ["count_flops", "count_macs", "count_params", "flops_by_module"]
