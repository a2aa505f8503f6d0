"""A finished language-model run as a Hugging Face folder: ``from_pretrained`` loads it, no layerlottery needed.

The run's final network is rebuilt as the reports and CKA rebuild it (architecture from its plan, weights
from ``checkpoints/last.pt``), and the Hugging Face model inside is written with ``save_pretrained``: a
ticket's configuration already counts only the layers it kept. When the run's text was tokenized with a
Hugging Face tokenizer, that tokenizer is saved beside it (with ``bytes`` there is none: token id = byte).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from layerlottery.errors import DataError
from layerlottery.experiments.similarity import trained_run_network
from layerlottery.experiments.sources import TextSource, data_source
from layerlottery.models.hf_causal_lm import hf_model_of, save_hf_pretrained


def save_run_hf(
    run: str | os.PathLike[str], folder: str | os.PathLike[str], *, overwrite: bool = False
) -> Path:
    """Write the trained network of the finished run directory ``run`` (an ``hf:`` model trained on
    ``data.name: text``) to ``folder`` as a Hugging Face model folder; returns the folder.

    The text is read again (its vocabulary and sequence length fit the network to the weights), so
    ``data.data_dir`` must still be where the run found it.
    """
    from layerlottery.robustness.evaluate import open_run  # reads a run directory's settings, any layer's runs

    run_dir = open_run(run)
    spec = run_dir.spec
    if not spec.model.name.startswith("hf:"):
        raise DataError(f"{run_dir.path} trained {spec.model.name}; only hf: language models save as Hugging Face folders")
    if not run_dir.is_finished():
        raise DataError(f"{run_dir.path} has not finished; finish its experiment first")
    source = data_source(spec.data)
    network = trained_run_network(run_dir, source, torch.device("cpu"))
    hf_model_of(network)  # refuses anything that is not a Hugging Face model before writing
    tokenizer = source.tokenizer if isinstance(source, TextSource) and source.tokenizer != "bytes" else None
    return save_hf_pretrained(network, folder, tokenizer=tokenizer, overwrite=overwrite)
