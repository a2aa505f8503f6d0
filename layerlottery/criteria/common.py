"""Pieces the criteria share: data batches, block weight groups, aggregation, BN mode, loss gradients."""

from __future__ import annotations

import warnings
from typing import Any, Callable, Iterable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from layerlottery.criteria.base import Batch, ClassBalanceWarning, ScoringContext
from layerlottery.errors import DataError, PruningError
from layerlottery.metrics.macs import inference_mode_of, takes_token_ids
from layerlottery.models.blocks import BlockInfo, block_kind_of


# ----------------------------------------------------------------------------------------------- data


def _is_batch(item: Any) -> bool:
    return (
        isinstance(item, (tuple, list))
        and len(item) == 2
        and isinstance(item[0], torch.Tensor)
        and isinstance(item[1], torch.Tensor)
    )


def materialize_batches(data: Any, model: nn.Module) -> list[Batch]:
    """``data`` (one ``(inputs, labels)`` batch or an iterable of them) as a checked list on the model's device.

    Inputs are cast to the model's floating dtype (so a float64 copy scores in float64); labels to int64.
    A text model (:func:`~layerlottery.metrics.macs.takes_token_ids`) takes integer token ids, alone (they
    are then their own labels, as in language modelling; for a next-token model such as
    :class:`~layerlottery.models.hf_causal_lm.CausalLM`, each sequence's last T-1 tokens label its first T-1)
    or with labels per sample or per token.
    """
    token_ids = takes_token_ids(model)
    own_labels = _next_tokens if getattr(model, "predicts_next_token", False) else (lambda ids: (ids, ids))
    if _is_batch(data):
        raw = [data]
    elif token_ids and isinstance(data, torch.Tensor):
        raw = [own_labels(data)]
    elif isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise DataError("data must be a batch (inputs, labels) or an iterable of such batches, e.g. a DataLoader")
    else:
        raw = [own_labels(item) if token_ids and isinstance(item, torch.Tensor) else item for item in data]
    if not raw:
        raise DataError("data holds no batches; pass at least one (inputs, labels) batch")
    device, dtype = model_device_dtype(model)
    batches = []
    for index, batch in enumerate(raw):
        if not _is_batch(batch):
            raise DataError(f"batch {index} is {type(batch).__name__}, not a pair (inputs, labels) of tensors")
        inputs, labels = batch
        flat_per_token = labels.dim() == 1 and len(labels) != len(inputs) and labels.numel() == inputs.numel()
        if token_ids and inputs.dim() == 2 and flat_per_token:  # labels per token, flattened (a text loader's batch)
            labels = labels.view(inputs.shape)
        per_token = token_ids and labels.shape == inputs.shape
        if inputs.dim() < 2 or (labels.dim() != 1 and not per_token) or len(inputs) != len(labels) or len(labels) == 0:
            raise DataError(
                f"batch {index}: inputs {tuple(inputs.shape)} and labels {tuple(labels.shape)} must share a "
                "non-empty batch dimension (labels 1-D); wrap a Dataset in a DataLoader to get batches"
            )
        if token_ids and (inputs.is_floating_point() or inputs.is_complex() or inputs.dtype == torch.bool):
            raise DataError(f"batch {index}: inputs are {inputs.dtype}; a text model takes integer token ids")
        if not token_ids and not inputs.is_floating_point():
            raise DataError(f"batch {index}: inputs are {inputs.dtype}; convert and normalize them to floats first")
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise DataError(f"batch {index}: labels are {labels.dtype}; pass integer class indices")
        inputs = inputs.to(device=device, dtype=torch.long if token_ids else dtype)
        batches.append((inputs, labels.to(device=device, dtype=torch.long)))
    return batches


def _next_tokens(ids: torch.Tensor) -> Batch:
    """Token ids ``(B, T)`` as a next-token batch: inputs the first T-1 tokens, labels the last T-1."""
    if ids.dim() != 2 or ids.shape[1] < 2:
        raise DataError(f"token ids of shape {tuple(ids.shape)}: a next-token model needs (batch, tokens) with 2 or more tokens")
    return ids[:, :-1], ids[:, 1:]


def model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's first parameter (CPU/float32 for a parameterless model)."""
    first = next(model.parameters(), None)
    if first is None or not first.is_floating_point():
        return torch.device("cpu"), torch.float32
    return first.device, first.dtype


def output_width(model: nn.Module, inputs: torch.Tensor) -> int:
    """Number of logits (classes) the model produces, from one sample, without changing the model."""
    with inference_mode_of(model):
        return int(model(inputs[:1]).shape[-1])


# -------------------------------------------------------------------------------- class-balanced samples


def select_per_class(
    batches: Sequence[Batch], samples_per_class: int, num_classes: int
) -> tuple[Batch, dict[int, int]]:
    """The first ``samples_per_class`` samples of each class, in data order, as one batch.

    Returns the batch and ``{class: count}`` for the classes that came up short (empty when balanced).
    One batch, because in BN train mode the composition of each batch changes the scores, and the
    reference scores its class-balanced sample together.
    """
    taken = torch.zeros(num_classes, dtype=torch.long)
    chosen_inputs, chosen_labels = [], []
    for inputs, labels in batches:
        if bool((taken >= samples_per_class).all()):
            break
        keep = torch.zeros(len(labels), dtype=torch.bool)
        for index, label in enumerate(labels.tolist()):
            if 0 <= label < num_classes and taken[label] < samples_per_class:
                taken[label] += 1
                keep[index] = True
        if keep.any():
            keep = keep.to(labels.device)
            chosen_inputs.append(inputs[keep])
            chosen_labels.append(labels[keep])
    if not chosen_labels:
        raise DataError(f"no sample of the data has a label in 0..{num_classes - 1}; check the labels")
    short = {c: int(n) for c, n in enumerate(taken.tolist()) if n < samples_per_class}
    return (torch.cat(chosen_inputs), torch.cat(chosen_labels)), short


def scoring_samples(context: ScoringContext, criterion: str, stacklevel: int = 5) -> list[Batch]:
    """The batches to score: the first ``samples_per_class`` of each class as one batch, or all data as given.

    A class that comes up short is a :class:`ClassBalanceWarning`. ``stacklevel`` 5 points it at the user's
    call when this is called directly from the criterion function (here <- the criterion <-
    ``Criterion.__call__`` <- ``score_blocks`` <- the caller); add one per frame in between.
    """
    batches = context.batches
    assert batches is not None
    per_class = context.options["samples_per_class"]
    if per_class is None or takes_token_ids(context.model):  # text has no classes: the sequences as given
        return list(batches)
    num_classes = output_width(context.model, batches[0][0])
    selected, short = select_per_class(batches, int(per_class), num_classes)  # type: ignore[arg-type]
    if short:
        listed = ", ".join(f"{c} ({n})" for c, n in short.items())
        warnings.warn(
            f"{criterion}: samples_per_class={per_class} but the data has fewer of classes {listed}; scoring "
            f"with the {len(selected[1])} samples found. Pass more data or samples_per_class=None",
            ClassBalanceWarning,
            stacklevel=stacklevel,
        )
    return [selected]


# ------------------------------------------------------------------------------------ weights, blocks


def conv_linear_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Every weight with ``dim >= 2`` (conv and linear kernels, not BN or biases), by qualified name."""
    return {name: p for name, p in model.named_parameters() if p.dim() >= 2}


def block_weight_groups(model: nn.Module, blocks: Sequence[BlockInfo]) -> dict[str, tuple[str, ...]]:
    """Block name -> qualified names of the block's conv/linear weights."""
    modules = dict(model.named_modules())
    names = list(conv_linear_weights(model))
    groups = {}
    for block in blocks:
        module = modules.get(block.name)
        if module is None or block_kind_of(module) is None:
            raise PruningError(
                f"{block.name!r} is not a residual block of {type(model).__name__}; "
                "pass blocks found on this model (find_blocks(model))"
            )
        groups[block.name] = tuple(name for name in names if name.startswith(block.name + "."))
    return groups


def aggregate(scores: Sequence[torch.Tensor], how: str) -> float:
    """One number from per-weight scores: ``sum``, ``mean`` (sum / parameter count) or ``abs_sum``.

    Summed in float64 so that float32 scores of large blocks lose no precision to accumulation order.
    """
    if not scores:
        return 0.0
    if how == "abs_sum":
        total = sum(s.detach().abs().sum(dtype=torch.float64) for s in scores)
    else:
        total = sum(s.detach().sum(dtype=torch.float64) for s in scores)
    if how == "mean":
        total = total / sum(s.numel() for s in scores)
    return float(total)


def block_scores(
    per_weight: Mapping[str, torch.Tensor],
    groups: Mapping[str, Sequence[str]],
    how: str,
    post: Callable[[float], float] | None = None,
) -> dict[str, float]:
    """Aggregate per-weight scores over each block's weights, then apply ``post`` (e.g. a square root)."""
    result = {}
    for block, names in groups.items():
        value = aggregate([per_weight[name] for name in names], how)
        result[block] = post(value) if post is not None else value
    return result


# -------------------------------------------------------------------------------------------- BN mode


def set_bn_mode(model: nn.Module, mode: str) -> None:
    """Eval mode everywhere, then BN layers in train mode if ``mode == "train"``.

    Only BN follows ``mode``: dropout and other stochastic layers stay in eval mode so that scores are a
    deterministic function of (model, data, options).
    """
    model.eval()
    if mode == "train":
        for module in model.modules():
            if isinstance(module, _BatchNorm):
                module.train()


def zero_init_branches(model: nn.Module, blocks: Sequence[BlockInfo]) -> bool:
    """True when every block's residual branch ends in a layer whose weight is all zero (zero_init_residual)."""
    modules = dict(model.named_modules())
    for block in blocks:
        module = modules.get(block.name)
        kind = block_kind_of(module) if module is not None else None
        weight = getattr(kind.branch_end(module), "weight", None) if kind is not None else None
        if not isinstance(weight, torch.Tensor) or bool(weight.detach().any()):
            return False
    return bool(blocks)


# ------------------------------------------------------------------------------------------ gradients


def batch_loss(model: nn.Module, batch: Batch, total: int, temperature: float = 1.0) -> torch.Tensor:
    """This batch's share of the mean cross-entropy over ``total`` samples (logits divided by temperature).

    Summing per-sample losses and dividing by the grand total makes the sum over batches the mean over all
    samples, so several batches give the gradient of one big batch (exactly so in BN eval mode). Labels per
    token ``(B, T)`` go with logits ``(B*T, V)`` (:class:`~layerlottery.models.hf_causal_lm.CausalLM`): every
    token is then a sample, and ``total`` counts tokens (:func:`label_count`).
    """
    inputs, labels = batch
    logits = model(inputs)
    if labels.dim() == 2 and isinstance(logits, torch.Tensor) and logits.dim() == 2 and len(logits) == labels.numel():
        labels = labels.reshape(-1)
    if not isinstance(logits, torch.Tensor):
        raise DataError(
            f"the model returns {type(logits).__name__}, not a logits tensor; gradient criteria need a classifier "
            "(for a Hugging Face text model use block_influence or angular_distance)"
        )
    if logits.dim() != 2 or len(logits) != len(labels):
        raise DataError(
            f"the model returns outputs of shape {tuple(logits.shape)} for labels of shape {tuple(labels.shape)}; "
            "criteria need (batch, classes) logits, one row per label"
        )
    if int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]:
        raise DataError(
            f"labels range over {int(labels.min())}..{int(labels.max())} but the model has {logits.shape[1]} classes"
        )
    return F.cross_entropy(logits / temperature, labels, reduction="sum") / total


def label_count(batches: Sequence[Batch]) -> int:
    """Samples the mean loss averages over: labels, one per sample or one per token."""
    return sum(labels.numel() for _, labels in batches)


def _grads(output: torch.Tensor, params: Sequence[torch.Tensor], create_graph: bool = False) -> list[torch.Tensor]:
    grads = torch.autograd.grad(output, list(params), allow_unused=True, create_graph=create_graph)
    # A weight the loss does not reach (an unused layer) has gradient zero, not None.
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def mean_loss_gradient(
    model: nn.Module, batches: Sequence[Batch], params: Sequence[torch.Tensor], temperature: float = 1.0
) -> list[torch.Tensor]:
    """Gradient of the mean cross-entropy over all samples of ``batches`` w.r.t. ``params`` (detached).

    Batch by batch, so memory stays that of one batch; the result is the sample-size-weighted mean of the
    per-batch gradients. Uses ``torch.autograd.grad``, so no ``.grad`` attribute is touched.
    """
    total = label_count(batches)
    accumulated = [torch.zeros_like(p) for p in params]
    for batch in batches:
        with torch.enable_grad():
            grads = _grads(batch_loss(model, batch, total, temperature), params)
        for acc, grad in zip(accumulated, grads):
            acc.add_(grad.detach())
    return accumulated


def hessian_gradient_products(
    model: nn.Module, batches: Sequence[Batch], params: Sequence[torch.Tensor], temperature: float = 1.0
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """``(g, H g)`` for the mean loss over all samples of ``batches``: the GraSP double backward.

    First pass: g = dL/dθ, detached. Second pass, per batch: d/dθ (g · dL_b/dθ) with ``create_graph``,
    summed; since g is a constant this is H g, and linear in the batches like the loss itself.
    Attention runs as plain matrix products (SDPA's math backend) in both passes: the fused kernels
    (flash attention on the CPU and GPU) have no second derivative.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        return _hessian_gradient_products(model, batches, params, temperature)


def _hessian_gradient_products(
    model: nn.Module, batches: Sequence[Batch], params: Sequence[torch.Tensor], temperature: float
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    gradient = mean_loss_gradient(model, batches, params, temperature)
    total = label_count(batches)
    product = [torch.zeros_like(p) for p in params]
    for batch in batches:
        with torch.enable_grad():
            grads = _grads(batch_loss(model, batch, total, temperature), params, create_graph=True)
            inner = sum((g * f).sum() for g, f in zip(gradient, grads) if f.requires_grad)
            if not isinstance(inner, torch.Tensor):
                continue  # the gradient does not depend on the weights here: H g = 0
            parts = _grads(inner, params)
        for acc, part in zip(product, parts):
            acc.add_(part.detach())
    return gradient, product


def require_grad_for_weights_only(model: nn.Module) -> None:
    """Gradients for conv/linear weights only, on a private copy (BN/bias gradients are never used).

    Also turns gradients *on* for frozen weights: a criterion scores every weight, frozen or not.
    """
    for p in model.parameters():
        p.requires_grad_(p.dim() >= 2)
