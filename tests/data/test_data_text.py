"""Text for language models: splits, windows, batches, determinism and the one-line mistakes."""

from __future__ import annotations

import pytest
import torch

from layerlottery.data.text import TextLoader, load_text, sample_windows, window_count
from layerlottery.errors import ConfigError, DataError

TEXT = "The quick brown fox jumps over the lazy dog. " * 20  # 900 ASCII bytes


def write(path, text=TEXT):
    path.write_text(text, encoding="utf-8")
    return path


def test_bytes_tokenizer_splits_the_tail_of_one_file(tmp_path):
    corpus = load_text(write(tmp_path / "t.txt"), seq_len=16, test_fraction=0.1)
    everything = torch.tensor(list(TEXT.encode()), dtype=torch.long)
    assert corpus.vocab_size == 256
    assert len(corpus.test) == 90 and torch.equal(torch.cat([corpus.train, corpus.test]), everything)
    assert corpus.windows("train") == (810 - 1) // 16 and corpus.windows("test") == (90 - 1) // 16


def test_folder_splits_and_valid_fallback(tmp_path):
    write(tmp_path / "train.txt", "a" * 100)
    write(tmp_path / "valid.txt", "é" * 20)  # 2 bytes each in UTF-8
    corpus = load_text(tmp_path, seq_len=8)
    assert len(corpus.train) == 100 and len(corpus.test) == 40
    assert corpus.test[:2].tolist() == list("é".encode())


def test_windows_predict_every_token_once_in_order():
    tokens = torch.arange(23)  # 23 tokens, T = 5: windows read 0-4, 5-9, 10-14, 15-19; 20..22 are left out
    loader = TextLoader(tokens, 5, batch_size=3, shuffle=False)
    batches = list(loader.epoch(0))
    assert len(loader) == 2 and [tuple(x.shape) for x, _ in batches] == [(3, 5), (1, 5)]
    inputs = torch.cat([x for x, _ in batches])
    labels = torch.cat([y for _, y in batches])
    assert inputs.dtype == labels.dtype == torch.int64 and labels.shape == (20,)
    assert torch.equal(inputs.reshape(-1), torch.arange(20)) and torch.equal(labels, torch.arange(1, 21))
    assert loader.num_samples == 20 == window_count(23, 5) * 5


def test_shuffled_order_is_a_function_of_seed_and_epoch():
    tokens = torch.arange(401)
    def order(seed, epoch):
        return torch.cat([x[:, 0] for x, _ in TextLoader(tokens, 10, 4, shuffle=True, seed=seed).epoch(epoch)]).tolist()
    assert order(0, 1) == order(0, 1)
    assert sorted(order(0, 1)) == list(range(0, 400, 10))
    assert order(0, 1) != order(0, 2) and order(0, 1) != order(1, 1)
    for inputs, labels in TextLoader(tokens, 10, 4, shuffle=True, seed=3).epoch(1):  # labels follow their window
        assert torch.equal(labels, (inputs + 1).reshape(-1))


def test_scoring_windows_are_drawn_by_the_seed():
    tokens = torch.arange(1001)
    first, labels = sample_windows(tokens, 10, 7, seed=0)
    again, _ = sample_windows(tokens, 10, 7, seed=0)
    other, _ = sample_windows(tokens, 10, 7, seed=1)
    assert first.shape == labels.shape == (7, 10) and torch.equal(labels, first + 1)
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert len(set(first[:, 0].tolist())) == 7  # without replacement
    assert sample_windows(tokens, 10, 500, seed=0)[0].shape == (100, 10)  # all of them when fewer


@pytest.mark.parametrize(
    ("setup", "options", "error", "words"),
    [
        (lambda d: d / "missing.txt", {}, DataError, "does not exist"),
        (lambda d: write(d / "short.txt", "tiny"), {"seq_len": 16}, DataError, "fewer than one window"),
        (lambda d: write(d / "t.txt", "x" * 100), {"seq_len": 16, "test_fraction": 0.05}, DataError, "test text"),
        (lambda d: (write(d / "train.txt"), d)[1], {}, DataError, "test.txt"),
        (lambda d: write(d / "t.txt"), {"seq_len": 0}, ConfigError, "seq_len"),
        (lambda d: write(d / "t.txt"), {"test_fraction": 1.5}, ConfigError, "test_fraction"),
        (lambda d: write(d / "t.txt"), {"tokenizer": str("/nonexistent/tokenizer")}, ConfigError, "could not be loaded"),
    ],
)
def test_mistakes_are_one_line(tmp_path, setup, options, error, words):
    with pytest.raises(error, match=words) as caught:
        load_text(setup(tmp_path), **options)
    assert "\n" not in str(caught.value)


def test_not_utf8_is_refused(tmp_path):
    (tmp_path / "t.bin").write_bytes(b"ok \xff\xfe" * 100)
    with pytest.raises(DataError, match="not UTF-8"):
        load_text(tmp_path / "t.bin")
