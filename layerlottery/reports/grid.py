"""Table 1's grid: accuracy change vs dense per criterion (rows) and rewind point (columns).

Algorithm 1 (``layerlottery.experiments.lottery``) chooses blocks on the trained dense network, rewinds the
kept weights to a dense epoch and trains the rest; its control re-initializes the pruned network at random.
Each (p, rounds) gets its own grid, built from the table's rows, so grid and table always agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from layerlottery.reports.tables import TicketRow, rewind_label


@dataclass(frozen=True)
class LotteryGrid:
    """One grid: ``mean[i][j]`` is the change (points) of ``criteria[i]`` at ``columns[j]``, None if not run."""

    p: int
    rounds: int
    criteria: list[str]
    columns: list[str]
    """Rewind points in epoch order (``epoch 4 (50%)``), the control (``reinit``) last."""
    mean: list[list[float | None]]
    std: list[list[float | None]]
    seeds: list[list[int]]

    @property
    def title(self) -> str:
        blocks = "block" if self.p == 1 else "blocks"
        rounds = f", {self.rounds} rounds" if self.rounds > 1 else ""
        return f"p = {self.p} {blocks} removed{rounds}"


def lottery_grids(rows: Sequence[TicketRow]) -> list[LotteryGrid]:
    """The grids of the tickets after training among ``rows`` (layer tickets only), ordered by p, rounds."""
    lottery = [r for r in rows if r.structure == "layers" and (r.rewind_epoch is not None or r.control)]
    grids = []
    for p, rounds in sorted({(r.p, r.rounds) for r in lottery}):
        members = [r for r in lottery if (r.p, r.rounds) == (p, rounds)]
        order = sorted({(r.control, r.rewind_epoch or 0, rewind_label(r)) for r in members})
        columns = [label for _, _, label in order]
        criteria = sorted({r.criterion for r in members})
        cell = {(r.criterion, rewind_label(r)): r for r in members}
        grids.append(
            LotteryGrid(
                p=p,
                rounds=rounds,
                criteria=criteria,
                columns=columns,
                mean=[[_get(cell, c, col, "acc_change_mean") for col in columns] for c in criteria],
                std=[[_get(cell, c, col, "acc_change_std") for col in columns] for c in criteria],
                seeds=[[int(_get(cell, c, col, "seeds") or 0) for col in columns] for c in criteria],
            )
        )
    return grids


def _get(cell: dict[tuple[str, str], TicketRow], criterion: str, column: str, name: str) -> float | None:
    row = cell.get((criterion, column))
    return None if row is None else getattr(row, name)
