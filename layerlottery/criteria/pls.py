"""``pls``: partial least squares from blocks' pooled outputs to the labels, blocks ranked by VIP.

Each block's output is globally average-pooled to one value per filter and sample. Partial least squares
(scikit-learn's :class:`~sklearn.cross_decomposition.PLSRegression`, features and labels standardized)
maps those features to one-hot labels through ``components`` latent directions, and the *variable
importance in projection* of feature j,

    VIP_j = sqrt(p * sum_a SS_a (w_ja / ||w_a||)^2 / sum_a SS_a),   SS_a = ||t_a||^2 ||q_a||^2,

(w: X weights, t: X scores, q: Y loadings, p: number of features) says how much j contributes to the
label-predicting directions. A block's score is the mean VIP of its features.

``fit="joint"`` (default) fits one PLS on the pooled features of all blocks side by side, as in Jordao et
al.'s discriminative layer pruning, so the blocks compete for the same label information. ``fit="per_block"``
fits one PLS per block; note that then sum_j VIP_j^2 = p for every block (an identity of VIP), so the mean
VIP only measures how evenly a block's filters share its importance, not how much the block has.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from layerlottery.criteria.activations import (
    activation_option,
    sample_options,
    stream_block_activations,
)
from layerlottery.criteria.common import scoring_samples
from layerlottery.criteria.base import Option, ScoringContext, integer, one_of, register_criterion
from layerlottery.errors import ConfigError, DataError


def vip_scores(x_weights: np.ndarray, x_scores: np.ndarray, y_loadings: np.ndarray) -> np.ndarray:
    """VIP of every feature from a fitted PLS: ``x_weights_`` (p, A), ``x_scores_`` (n, A), ``y_loadings_`` (m, A).

    Components that explain nothing (zero weights, e.g. after the X residual ran out) are left out.
    """
    explained = (x_scores**2).sum(axis=0) * (y_loadings**2).sum(axis=0)  # SS_a, shape (A,)
    norms = np.linalg.norm(x_weights, axis=0)
    used = (norms > 0) & (explained > 0)
    if not used.any():
        return np.zeros(x_weights.shape[0])
    normalized = x_weights[:, used] / norms[used]
    share = normalized**2 @ explained[used] / explained[used].sum()
    return np.sqrt(x_weights.shape[0] * share)


def pls_vip(features: np.ndarray, labels: np.ndarray, components: int) -> np.ndarray:
    """Fit ``PLSRegression(components)`` from ``features`` (n, p) to one-hot ``labels`` (n,); VIP per feature.

    Raises :class:`DataError` with fewer samples than ``components`` + 1 or fewer than two classes.
    """
    from sklearn.cross_decomposition import PLSRegression  # about a second to import: only when used

    samples, width = features.shape
    if samples <= components:
        raise DataError(
            f"pls: components={components} needs more samples than components, but {samples} samples were "
            "scored; pass more data (samples_per_class) or lower the option components"
        )
    classes, targets = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise DataError(f"pls needs samples of at least two classes, but all {samples} samples are of class {classes[0]}")
    if components > width:
        raise ConfigError(f"pls: components={components} exceeds the {width} pooled features; lower the option components")
    if not (features.std(axis=0) > 0).any():
        return np.zeros(width)  # nothing varies: no feature can carry label information
    onehot = np.eye(len(classes))[targets]
    with warnings.catch_warnings():
        # A residual running out before the last component is handled in vip_scores.
        warnings.filterwarnings("ignore", message=".*residual is constant.*")
        # scikit-learn stops NIPALS when the squared change of the weights is below tol (default 1e-6, i.e.
        # weights good to ~1e-3 only); a tight tol costs a few more cheap iterations.
        model = PLSRegression(n_components=components, scale=True, tol=1e-14, max_iter=5000).fit(features, onehot)
    return vip_scores(model.x_weights_, model.x_scores_, model.y_loadings_)


def _pooled(out: torch.Tensor) -> np.ndarray:
    """Global average pooling over every dimension after the channels, as float64 (n, channels)."""
    return out.flatten(2).mean(dim=2, dtype=torch.float64).cpu().numpy() if out.dim() > 2 else out.double().cpu().numpy()


@register_criterion(
    "pls",
    options={
        "components": Option(2, integer(minimum=1), "latent PLS components"),
        "fit": Option("joint", one_of("joint", "per_block"), "joint: one PLS on all blocks' features; per_block: one each"),
        "activation": activation_option(),
        **sample_options(),
    },
    needs_data=True,
    images_only="relates each sample's pooled features to its class",
)
def pls(context: ScoringContext) -> dict[str, float]:
    """PLS + VIP: mean variable importance in projection of the block's pooled output filters."""
    features: dict[str, list[np.ndarray]] = {block.name: [] for block in context.blocks}
    labels: list[np.ndarray] = []
    first = context.blocks[0].name

    def reduce(name: str, out: torch.Tensor, batch_labels: torch.Tensor) -> None:
        features[name].append(_pooled(out))
        if name == first:  # once per batch
            labels.append(batch_labels.cpu().numpy())

    stream_block_activations(context, scoring_samples(context, "pls"), reduce)
    y = np.concatenate(labels)
    stacked = {name: np.concatenate(parts) for name, parts in features.items()}
    components = int(context.options["components"])  # type: ignore[arg-type]
    if context.options["fit"] == "per_block":
        return {name: float(pls_vip(x, y, components).mean()) for name, x in stacked.items()}
    vip = pls_vip(np.concatenate(list(stacked.values()), axis=1), y, components)
    scores, start = {}, 0
    for name, x in stacked.items():
        scores[name] = float(vip[start : start + x.shape[1]].mean())
        start += x.shape[1]
    return scores
