"""Reports: tables from finished runs. Reports read results and never train."""

from layerlottery.reports.collect import collect_runs
from layerlottery.reports.tables import DenseSummary, TicketRow, summarize, to_csv, to_markdown, to_rich

__all__ = ["DenseSummary", "collect_runs", "TicketRow", "summarize", "to_csv", "to_markdown", "to_rich"]
