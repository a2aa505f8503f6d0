"""Where a run's batches come from: a dataset held in memory (on the training device), an image folder, or
a text file for language models.

Each gives the model's input shape and class count (for text: the sequence length and the vocabulary), the
training and test loaders of a run, and the batch a criterion scores with (class-balanced for images).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Protocol, Sequence

import torch

from layerlottery.config import DataSettings, TrainSettings
from layerlottery.criteria.common import select_per_class
from layerlottery.data import DeviceLoader, FolderLoader, ImageDataset, get_dataset
from layerlottery.errors import ConfigError, DataError
from layerlottery.training.loop import BatchLoader, eval_batch_size

Batch = tuple[torch.Tensor, torch.Tensor]
FOLDER = "folder"
TEXT = "text"


class DataSource(Protocol):
    input_shape: tuple[int, ...]
    """(C, H, W) of an image, or (seq_len,) of a token sequence."""
    num_classes: int

    def loaders(self, train: TrainSettings, seed: int, device: torch.device) -> tuple[BatchLoader, BatchLoader]:
        """The training loader (shuffled, augmented) and the test loader of one run."""

    def scoring_batch(self, samples_per_class: int, seed: int, device: torch.device) -> Batch:
        """``samples_per_class`` training samples of every class, as one batch."""

    def train_class_counts(self) -> list[int] | None:
        """Training samples of each class (None for text, which has no classes), read without decoding any."""

    def test_size(self) -> int | None:
        """Images in the test split (None for text, whose test split is measured in tokens)."""


def data_source(settings: DataSettings) -> DataSource:
    """The source ``settings`` describe: ``folder`` (ImageNet layout under ``data_dir``), ``text`` (a text file
    or folder under ``data_dir``) or a named dataset."""
    if settings.name == TEXT:
        return TextSource(settings)
    return FolderSource(settings) if settings.name == FOLDER else MemorySource(settings)


class MemorySource:
    """A registered dataset, loaded once and held as one uint8 tensor per split."""

    def __init__(self, settings: DataSettings) -> None:
        self.settings = settings
        options = dict(settings.options)
        self.train = get_dataset(settings.name, split="train", data_dir=settings.data_dir, **options)
        self.test = get_dataset(settings.name, split="test", data_dir=settings.data_dir, **options)
        self.input_shape = self.train.input_shape
        self.num_classes = self.train.num_classes

    @property
    def dataset(self) -> ImageDataset:
        return self.train

    def loaders(self, train: TrainSettings, seed: int, device: torch.device) -> tuple[BatchLoader, BatchLoader]:
        channels_last = train.channels_last and device.type == "cuda"
        data = self.settings
        train_loader = DeviceLoader(
            self.train, train.batch_size, shuffle=True, augment=data.augment, padding=data.padding,
            flip=data.flip, seed=seed, device=device, channels_last=channels_last,
        )
        test_loader = DeviceLoader(self.test, eval_batch_size(device), shuffle=False, device=device, channels_last=channels_last)
        return train_loader, test_loader

    def scoring_batch(self, samples_per_class: int, seed: int, device: torch.device) -> Batch:
        return self.train.class_balanced(samples_per_class, seed=seed, device=device)

    def train_class_counts(self) -> list[int]:
        return torch.bincount(self.train.labels, minlength=self.num_classes).tolist()

    def test_size(self) -> int:
        return len(self.test)


class FolderSource:
    """Images in ``data_dir/train/<class>/`` and ``data_dir/val/<class>/``, decoded by DataLoader workers."""

    def __init__(self, settings: DataSettings) -> None:
        if settings.data_dir is None:
            raise ConfigError("data.name=folder needs data.data_dir, the folder holding train/ and val/")
        self.settings = settings
        # The training folder's file list, walked once (ImageNet's is 1.28M files): classes, shape, class sizes.
        self._train_files = self._loader("train", 1, train=False, seed=0, device=torch.device("cpu"), channels_last=False)
        self.num_classes = self._train_files.num_classes
        self.input_shape = self._train_files.input_shape

    def _loader(self, split: str, batch_size: int, **kwargs: object) -> FolderLoader:
        data = self.settings
        return FolderLoader(
            data.data_dir, split, batch_size, image_size=data.image_size, workers=data.workers, **kwargs  # type: ignore[arg-type]
        )

    def loaders(self, train: TrainSettings, seed: int, device: torch.device) -> tuple[BatchLoader, BatchLoader]:
        channels_last = train.channels_last and device.type == "cuda"
        return (
            self._loader("train", train.batch_size, train=True, seed=seed, device=device, channels_last=channels_last),
            self._loader("val", 256, train=False, seed=seed, device=device, channels_last=channels_last),
        )

    def scoring_batch(self, samples_per_class: int, seed: int, device: torch.device) -> Batch:
        # Shuffled training images (with training crops): the first samples_per_class of each class.
        loader = self._loader("train", 256, train=True, seed=seed, device=device, channels_last=False)
        batch, short = select_per_class(loader.epoch(0), samples_per_class, self.num_classes)  # type: ignore[arg-type]
        if short:
            raise DataError(f"image folder classes {sorted(short)} have fewer than {samples_per_class} training images")
        return batch

    def train_class_counts(self) -> list[int]:
        return self._train_files.class_counts()

    def test_size(self) -> int:
        return self._loader("val", 1, train=False, seed=0, device=torch.device("cpu")).num_samples


class TextSource:
    """A UTF-8 text tokenized once (:mod:`layerlottery.data.text`), for causal language models.

    ``input_shape`` is ``(seq_len,)`` and ``num_classes`` the tokenizer's vocabulary. Text has no classes, so
    the scoring batch is ``samples_per_class`` windows of the training text drawn by the seed, with their
    next tokens as per-token labels: for text, ``pruning.samples_per_class`` counts sequences.
    """

    def __init__(self, settings: DataSettings) -> None:
        from layerlottery.data.text import TEXT_OPTIONS, load_text

        unknown = sorted(set(settings.options) - set(TEXT_OPTIONS))
        if unknown:
            raise ConfigError(f"data.options {', '.join(unknown)} do not apply to text; its options are {', '.join(TEXT_OPTIONS)}")
        self.settings = settings
        self.corpus = load_text(settings.data_dir, **dict(settings.options))
        self.input_shape = (self.corpus.seq_len,)
        self.num_classes = self.corpus.vocab_size

    @property
    def tokenizer(self) -> str:
        """``bytes`` or the Hugging Face tokenizer the text was tokenized with."""
        return self.corpus.tokenizer

    def loaders(self, train: TrainSettings, seed: int, device: torch.device) -> tuple[BatchLoader, BatchLoader]:
        from layerlottery.data.text import TextLoader

        corpus = self.corpus
        # Tests in training-sized batches: the logits of one batch (batch x seq_len x vocabulary floats) are
        # what fills memory, and training already showed that size fits.
        return (
            TextLoader(corpus.train, corpus.seq_len, train.batch_size, shuffle=True, seed=seed, device=device),
            TextLoader(corpus.test, corpus.seq_len, train.batch_size, shuffle=False, device=device),
        )

    def scoring_batch(self, samples_per_class: int, seed: int, device: torch.device) -> Batch:
        from layerlottery.data.text import sample_windows

        return sample_windows(self.corpus.train, self.corpus.seq_len, samples_per_class, seed, device)

    def train_class_counts(self) -> None:
        return None  # text has no classes

    def test_size(self) -> None:
        return None  # the test text is measured in tokens; load_text refuses one too short for a window


def text_result_fields(source: DataSource, history: Sequence[Mapping[str, Any]], images_per_second: float | None) -> dict[str, Any]:
    """What a language-model run adds to its result: test perplexity exp(mean next-token loss), at the end and
    at its best epoch, and its training speed in tokens (a text run's samples are tokens); ``{}`` for images."""
    if not isinstance(source, TextSource):
        return {}
    losses = [row["test_loss"] for row in history if row.get("test_loss") is not None]
    return {
        "perplexity": perplexity(losses[-1]) if losses else None,
        "best_perplexity": perplexity(min(losses)) if losses else None,
        "tokens_per_second": images_per_second,
        "tokenizer": source.tokenizer,
        "seq_len": source.input_shape[0],
    }


def perplexity(mean_loss: float) -> float | None:
    """exp(mean next-token cross-entropy); None where it overflows a float (a diverged model)."""
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return None
