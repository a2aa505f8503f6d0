"""Errors the user can fix.

Every mistake a user can make (an unknown model name, p larger than the removable count, a corrupt
archive) raises a subclass of :class:`LayerLotteryError` with a one-line message saying what was wrong
and what to do. The command line prints that line and exits with status 2, never a traceback; anything
else escaping is a bug in layerlottery.
"""

from __future__ import annotations


class LayerLotteryError(ValueError):
    """A problem with the user's input or environment, described in one actionable line."""


class ConfigError(LayerLotteryError):
    """An invalid option or combination of options."""


class DataError(LayerLotteryError):
    """Data that is missing, corrupt or of the wrong format."""


class PruningError(LayerLotteryError):
    """A removal request that cannot be carried out on this network."""
