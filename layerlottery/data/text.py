"""Text for language models: a UTF-8 file (or a folder of splits) tokenized once, cut into windows, batched.

``data.name: text`` with ``data.data_dir`` either

* a text file: its last ``test_fraction`` of tokens (default 0.1) is the test split, the rest trains;
* a folder holding ``train.txt`` and ``test.txt`` (or ``valid.txt``), as WikiText ships.

Tokenizers: ``bytes`` (the default: the file's UTF-8 bytes, a vocabulary of 256, nothing to download) or
a Hugging Face tokenizer, by Hub id or folder (``tokenizer: gpt2``), loaded with ``AutoTokenizer``.

A split of N tokens gives ``(N - 1) // seq_len`` windows: window k reads tokens ``k*T .. k*T + T - 1`` and
predicts tokens ``k*T + 1 .. k*T + T`` (T = ``seq_len``). Neighbouring windows share one boundary token, so
every token after the first is predicted exactly once and none twice; the few tokens after the last full
window are left out. A batch is ``(input_ids (B, T) int64, next tokens (B*T,) int64)``, the labels flattened
as :class:`~layerlottery.models.hf_causal_lm.CausalLM` flattens its logits, so a "sample" of the training
loop's totals (loss, accuracy, samples per second) is one predicted token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import torch

from layerlottery.data.loader import batches_per_epoch, check_int, epoch_seed
from layerlottery.devices import resolve_device
from layerlottery.errors import ConfigError, DataError

BYTES = "bytes"
TEST_FILES = ("test.txt", "valid.txt")
TEXT_OPTIONS = ("seq_len", "tokenizer", "test_fraction")


@dataclass(frozen=True)
class TextCorpus:
    """A tokenized text: the token ids of each split (1-D int64) and what made them."""

    train: torch.Tensor
    test: torch.Tensor
    vocab_size: int
    """Number of distinct token ids the tokenizer can give (256 for bytes)."""
    seq_len: int
    tokenizer: str

    def windows(self, split: str) -> int:
        """Windows of ``seq_len`` predicted tokens in ``split`` (``train`` or ``test``)."""
        return window_count(len(self.train if split == "train" else self.test), self.seq_len)


def window_count(tokens: int, seq_len: int) -> int:
    """Windows of ``seq_len`` predictions that ``tokens`` tokens give (each reads T and predicts the next T)."""
    return max(tokens - 1, 0) // seq_len


def load_text(
    data_dir: str | os.PathLike[str] | None,
    *,
    seq_len: int = 128,
    tokenizer: str = BYTES,
    test_fraction: float = 0.1,
) -> TextCorpus:
    """Read and tokenize the text at ``data_dir`` (a file, or a folder with train.txt and test.txt/valid.txt).

    Raises :class:`DataError` for a missing or unreadable file and a split too short for one window,
    :class:`ConfigError` for a bad option or a tokenizer that cannot be loaded.
    """
    seq_len = _check_seq_len(seq_len)
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ConfigError(f"data.options.test_fraction must be a number in (0, 1), not {test_fraction!r}")
    if not data_dir:
        raise ConfigError("data.name=text needs data.data_dir: a UTF-8 text file, or a folder with train.txt and test.txt")
    path = Path(data_dir).expanduser()
    encode, vocab_size = text_tokenizer(tokenizer)
    if path.is_dir():
        train = encode(_read(_split_file(path, ("train.txt",))))
        test = encode(_read(_split_file(path, TEST_FILES)))
        where = {"train": path / "train.txt", "test": _split_file(path, TEST_FILES)}
    elif path.is_file():
        tokens = encode(_read(path))
        cut = len(tokens) - int(round(len(tokens) * float(test_fraction)))
        train, test = tokens[:cut], tokens[cut:]
        where = {"train": f"{path} (first {1 - test_fraction:.0%})", "test": f"{path} (last {test_fraction:.0%})"}
    else:
        raise DataError(f"data.data_dir {path} does not exist; point it at a UTF-8 text file or a folder with train.txt and test.txt")
    for split, tokens in (("train", train), ("test", test)):
        if window_count(len(tokens), seq_len) == 0:
            raise DataError(
                f"the {split} text {where[split]} holds {len(tokens)} tokens, fewer than one window of "
                f"seq_len + 1 = {seq_len + 1}; give more text or lower data.options.seq_len"
            )
    return TextCorpus(train, test, vocab_size, seq_len, tokenizer)


def _check_seq_len(seq_len: Any) -> int:
    if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
        raise ConfigError(f"data.options.seq_len must be a positive integer, not {seq_len!r}")
    return seq_len


def _split_file(folder: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise DataError(f"data.data_dir {folder} holds no {' or '.join(names)}; a text folder needs train.txt and test.txt (or valid.txt)")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not UTF-8 text (byte {exc.start} cannot be decoded); convert it to UTF-8") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None


def text_tokenizer(name: str) -> tuple[Any, int]:
    """``(encode, vocabulary size)`` of ``bytes`` or of a Hugging Face tokenizer (Hub id or folder);
    ``encode(text)`` gives a 1-D int64 tensor of token ids."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"data.options.tokenizer must be 'bytes' or a Hugging Face tokenizer id or folder, not {name!r}")
    if name == BYTES:
        return _utf8_bytes, 256
    from layerlottery.models.hf_causal_lm import require_transformers

    transformers = require_transformers()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConfigError(f"data.options.tokenizer {name!r} could not be loaded ({first}); use 'bytes' or a tokenizer id or folder") from None
    tokenizer.model_max_length = 1 << 62  # the whole file is one text: no length warning, no truncation

    def encode(text: str) -> torch.Tensor:
        return torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)

    return encode, len(tokenizer)


def _utf8_bytes(text: str) -> torch.Tensor:
    data = bytearray(text.encode("utf-8"))
    # frombuffer refuses an empty buffer; an empty text gives no tokens, refused by load_text as too short.
    return torch.frombuffer(data, dtype=torch.uint8).long() if data else torch.zeros(0, dtype=torch.long)


class TextLoader:
    """Windows of a token sequence in batches, held on ``device``; the training loop's ``BatchLoader``.

    ``epoch(e)`` yields ``(input_ids (B, T), next tokens (B*T,))``, both int64 on ``device``: with
    ``shuffle`` the windows in an order that is a pure function of ``(seed, e)``, else in text order.
    ``num_samples`` counts predicted tokens (windows x T), as the loop's totals do.
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        seq_len: int,
        batch_size: int,
        *,
        shuffle: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> None:
        self.seq_len = _check_seq_len(seq_len)
        self.batch_size = check_int("batch_size", batch_size, minimum=1)
        self.seed = check_int("seed", seed)
        self.shuffle = bool(shuffle)
        self.device = resolve_device(device)
        self.windows = window_count(len(tokens), self.seq_len)
        if self.windows == 0:
            raise DataError(f"{len(tokens)} tokens make no window of seq_len + 1 = {self.seq_len + 1} tokens")
        end = self.windows * self.seq_len
        tokens = tokens.to(device=self.device, dtype=torch.long)
        self._inputs = tokens[:end].view(self.windows, self.seq_len)
        self._labels = tokens[1 : end + 1].view(self.windows, self.seq_len)

    @property
    def num_samples(self) -> int:
        """Predicted tokens per epoch."""
        return self.windows * self.seq_len

    def __len__(self) -> int:
        return batches_per_epoch(self.windows, self.batch_size, drop_last=False)

    def epoch(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of ``epoch`` (>= 0); the same ``(seed, epoch)`` gives the same batches."""
        epoch = check_int("epoch", epoch, minimum=0)
        return self._batches(epoch)

    def _batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:  # drawn on the CPU: the same order on every device
            order = torch.randperm(self.windows, generator=torch.Generator().manual_seed(epoch_seed(self.seed, epoch, "order")))
            order = order.to(self.device)
        else:
            order = torch.arange(self.windows, device=self.device)
        for start in range(0, self.windows, self.batch_size):
            chosen = order[start : start + self.batch_size]
            yield self._inputs[chosen], self._labels[chosen].reshape(-1)


def sample_windows(tokens: torch.Tensor, seq_len: int, count: int, seed: int, device: str | torch.device = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` windows of ``tokens`` drawn without replacement by ``seed`` (all of them if fewer), as
    ``(input_ids (count, T), next tokens (count, T))``: the calibration sample criteria score with."""
    loader = TextLoader(tokens, seq_len, batch_size=1, shuffle=False, device=device)
    generator = torch.Generator().manual_seed(epoch_seed(seed, 0, "scoring"))
    chosen = torch.randperm(loader.windows, generator=generator)[: min(count, loader.windows)].to(loader.device)
    return loader._inputs[chosen], loader._labels[chosen]
