"""Experiments built from the core steps (score -> select -> remove)."""

from layerlottery.experiments.at_init import Ticket, model_options_for, scoring_data, ticket_at_init

__all__ = ["Ticket", "model_options_for", "scoring_data", "ticket_at_init"]
