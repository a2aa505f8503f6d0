"""White-box adversarial attacks: FGSM and PGD under the L-inf and L2 norms.

Attacks work on images in pixel scale [0, 1]; the dataset normalization belongs to the attacked function,
so wrap the network as ``Normalized(model, mean, std)``. The epsilon ball is then measured in pixels (8/255 means
8 grey levels), as in the literature, whatever the training normalization was.

The arithmetic follows torchattacks (``FGSM``, ``PGD``, ``PGDL2``) and is tested against it, with three
deliberate differences:

- the loss is summed over the batch, not averaged, so each image's gradient does not depend on the batch it
  sits in (the step directions, sign or unit L2 vector, are the same);
- the returned images lie inside the ball *exactly*: ``(adv.double() - x.double())`` has L-inf or L2 norm
  ``<= eps`` (torchattacks can overshoot by a float32 rounding);
- random starts come only from the ``generator`` passed in (never torch's global RNG), and restarts keep, per
  image, the first perturbation that fools the model, else the one with the highest loss.

The model is attacked in eval mode; every module's training flag, every ``requires_grad`` flag, every parameter
and buffer are left as they were, and no parameter gradient is accumulated (gradients are taken with
``torch.autograd.grad`` with respect to the input only).
"""

from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from layerlottery.criteria.common import model_device_dtype
from layerlottery.errors import ConfigError, DataError

ATTACK_NAMES = ("fgsm", "pgd")
NORMS = ("linf", "l2")
PGD_DEFAULT_STEPS = 10
STEP_SIZE_FACTOR = 2.5
"""Default PGD step size ``alpha = 2.5 * eps / steps`` (Madry et al., 2018, and their ``robustness`` library):
enough to cross the ball from one side to the other even from a random start. For eps = 8/255 and 10 steps it
is 2/255, torchattacks' default for that setting."""
ATTACK_SPELLING = (
    "NAME:NORM:eps=E[:alpha=A][:steps=N][:restarts=R][:random_start=true|false] with NAME fgsm|pgd, "
    "NORM linf|l2 and numbers such as 0.03, 1e-3 or 8/255, e.g. pgd:linf:eps=8/255:steps=10"
)


class Normalized(nn.Module):
    """``model((x - mean) / std)``: a network trained on normalized inputs, seen as a function of [0, 1] pixels.

    ``mean`` and ``std`` are the training set's per-channel statistics in [0, 1] pixel units (an
    ``ImageDataset``'s ``mean`` and ``std``). They are non-persistent buffers on the model's device, so the
    wrapper follows ``.to(device)`` and adds nothing to a state dict.
    """

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or len(mean) == 0:
            raise ConfigError(f"Normalized needs one mean and one std per channel, got {len(mean)} and {len(std)}")
        if any(not float(s) > 0 for s in std):
            raise ConfigError(f"Normalized needs positive standard deviations, got {tuple(std)}")
        self.model = model
        device, _ = model_device_dtype(model)
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor([float(m) for m in mean], device=device).view(shape), False)
        self.register_buffer("std", torch.tensor([float(s) for s in std], device=device).view(shape), False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The same two operations, in the same order, as ImageDataset.normalized: clean predictions through
        # the wrapper are bitwise those of the training pipeline.
        return self.model((x - self.mean) / self.std)


@dataclass(frozen=True)
class Attack:
    """One attack's settings. Options left at ``None`` are resolved on construction, so every field is concrete.

    - ``fgsm``: one step of size ``eps`` from the clean image (``steps=1``, ``alpha=eps``, no random start).
    - ``pgd``: ``steps`` (default 10) steps of size ``alpha`` (default ``2.5 * eps / steps``, see
      :data:`STEP_SIZE_FACTOR`), projected on the ball after each, from a random point of the ball when
      ``random_start`` (default on); ``restarts`` > 1 repeats it from new random points for the images not
      fooled yet.

    The L-inf step moves every pixel by ``alpha`` along the gradient's sign; the L2 step moves by ``alpha``
    along the unit gradient. An invalid combination raises :class:`ConfigError` at construction.
    """

    name: str
    norm: str = "linf"
    eps: float = 8 / 255
    alpha: float | None = None
    steps: int | None = None
    restarts: int = 1
    random_start: bool | None = None

    def __post_init__(self) -> None:
        self.validate()
        if self.name == "fgsm":
            resolved = {"steps": 1, "alpha": float(self.eps), "random_start": False}
        else:
            steps = PGD_DEFAULT_STEPS if self.steps is None else self.steps
            alpha = STEP_SIZE_FACTOR * float(self.eps) / steps if self.alpha is None else float(self.alpha)
            random_start = True if self.random_start is None else self.random_start
            resolved = {"steps": steps, "alpha": alpha, "random_start": random_start}
        object.__setattr__(self, "eps", float(self.eps))
        for field_name, value in resolved.items():
            object.__setattr__(self, field_name, value)

    def validate(self) -> None:
        """Raise :class:`ConfigError` (one line) for an unknown name or norm or an impossible value."""
        if self.name not in ATTACK_NAMES:
            raise ConfigError(f"unknown attack {self.name!r}; choose one of: {', '.join(ATTACK_NAMES)}")
        if self.norm not in NORMS:
            raise ConfigError(f"unknown attack norm {self.norm!r}; choose one of: {', '.join(NORMS)}")
        if not _is_number(self.eps) or not math.isfinite(self.eps) or self.eps < 0:
            raise ConfigError(f"attack eps must be a finite number >= 0, not {self.eps!r}")
        # (alpha = 0 only arises, resolved from eps, for an eps = 0 attack: the clean images.)
        alpha = self.alpha
        if alpha is not None and (
            not _is_number(alpha) or not math.isfinite(alpha) or alpha < 0 or (alpha == 0 < self.eps)
        ):
            raise ConfigError(f"attack step size alpha must be a finite number > 0, not {self.alpha!r}")
        for field_name in ("steps", "restarts"):
            value = getattr(self, field_name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ConfigError(f"attack {field_name} must be an integer >= 1, not {value!r}")
        if self.random_start is not None and not isinstance(self.random_start, bool):
            raise ConfigError(f"attack random_start must be true or false, not {self.random_start!r}")
        if self.name == "fgsm":
            # FGSM is one step of size eps from the clean image: any other value would silently be ignored.
            if self.steps not in (None, 1) or self.restarts != 1 or self.random_start:
                raise ConfigError("FGSM is one step from the clean image: use pgd for steps, restarts or random_start")
            if self.alpha is not None and self.alpha != self.eps:
                raise ConfigError("FGSM steps by eps: drop alpha, or use pgd for another step size")
        elif self.restarts > 1 and self.random_start is False:
            raise ConfigError("PGD restarts without random_start repeat the same attack: turn random_start on")

    @property
    def key(self) -> str:
        """A stable name for stored results, e.g. ``pgd-linf-eps0.0313725-a0.00784314-s10-r1``.

        Six significant digits keep distinct settings apart; ``-norand`` marks PGD without a random start.
        """
        if self.name == "fgsm":
            return f"fgsm-{self.norm}-eps{self.eps:.6g}"
        suffix = "" if self.random_start else "-norand"
        return f"pgd-{self.norm}-eps{self.eps:.6g}-a{self.alpha:.6g}-s{self.steps}-r{self.restarts}{suffix}"

    @property
    def spec(self) -> str:
        """The command-line spelling of exactly this attack: ``parse_attack(attack.spec) == attack``."""
        if self.name == "fgsm":
            return f"fgsm:{self.norm}:eps={self.eps!r}"
        return (
            f"pgd:{self.norm}:eps={self.eps!r}:alpha={self.alpha!r}:steps={self.steps}:restarts={self.restarts}"
            f":random_start={str(self.random_start).lower()}"
        )


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_OPTION_PARSERS = {
    "eps": "number", "alpha": "number", "steps": "integer", "restarts": "integer", "random_start": "bool"
}
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def parse_attack(text: str) -> Attack:
    """Parse the command-line spelling ``NAME:NORM:eps=E[:alpha=A][:steps=N][:restarts=R][:random_start=B]``.

    Examples: ``fgsm:linf:eps=0.1``, ``pgd:linf:eps=8/255:steps=10``, ``pgd:l2:eps=0.5:alpha=0.1:restarts=5``.
    Numbers may be decimals, exponents or fractions (``8/255``). Anything else raises a one-line ConfigError.
    """

    def bad(what: str) -> ConfigError:
        return ConfigError(f"bad attack {text!r}: {what}; write {ATTACK_SPELLING}")

    parts = [part.strip() for part in str(text).strip().split(":")]
    if len(parts) < 3:
        raise bad("expected a name, a norm and at least eps")
    name, norm = parts[0].lower(), parts[1].lower()
    if name not in ATTACK_NAMES:
        raise bad(f"unknown attack {parts[0]!r}")
    if norm not in NORMS:
        raise bad(f"unknown norm {parts[1]!r}")
    options: dict[str, object] = {}
    for part in parts[2:]:
        key, sep, raw = (piece.strip() for piece in part.partition("="))
        key = key.lower()
        if not sep or key not in _OPTION_PARSERS:
            raise bad(f"unknown option {part!r}")
        if key in options:
            raise bad(f"{key} given twice")
        kind = _OPTION_PARSERS[key]
        options[key] = _parse_value(raw, kind, bad(f"{key}={raw!r} is not a valid {kind}"))
    if "eps" not in options:
        raise bad("eps is missing")
    try:
        return Attack(name=name, norm=norm, **options)  # type: ignore[arg-type]
    except ConfigError as exc:
        raise ConfigError(f"bad attack {text!r}: {exc}") from None


def _parse_value(raw: str, kind: str, error: ConfigError) -> object:
    try:
        if kind == "bool":
            if raw.lower() in _TRUE + _FALSE:
                return raw.lower() in _TRUE
            raise error
        if kind == "integer":
            if not re.fullmatch(r"[+-]?\d+", raw):
                raise error
            return int(raw)
        if "/" in raw:
            numerator, denominator = raw.split("/")
            return float(Fraction(numerator.strip()) / Fraction(denominator.strip()))
        return float(raw)
    except (ValueError, ZeroDivisionError):
        raise error from None


def perturb(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Adversarial versions of ``images`` (float, in [0, 1]) against ``model`` (which takes [0, 1] images).

    Returns a new tensor in [0, 1] within ``attack.eps`` of ``images`` in ``attack.norm``. Images and labels
    must be on the model's device. Random starts are drawn from ``generator`` (on its own device; default: a
    new generator seeded 0, so results are reproducible and torch's global RNG is never touched).
    """
    adversarial, _ = _attack_batch(model, images, labels, attack, _generator_or_default(generator), want_logits=False)
    return adversarial


def adversarial_accuracy(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    *,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> tuple[int, int]:
    """``(correct, total)``: how many of ``images`` the model still classifies correctly once attacked.

    Images (float, [0, 1]) and labels may live on any device; each batch of ``batch_size`` is moved to the
    model's device, attacked with :func:`perturb`'s rules, and classified in eval mode. One ``generator``
    serves all batches. Because the loss is summed per image, the batch size changes no image's attack
    (up to the floating-point differences of the device's kernels).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an integer >= 1, not {batch_size!r}")
    if len(images) != len(labels):
        raise DataError(f"{len(images)} images but {len(labels)} labels")
    generator = _generator_or_default(generator)
    device, _ = model_device_dtype(model)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].to(device)
        y = labels[start : start + batch_size].to(device)
        _, logits = _attack_batch(model, x, y, attack, generator, want_logits=True)
        correct += (logits.argmax(dim=1) == y).sum()
    return int(correct), len(images)


def _generator_or_default(generator: torch.Generator | None) -> torch.Generator:
    return torch.Generator().manual_seed(0) if generator is None else generator


@contextlib.contextmanager
def _attack_mode(model: nn.Module) -> Iterator[None]:
    """Eval mode with gradients on (even inside ``torch.no_grad()``), then every module's own flag restored.

    Eval mode matters twice: BN uses its running statistics (the attacked function is the deployed one) and
    the attack's forwards do not update them.
    """
    flags = {module: module.training for module in model.modules()}
    model.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for module, flag in flags.items():
            module.training = flag


def _check_batch(images: torch.Tensor, labels: torch.Tensor) -> None:
    if not images.is_floating_point():
        raise DataError(f"attacks take float images in [0, 1], got {images.dtype}; divide uint8 images by 255")
    if images.dim() < 2 or labels.shape != images.shape[:1]:
        raise DataError(
            f"attacks take images (N, C, H, W) and labels (N,), got {tuple(images.shape)} and {tuple(labels.shape)}"
        )
    if images.numel() and (bool(images.min() < 0) or bool(images.max() > 1)):
        raise DataError(
            f"attack images must be in [0, 1], got values in [{float(images.min()):.3g}, {float(images.max()):.3g}]; "
            "pass unnormalized pixels and wrap the model in Normalized(model, mean, std)"
        )


def _attack_batch(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    attack: Attack,
    generator: torch.Generator,
    *,
    want_logits: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The attack with restarts on one batch; also the logits of the returned images when asked."""
    attack.validate()
    _check_batch(images, labels)
    with _attack_mode(model):
        # Clones: fresh tensors, and inference-mode inputs turned into ones autograd accepts.
        x = images.detach().clone()
        y = labels.detach().to(device=x.device, dtype=torch.long).clone()
        best = _one_start(model, x, y, attack, generator)
        if attack.restarts == 1 and not want_logits:
            return best, None
        with torch.no_grad():
            best_logits = model(best)
            best_loss = F.cross_entropy(best_logits, y, reduction="none")
            fooled = best_logits.argmax(dim=1) != y
            for _ in range(attack.restarts - 1):
                # Only the images no restart has fooled yet are attacked again: the first fooling
                # perturbation is kept, and the work shrinks as the attack succeeds.
                todo = (~fooled).nonzero().flatten()
                if len(todo) == 0:
                    break
                with torch.enable_grad():
                    candidate = _one_start(model, x[todo], y[todo], attack, generator)
                logits = model(candidate)
                loss = F.cross_entropy(logits, y[todo], reduction="none")
                better = (logits.argmax(dim=1) != y[todo]) | (loss > best_loss[todo])
                keep = todo[better]
                best[keep] = candidate[better]
                best_logits[keep] = logits[better]
                best_loss[keep] = loss[better]
                fooled[keep] = best_logits[keep].argmax(dim=1) != y[keep]
    return best, best_logits


def _one_start(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, attack: Attack, generator: torch.Generator
) -> torch.Tensor:
    """One run of FGSM/PGD (FGSM = one step of size eps from the clean image) from one starting point."""
    eps, alpha = attack.eps, float(attack.alpha)  # alpha is resolved in Attack.__post_init__
    if attack.norm == "linf":
        low, high = _linf_bounds(x, eps)
        adversarial = x
        if attack.random_start:
            noise = torch.rand(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
            adversarial = _clip(x + (2 * noise - 1) * eps, low, high)
        for _ in range(int(attack.steps)):  # type: ignore[call-overload]
            step = _input_gradient(model, adversarial, y).sign()
            adversarial = _clip(adversarial + alpha * step, low, high)
        return adversarial

    adversarial = x
    if attack.random_start:
        # torchattacks' PGDL2 start: a Gaussian direction at a uniform radius in [0, eps].
        direction = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        radius = torch.rand(len(x), generator=generator, device=generator.device, dtype=x.dtype).to(x.device)
        adversarial = (x + _rescale_rows(direction, eps * radius)).clamp(0, 1)
    for _ in range(int(attack.steps)):  # type: ignore[call-overload]
        gradient = _input_gradient(model, adversarial, y)
        adversarial = adversarial + alpha * _rescale_rows(gradient, torch.ones(len(x), device=x.device, dtype=x.dtype))
        delta = adversarial - x
        norms = _row_norms(delta)
        factor = torch.where(norms > eps, eps / norms.clamp_min(torch.finfo(x.dtype).tiny), torch.ones_like(norms))
        adversarial = (x + delta * _per_row(factor, x)).clamp(0, 1)
    return _inside_l2_ball(adversarial, x, eps)


def _input_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy with respect to the images only (no parameter .grad touched)."""
    images = images.detach().requires_grad_(True)
    loss = F.cross_entropy(model(images), labels, reduction="sum")
    (gradient,) = torch.autograd.grad(loss, images)
    return gradient


def _per_row(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.dim() - 1)))


def _row_norms(values: torch.Tensor) -> torch.Tensor:
    return torch.linalg.vector_norm(values.flatten(1), dim=1)


def _rescale_rows(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Each image's tensor scaled to L2 length ``lengths[i]`` (a zero tensor stays zero)."""
    norms = _row_norms(values).clamp_min(torch.finfo(values.dtype).tiny)
    return values * _per_row(lengths / norms, values)


def _clip(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    return torch.minimum(torch.maximum(values, low), high)


def _linf_bounds(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel bounds of the L-inf ball intersected with [0, 1], rounded inwards.

    ``x + eps`` rounded to the nearest float can lie a rounding step outside the ball; such a bound is moved
    one float inwards, so ``|adv - x| <= eps`` holds exactly (in float64, where the difference of two float32
    values is exact) for every image the attack returns.
    """
    exact = x.double()
    high = (exact + eps).to(x.dtype)
    high = torch.where(high.double() - exact > eps, torch.nextafter(high, torch.full_like(high, -math.inf)), high)
    low = (exact - eps).to(x.dtype)
    low = torch.where(exact - low.double() > eps, torch.nextafter(low, torch.full_like(low, math.inf)), low)
    return low.clamp_min(0), high.clamp_max(1)


def _inside_l2_ball(adversarial: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Pull back the rare images whose L2 distance exceeds eps by a rounding error, so the ball holds exactly.

    The distance is measured in float64 (exact differences of float32 values); an image over by rounding is
    shrunk towards ``x`` with a margin that grows until it fits, and the clean image, always inside, is the
    last resort.
    """
    for margin in (1e-6, 1e-5, 1e-4, 1e-3):
        delta = adversarial.double() - x.double()
        norms = _row_norms(delta)
        over = norms > eps
        if not bool(over.any()):
            return adversarial
        factor = torch.where(over, eps / norms.clamp_min(1e-300) * (1 - margin), torch.ones_like(norms))
        shrunk = (x + (delta * _per_row(factor, delta)).to(x.dtype)).clamp(0, 1)
        adversarial = torch.where(_per_row(over, x), shrunk, adversarial)
    over = _row_norms(adversarial.double() - x.double()) > eps
    return torch.where(_per_row(over, x), x, adversarial)
