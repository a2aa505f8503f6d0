"""The data ``layerlottery score`` and ``prune`` score with: a registered image dataset, or a text for a language model.

Text goes through the very code ``layerlottery run`` uses (:class:`~layerlottery.experiments.sources.TextSource`
built from ``DataSettings(name="text", data_dir=..., options=...)``), so ``prune --seed S --samples-per-class K``
on a text removes the same layers as the ticket of seed S that ``run`` trains with
``pruning.samples_per_class=K``.

Every mismatch between the model and the data is refused in one line before any data is read (an image
dataset may be a 170 MB download): text for an image network, images for a language model, a language model
without text, and a criterion that needs images on a language model.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch

from layerlottery.config import DataSettings
from layerlottery.criteria import get_criterion
from layerlottery.data import ImageDataset, get_dataset, list_datasets
from layerlottery.errors import ConfigError, DataError
from layerlottery.data.splits import check_split
from layerlottery.experiments.sources import TEXT, TextSource
from layerlottery.models.registry import split_source

Batch = tuple[torch.Tensor, torch.Tensor]
LANGUAGE_MODEL_SOURCES = ("hf",)
"""Model sources whose networks read token ids (:class:`~layerlottery.models.hf_causal_lm.CausalLM`)."""
DEFAULT_IMAGE_DATA = "cifar10"
"""What an image network scores with when a data criterion is asked for and no data is named (the paper's)."""
TEXT_HINT = "--data text --data-path FILE (a UTF-8 text file, or a folder with train.txt and test.txt)"


def reads_text(model: str) -> bool:
    """Whether the network ``model`` names reads token ids (a language model) rather than images."""
    source = split_source(model)
    return source is not None and source[0] in LANGUAGE_MODEL_SOURCES


@dataclass(frozen=True)
class TextScoringData:
    """A tokenized text seen as scoring data: ``input_shape`` ``(seq_len,)``, ``num_classes`` the vocabulary, and
    :meth:`class_balanced`, which draws calibration windows as ``run`` does (text has no classes)."""

    source: TextSource
    split: str = "train"

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.source.input_shape

    @property
    def num_classes(self) -> int:
        return self.source.num_classes

    def class_balanced(self, per_class: int, seed: int = 0, device: torch.device | str | None = None) -> Batch:
        """``per_class`` windows of the split's text drawn by ``seed`` with their next tokens: for text,
        ``--samples-per-class`` counts sequences, as ``pruning.samples_per_class`` does in ``run``."""
        device = torch.device(device or "cpu")
        if self.split == "train":  # exactly the calibration sample of run's tickets
            return self.source.scoring_batch(per_class, seed, device)
        from layerlottery.data.text import sample_windows

        corpus = self.source.corpus
        return sample_windows(corpus.test, corpus.seq_len, per_class, seed, device)


def load_scoring_data(
    model: str,
    criterion: str,
    data: str | None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    options: Mapping[str, Any] | None = None,
    split: str = "train",
    seed: int = 0,
) -> ImageDataset | TextScoringData | None:
    """The data ``criterion`` scores ``model`` with: ``data`` (a registered dataset or ``text``) loaded from
    ``data_dir`` with ``options``; None when ``data`` is None and the criterion needs none.

    For ``text``, ``data_dir`` is a UTF-8 file (its last ``test_fraction``, default 10%, is the test split) or
    a folder with train.txt and test.txt, and ``options`` are those of ``data.options`` (``seq_len``,
    ``tokenizer``, ``test_fraction``). Raises a one-line :class:`ConfigError` or :class:`DataError` for a
    model and data that do not go together, before reading anything.
    """
    spec = get_criterion(criterion)
    language_model = reads_text(model)
    if language_model and spec.images_only:
        from layerlottery.models.hf_causal_lm import CausalLM

        # The class carries main_input_name, all that check_model reads: run's one-line refusal, before any data.
        spec.check_model(CausalLM)  # type: ignore[arg-type]
    name = data.strip().lower() if data is not None else None
    if name is None and not spec.needs_data:
        return None
    if name not in (None, TEXT, *list_datasets()):
        raise ConfigError(f"unknown dataset {data!r}; choose one of: {', '.join([*list_datasets(), TEXT])}")
    if language_model and name is None:
        raise ConfigError(f"{model} is a language model and {criterion} scores it on text; pass {TEXT_HINT}")
    if language_model and name != TEXT:
        raise ConfigError(f"{model} is a language model and reads text, not {data} images; pass {TEXT_HINT}")
    if name == TEXT and not language_model:
        raise ConfigError(f"--data text is for language models (hf:ID_OR_PATH) and {model} reads images; use an image dataset, e.g. --data synthetic")
    if name != TEXT:
        return get_dataset(name or DEFAULT_IMAGE_DATA, split=split, data_dir=data_dir, seed=seed, **dict(options or {}))
    check_split(split)
    if data_dir is None:
        raise ConfigError(f"--data text needs the text to score on: {TEXT_HINT}")
    path = Path(data_dir).expanduser()
    if not path.exists():
        raise DataError(f"--data-path {path} does not exist; give a UTF-8 text file, or a folder with train.txt and test.txt")
    return TextScoringData(TextSource(DataSettings(name=TEXT, data_dir=str(path), options=dict(options or {}))), split)
