"""Linear CKA (Kornblith et al. 2019): how similar two networks' representations of the same inputs are.

For feature matrices X (n x d1) and Y (n x d2) of the same n samples, with columns centered,

    CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F),

which equals the n x n kernel form HSIC(XX^T, YY^T) / sqrt(HSIC(XX^T, XX^T) HSIC(YY^T, YY^T)). It is 1 for
the same representation, invariant to orthogonal transforms and isotropic scaling of either side, and near 0
(about sqrt(d1 d2) / n) for independent features.

The feature-space form needs only d x d matrices, so :class:`LinearCKAAccumulator` streams over a test set
in bounded memory: it sums X^T X, Y^T Y, Y^T X and the column sums in float64, batch by batch, and centers at
the end with  Xc^T Yc = X^T Y - (1/n) (X^T 1)(1^T Y).  To keep that subtraction from cancelling when the
features' means are large against their spread, every sample is first shifted by a fixed reference (the first
batch's mean); centering removes any shift, so the result is unchanged.
"""

from __future__ import annotations

from typing import Any, Iterable

import torch
from torch import nn

from layerlottery.errors import ConfigError, DataError
from layerlottery.metrics.macs import inference_mode_of


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two feature matrices of the same samples (n x d1 and n x d2), in float64.

    Raises :class:`DataError` for fewer than 2 samples, different sample counts, or a side whose features
    are constant over the samples (CKA is then undefined).
    """
    x, y = _as_features(x, "x"), _as_features(y, "y")
    if len(x) != len(y):
        raise DataError(f"x has {len(x)} samples and y {len(y)}; CKA compares features of the same samples")
    if len(x) < 2:
        raise DataError("CKA needs at least 2 samples")
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    return _cka_from_products(x.T @ x, y.T @ y, y.T @ x)


class LinearCKAAccumulator:
    """Linear CKA over a stream of paired feature batches, in memory independent of the sample count.

    ``update(x_batch, y_batch)`` for each batch (rows are samples; the same samples on both sides), then
    ``value()``. Equal to :func:`linear_cka` of the concatenated batches up to float64 rounding.
    """

    def __init__(self) -> None:
        self.samples = 0
        self._shift_x: torch.Tensor | None = None
        self._shift_y: torch.Tensor | None = None
        self._xx = self._yy = self._yx = self._sum_x = self._sum_y = None

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Add one batch of paired features (b x d1, b x d2)."""
        x, y = _as_features(x, "x"), _as_features(y, "y")
        if len(x) != len(y):
            raise DataError(f"a batch has {len(x)} samples on one side and {len(y)} on the other")
        if self._shift_x is None:
            self._shift_x, self._shift_y = x.mean(dim=0), y.mean(dim=0)
            d1, d2 = x.shape[1], y.shape[1]
            zeros = lambda *shape: torch.zeros(shape, dtype=torch.float64, device=x.device)  # noqa: E731
            self._xx, self._yy, self._yx = zeros(d1, d1), zeros(d2, d2), zeros(d2, d1)
            self._sum_x, self._sum_y = zeros(d1), zeros(d2)
        elif x.shape[1] != self._xx.shape[0] or y.shape[1] != self._yy.shape[0]:
            raise DataError(
                f"feature widths changed from ({self._xx.shape[0]}, {self._yy.shape[0]}) to ({x.shape[1]}, {y.shape[1]})"
            )
        x = x.to(self._xx.device) - self._shift_x
        y = y.to(self._xx.device) - self._shift_y
        self._xx += x.T @ x
        self._yy += y.T @ y
        self._yx += y.T @ x
        self._sum_x += x.sum(dim=0)
        self._sum_y += y.sum(dim=0)
        self.samples += len(x)

    def value(self) -> float:
        """CKA of everything added so far."""
        if self.samples < 2:
            raise DataError("CKA needs at least 2 samples")
        n = self.samples
        sx, sy = self._sum_x, self._sum_y
        return _cka_from_products(
            self._xx - torch.outer(sx, sx) / n, self._yy - torch.outer(sy, sy) / n, self._yx - torch.outer(sy, sx) / n
        )


def penultimate_cka(
    model_a: nn.Module,
    model_b: nn.Module,
    batches: Iterable[Any],
    device: torch.device | str | None = None,
    *,
    head_a: str | None = None,
    head_b: str | None = None,
) -> float:
    """Linear CKA between two models' penultimate features (the inputs of their final linear layer).

    ``batches`` yields ``(inputs, labels)`` pairs (a DataLoader, a ``DeviceLoader``, a list) or input
    tensors; both models see the same inputs, in eval mode without gradients, and only their d x d
    products are kept, so a whole test set fits in memory. ``device`` moves the inputs (default: each
    model's own device). ``head_a``/``head_b`` name the final linear layer (default: the last
    ``nn.Linear`` of each model, e.g. ``fc``); a head that reads ``(batch, tokens, width)`` (a language
    model's) gives one feature row per token. Both models' training flags are restored afterwards.
    """
    heads = [_head(model, name, label) for model, name, label in ((model_a, head_a, "model_a"), (model_b, head_b, "model_b"))]
    captured: list[torch.Tensor | None] = [None, None]

    def capture(slot: int):
        def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            features = inputs[0].detach()
            # A head applied per token (a language model's, on (batch, tokens, width)): each token is a sample.
            captured[slot] = features.reshape(-1, features.shape[-1]) if features.dim() > 2 else features.flatten(1)

        return hook

    accumulator = LinearCKAAccumulator()
    handles = [head.register_forward_pre_hook(capture(slot)) for slot, head in enumerate(heads)]
    try:
        with inference_mode_of(model_a), inference_mode_of(model_b):
            for batch in batches:
                inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
                if not isinstance(inputs, torch.Tensor):
                    raise DataError(f"a batch is {type(batch).__name__}; pass (inputs, labels) pairs or input tensors")
                for slot, model in enumerate((model_a, model_b)):
                    model(_to_model(inputs, model, device))
                a, b = captured
                assert a is not None and b is not None  # the hooks ran: each model called its head
                accumulator.update(a, b)
    finally:
        for handle in handles:
            handle.remove()
    return accumulator.value()


# ----------------------------------------------------------------------------------------------- helpers


def _as_features(features: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        shape = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise DataError(f"{name} must be a 2-D tensor (samples x features), not {shape}")
    return features.detach().to(torch.float64)


def _cka_from_products(xx: torch.Tensor, yy: torch.Tensor, yx: torch.Tensor) -> float:
    """CKA from centered products Xc^T Xc, Yc^T Yc, Yc^T Xc."""
    norm_x, norm_y = torch.linalg.matrix_norm(xx), torch.linalg.matrix_norm(yy)
    for norm, side in ((norm_x, "x"), (norm_y, "y")):
        if not float(norm) > 0:
            raise DataError(f"the {side} features are constant over the samples; CKA is undefined for them")
    return float(yx.square().sum() / (norm_x * norm_y))


def _head(model: nn.Module, name: str | None, label: str) -> nn.Module:
    if name is not None:
        try:
            return model.get_submodule(name)
        except AttributeError:
            raise ConfigError(f"{label} has no module {name!r}; name its final linear layer") from None
    linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
    if not linears:
        raise ConfigError(f"{label} ({type(model).__name__}) has no nn.Linear head; pass head_a/head_b")
    return linears[-1]


def _to_model(inputs: torch.Tensor, model: nn.Module, device: torch.device | str | None) -> torch.Tensor:
    first = next(model.parameters(), None)
    target = device if device is not None else (first.device if first is not None else inputs.device)
    dtype = first.dtype if first is not None and first.is_floating_point() else inputs.dtype
    return inputs.to(device=target, dtype=dtype if inputs.is_floating_point() else inputs.dtype)
