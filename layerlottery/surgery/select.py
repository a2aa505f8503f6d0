"""From block scores to a removal plan: which blocks go, under the paper's constraints.

The paper removes the p lowest-scoring blocks greedily: take the lowest score; if the block is protected
or its stage is already at its minimum size, skip it; stop after p. Protected by default: the first block
of every stage (in the CIFAR ResNets the stride-2 block of stages 2 and 3 cannot go anyway, and the paper
also keeps the network's first block). Ties are broken by network order, so a plan is a pure function of
its scores.

``selection="contiguous"`` removes a run of p adjacent blocks instead, as ShortGPT-style and Gromov et al.'s
layer pruning drop consecutive layers: among the runs of p adjacent removable, unprotected blocks inside one
stage (whose stage keeps ``min_per_stage``), the one whose summed score is lowest; ties go to the run that
comes first in the network.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from layerlottery.errors import ConfigError, PruningError
from layerlottery.models.blocks import BlockInfo, NetworkBlocks
from layerlottery.surgery.plan import RemovalPlan

Protect = str | Sequence[str] | None
SELECTION_RULES = ("greedy", "contiguous")
"""How blocks are picked: the p lowest scores one by one (the paper's), or the lowest-scoring run of p adjacent ones."""


def check_selection(selection: str, setting: str = "selection") -> str:
    """``selection`` if it is a rule of :data:`SELECTION_RULES`, else a one-line ConfigError naming ``setting``."""
    if selection not in SELECTION_RULES:
        raise ConfigError(f"{setting} must be {' or '.join(SELECTION_RULES)}, not {selection!r}")
    return selection


def parse_protect(text: str) -> Protect:
    """``"first"``, ``"none"`` or comma-separated block names (as written in settings and flags)."""
    if text in ("first", "none"):
        return None if text == "none" else "first"
    return [name.strip() for name in text.split(",") if name.strip()]


def protected_names(blocks: NetworkBlocks, protect: Protect = "first") -> set[str]:
    """Names of blocks that selection never removes: ``"first"`` of each stage, ``None``, or explicit names."""
    if protect is None or protect == "none":
        return set()
    if protect == "first":
        return {stage_blocks[0].name for stage_blocks in blocks.stages().values()}
    if isinstance(protect, str):
        raise ConfigError(f"protect must be 'first', 'none' or a list of block names, not {protect!r}")
    names = set(protect)
    for name in names:
        blocks[name]  # raises a clear PruningError for an unknown block
    return names


def candidate_blocks(blocks: NetworkBlocks, protect: Protect = "first") -> list[BlockInfo]:
    """Blocks selection may remove: structurally removable and not protected."""
    protected = protected_names(blocks, protect)
    return [block for block in blocks if block.removable and block.name not in protected]


def max_removable(
    blocks: NetworkBlocks, protect: Protect = "first", min_per_stage: int = 2, selection: str = "greedy"
) -> int:
    """The largest p the constraints allow: greedily, each stage independently (candidates vs. room above its
    minimum); contiguously, the longest run of adjacent candidates that one stage can give up."""
    candidates = candidate_blocks(blocks, protect)
    if check_selection(selection) == "contiguous":
        return max(
            (min(len(run), max(0, len(members) - min_per_stage)) for members, run in _candidate_runs(blocks, candidates)),
            default=0,
        )
    return sum(
        min(sum(1 for c in candidates if c.stage == stage), max(0, len(members) - min_per_stage))
        for stage, members in blocks.stages().items()
    )


def _candidate_runs(blocks: NetworkBlocks, candidates: list[BlockInfo]) -> list[tuple[list[BlockInfo], list[BlockInfo]]]:
    """``(stage members, run)`` for every maximal run of adjacent candidates within a stage, in network order."""
    allowed = {block.name for block in candidates}
    runs: list[tuple[list[BlockInfo], list[BlockInfo]]] = []
    for members in blocks.stages().values():
        run: list[BlockInfo] = []
        for block in [*members, None]:  # None closes the stage's last run
            if block is not None and block.name in allowed:
                run.append(block)
            elif run:
                runs.append((members, run))
                run = []
    return runs


def select_blocks(
    blocks: NetworkBlocks,
    scores: Mapping[str, float],
    *,
    p: int | None = None,
    fraction: float | None = None,
    mac_reduction: float | None = None,
    protect: Protect = "first",
    min_per_stage: int = 2,
    model: str | None = None,
    model_options: Mapping[str, Any] | None = None,
    seed: int | None = None,
    selection: str = "greedy",
) -> RemovalPlan:
    """Pick the blocks to remove, lowest score first, and return the removal plan.

    Give exactly one target: ``p`` blocks (the paper's count), a ``fraction`` of the network's residual
    blocks (rounded to the nearest count), or a ``mac_reduction`` (fraction of the dense MACs to remove at
    least: blocks are taken in score order until the removed MACs reach it). ``scores`` maps every candidate block's name to
    a number, lower = less important (a :class:`~layerlottery.criteria.BlockScores` also records the
    criterion in the plan). ``model``/``model_options`` name a registered architecture so the plan replays,
    and ``seed`` (the one theta_0 was drawn from, see ``initial_model``) makes it replay theta_0 exactly.
    ``selection="contiguous"`` takes the lowest-scoring run of adjacent blocks instead (``p`` or ``fraction``
    only; see the module docstring); the plan records the rule.
    """
    targets = {"p": p, "fraction": fraction, "mac_reduction": mac_reduction}
    given = [key for key, value in targets.items() if value is not None]
    if len(given) != 1:
        raise ConfigError(f"give exactly one of p, fraction or mac_reduction (got {', '.join(given) or 'none'})")
    if min_per_stage < 0:
        raise ConfigError(f"min_per_stage must be >= 0, not {min_per_stage}")
    check_selection(selection)
    if selection == "contiguous" and mac_reduction is not None:
        raise ConfigError("contiguous selection removes a number of blocks: give p or fraction, not mac_reduction")
    candidates = candidate_blocks(blocks, protect)
    values = _candidate_scores(candidates, scores)
    limit = max_removable(blocks, protect, min_per_stage, selection)
    describe = _describe_limit(blocks, candidates, protect, min_per_stage, limit, selection)

    if p is not None:
        if isinstance(p, bool) or not isinstance(p, int) or p < 0:
            raise ConfigError(f"p must be a whole number of blocks >= 0, not {p!r}")
        wanted = p
    elif fraction is not None:
        if not 0 <= fraction <= 1:
            raise ConfigError(f"fraction must be between 0 and 1, not {fraction}")
        wanted = round(fraction * len(blocks))
    else:
        assert mac_reduction is not None
        if not 0 <= mac_reduction < 1:
            raise ConfigError(f"mac_reduction must be in [0, 1), not {mac_reduction}")
        wanted = None
    if wanted is not None and wanted > limit:
        raise PruningError(f"cannot remove {wanted} blocks: {describe}")

    if selection == "contiguous":
        assert wanted is not None
        removed = _lowest_run(blocks, candidates, dict(zip((c.name for c in candidates), values)), wanted, min_per_stage)
    else:
        removed = _greedy(blocks, candidates, values, wanted, mac_reduction, min_per_stage)
    removed_macs = sum(block.macs for block in removed)
    if mac_reduction is not None and removed_macs < mac_reduction * blocks.total_macs:
        best = sum(sorted((c.macs for c in candidates), reverse=True)[:limit]) / blocks.total_macs
        raise PruningError(
            f"cannot remove {mac_reduction:.2%} of the MACs: at most {best:.2%} ({describe})"
        )

    network_order = {block.name: position for position, block in enumerate(blocks)}
    removed.sort(key=lambda block: network_order[block.name])
    return RemovalPlan(
        removed=tuple(block.name for block in removed),
        model=model,
        model_options=dict(model_options or {}),
        input_shape=blocks.input_shape,
        criterion=getattr(scores, "criterion", None),
        criterion_options=dict(getattr(scores, "options", {})),
        scores={block.name: values[i] for i, block in enumerate(candidates)},
        selection={
            **targets,
            "protect": protect if protect is None or isinstance(protect, str) else sorted(protect),
            "min_per_stage": min_per_stage,
            "rule": selection,
        },
        dense_macs=blocks.total_macs,
        pruned_macs=blocks.total_macs - removed_macs,
        dense_params=blocks.total_params,
        pruned_params=blocks.total_params - sum(block.params for block in removed),
        seed=seed,
    )


def _greedy(
    blocks: NetworkBlocks,
    candidates: list[BlockInfo],
    values: list[float],
    wanted: int | None,
    mac_reduction: float | None,
    min_per_stage: int,
) -> list[BlockInfo]:
    """The paper's rule: lowest score first, skipping blocks whose stage is at its minimum."""
    stage_sizes = {stage: len(members) for stage, members in blocks.stages().items()}
    order = sorted(range(len(candidates)), key=lambda i: (values[i], i))
    removed: list[BlockInfo] = []
    removed_macs = 0
    for i in order:
        if wanted is not None and len(removed) == wanted:
            break
        if mac_reduction is not None and removed_macs >= mac_reduction * blocks.total_macs:
            break
        block = candidates[i]
        if stage_sizes[block.stage] <= min_per_stage:
            continue
        stage_sizes[block.stage] -= 1
        removed.append(block)
        removed_macs += block.macs
    return removed


def _lowest_run(
    blocks: NetworkBlocks, candidates: list[BlockInfo], scores: Mapping[str, float], p: int, min_per_stage: int
) -> list[BlockInfo]:
    """The ``p`` adjacent candidates of one stage with the lowest summed score, the first such run on ties.

    The caller has checked that some stage allows a run of ``p`` (:func:`max_removable`).
    """
    if p == 0:
        return []
    best: tuple[float, list[BlockInfo]] | None = None
    for members, run in _candidate_runs(blocks, candidates):
        if len(members) - p < min_per_stage:
            continue
        for start in range(len(run) - p + 1):
            window = run[start : start + p]
            total = math.fsum(scores[block.name] for block in window)  # exact sum: ties are real ties
            if best is None or total < best[0]:  # strict: an equal sum later in the network loses
                best = (total, window)
    assert best is not None
    return list(best[1])


def _candidate_scores(candidates: list[BlockInfo], scores: Mapping[str, float]) -> list[float]:
    missing = [block.name for block in candidates if block.name not in scores]
    if missing:
        raise PruningError(f"no score for blocks {missing}; score the same network you select from")
    values = [float(scores[block.name]) for block in candidates]
    bad = [block.name for block, value in zip(candidates, values) if math.isnan(value)]
    if bad:
        raise PruningError(f"scores of {bad} are NaN; check the criterion's settings and data")
    return values


def _describe_limit(
    blocks: NetworkBlocks, candidates: list[BlockInfo], protect: Protect, min_per_stage: int, limit: int,
    selection: str = "greedy",
) -> str:
    protected = "the first block of each stage" if protect == "first" else f"protected: {protect or 'none'}"
    what = "adjacent blocks of one stage" if selection == "contiguous" else f"of {len(blocks)} residual blocks"
    return (
        f"at most {limit} {what} can go ({len(candidates)} candidates, {protected} kept, "
        f"at least {min_per_stage} blocks kept per stage)"
    )
