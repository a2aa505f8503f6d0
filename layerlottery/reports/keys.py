"""What a ticket is, apart from its seed: one key for a finished run's result and for a table row.

The table (:func:`~layerlottery.reports.tables.summarize`), the figures and the robustness table all group
runs over seeds; this module says how, once, so a ticket's label reads the same everywhere.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from layerlottery.reports.tables import TicketRow


class TicketKey(NamedTuple):
    """A ticket over seeds: its criterion and its setting (:meth:`setting`)."""

    criterion: str
    p: int
    structure: str = "layers"
    """``layers`` or ``filters`` (the filter-pruning baseline)."""
    rewind_epoch: int | None = None
    """Tickets after training: the dense epoch the kept weights were rewound to; None at init or for the control."""
    control: bool = False
    """Algorithm 1's control: the pruned architecture re-initialized at random."""
    rounds: int = 1

    def setting(self, with_p: bool = True) -> tuple[Any, ...]:
        """Everything but the criterion (and the seed): tickets with the same setting share a figure panel."""
        return (self.p if with_p else None, self.rounds, self.control, -1 if self.rewind_epoch is None else self.rewind_epoch)

    def sort_key(self) -> tuple[Any, ...]:
        """The table's order: criterion, at-init before rewind points before the control, rounds, p, layers first."""
        rewind = -1 if self.rewind_epoch is None else self.rewind_epoch
        return (self.criterion, self.control, rewind, self.rounds, self.p, self.structure != "layers")


def key_of_result(result: Mapping[str, Any]) -> TicketKey | None:
    """The key of a finished run's result (None for a dense run)."""
    kind = result["kind"]
    if kind == "dense":
        return None
    control = bool(result.get("control", False)) if kind == "lottery" else False
    rewind = result.get("rewind_epoch") if kind == "lottery" and not control else None
    return TicketKey(
        criterion=str(result["criterion"]),
        p=int(result["p"]),
        structure="filters" if kind == "filters" else "layers",
        rewind_epoch=rewind,
        control=control,
        rounds=int(result.get("round", 1)) if kind == "lottery" else 1,
    )


def key_of_row(row: TicketRow) -> TicketKey:
    """The key of a table row (the same as that of each run it summarizes)."""
    return TicketKey(row.criterion, row.p, row.structure, row.rewind_epoch, row.control, row.rounds)


def setting_label(key: TicketKey, with_p: bool = True) -> str:
    """``p=2, rewind to epoch 4``, ``at initialization``, ``reinit control, 2 rounds`` ..."""
    parts = [f"p={key.p}"] if with_p else []
    if key.control:
        parts.append("reinit control")
    elif key.rewind_epoch is not None:
        parts.append(f"rewind to epoch {key.rewind_epoch}")
    else:
        parts.append("at initialization")
    if key.rounds > 1:
        parts.append(f"{key.rounds} rounds")
    return ", ".join(parts)


def ticket_label(key: TicketKey) -> str:
    """A short label naming the ticket: ``grasp p=2``, ``kl p=1 rewind 4``, ``snip p=2 filters``."""
    label = f"{key.criterion} p={key.p}"
    if key.structure != "layers":
        label += f" {key.structure}"
    if key.control:
        label += " reinit"
    elif key.rewind_epoch is not None:
        label += f" rewind {key.rewind_epoch}"
    if key.rounds > 1:
        label += f" ({key.rounds} rounds)"
    return label
