"""The result of scoring: an immutable block name -> score mapping that remembers how it was made."""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping

from layerlottery.errors import DataError

_JSON_SCALARS = (str, int, float, bool, type(None))


class BlockScores(Mapping[str, float]):
    """One score per removable block (lower = less important), in network order.

    ``criterion`` and ``options`` (every resolved option, defaults included) say how the scores were made,
    so that ``score_blocks(model, s.criterion, data, **s.options)`` reproduces them and a removal plan can
    record them as JSON.
    """

    __slots__ = ("_scores", "_criterion", "_options")

    def __init__(self, criterion: str, options: Mapping[str, Any], scores: Mapping[str, float]) -> None:
        bad = {key: value for key, value in options.items() if not isinstance(value, _JSON_SCALARS)}
        if bad:
            raise TypeError(f"criterion options must be JSON scalars (str/int/float/bool/None), not {bad}")
        object.__setattr__(self, "_criterion", str(criterion))
        object.__setattr__(self, "_options", dict(options))
        object.__setattr__(self, "_scores", {str(name): float(value) for name, value in scores.items()})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("BlockScores is immutable")

    @property
    def criterion(self) -> str:
        return self._criterion

    @property
    def options(self) -> dict[str, Any]:
        """A copy: changing it cannot alter the record of how these scores were made."""
        return dict(self._options)

    def __getitem__(self, name: str) -> float:
        return self._scores[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._scores)

    def __len__(self) -> int:
        return len(self._scores)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, BlockScores):
            return (
                self._criterion == other._criterion
                and self._options == other._options
                and list(self._scores.items()) == list(other._scores.items())
            )
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]

    def ranked(self) -> list[str]:
        """Block names from least to most important; ties keep network order."""
        order = list(self._scores)
        return sorted(order, key=lambda name: self._scores[name])

    def to_dict(self) -> dict[str, Any]:
        """``{"criterion", "options", "scores"}``, ready for ``json.dumps``."""
        return {"criterion": self._criterion, "options": dict(self._options), "scores": dict(self._scores)}

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "BlockScores":
        """Inverse of :meth:`to_dict`; :class:`DataError` if the record is malformed."""
        if not isinstance(record, Mapping) or not {"criterion", "options", "scores"} <= set(record):
            raise DataError("block scores must be a mapping with keys 'criterion', 'options' and 'scores'")
        criterion, options, scores = record["criterion"], record["options"], record["scores"]
        if not isinstance(criterion, str) or not isinstance(options, Mapping) or not isinstance(scores, Mapping):
            raise DataError("block scores: 'criterion' must be a string, 'options' and 'scores' mappings")
        if any(not isinstance(value, _JSON_SCALARS) for value in options.values()):
            raise DataError("block scores: option values must be strings, numbers, booleans or null")
        for name, value in scores.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise DataError(f"block scores: score of {name!r} is {value!r}, not a number")
        return cls(criterion, options, scores)

    def __repr__(self) -> str:
        body = ", ".join(f"{name!r}: {value:.4g}" for name, value in self._scores.items())
        return f"BlockScores({self._criterion!r}, {self._options}, {{{body}}})"
