"""What a robustness evaluation asks for, resolved against a run's data: corruption names, severities, attacks.

:class:`~layerlottery.config.RobustnessSettings` holds the user's words (``noise``, ``all``, ``auto``,
``pgd:linf:eps=0.1``); this module turns them into the exact corruption names and :class:`Attack` objects an
evaluation computes, and checks them before any work (one line per mistake).

Default attack (``auto``): PGD L-inf, 10 steps of 2.5 eps / 10 (the attack module's default step), one random
start, with a budget at which a network trained without adversarial training keeps about half its accuracy, so
that a ticket's change against dense shows in either direction (at the usual adversarial-training budgets, 0.3
on MNIST and 8/255 on CIFAR-10, every standard network is near 0%, and nothing can be compared):

* grayscale data (MNIST, digits): eps = 0.07. Measured on the ``mnist_cpu`` dense ResNet-20 (seed 0, 500 test
  digits): PGD-10 at eps 0.03 / 0.05 / 0.07 / 0.08 / 0.1 leaves 96.0 / 89.4 / 46.2 / 24.2 / 8.2% accuracy.
* colour data (CIFAR-10/100 and the rest): eps = 1/255 (not measured here; standard CIFAR networks are
  reported near 0% from 2-4/255 on). Check it on your networks and pass ``--attack`` to change it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from layerlottery.config import RobustnessSettings, check_seed
from layerlottery.errors import ConfigError

if TYPE_CHECKING:
    from layerlottery.robustness.attacks import Attack

GENERATED = "generated"
CIFAR10C = "cifar10c"
SOURCES = (GENERATED, CIFAR10C)
CIFAR102 = "cifar102"
SHIFTS = (CIFAR102,)
CIFAR10 = "cifar10"
"""The published sets (CIFAR-10-C, CIFAR-10.2) are CIFAR-10's test images: only CIFAR-10 runs can use them."""
ALL = "all"
AUTO = "auto"
SEVERITIES = (1, 2, 3, 4, 5)
AUTO_ATTACK_GRAYSCALE = "pgd:linf:eps=0.07:steps=10"
AUTO_ATTACK_COLOUR = "pgd:linf:eps=1/255:steps=10"


def check_robustness_settings(settings: RobustnessSettings, data_name: str | None = None) -> None:
    """Refuse a mistake in the ``robustness`` section with one line naming the setting.

    Corruption names and attack specs are checked against the corruption and attack modules only when they
    are not the defaults (or the evaluation is on), so an experiment that does not ask for robustness never
    imports them.
    """
    checks = [
        (settings.source in SOURCES, f"robustness.source / --source must be one of {', '.join(SOURCES)}, not {settings.source!r}"),
        (all(name in SHIFTS for name in settings.shift), f"robustness.shift / --shift names published test sets ({', '.join(SHIFTS)}), not {list(settings.shift)}"),
        (all(s in SEVERITIES for s in settings.severities), f"robustness.severities / --severities must lie in 1..5, not {list(settings.severities)}"),
        (bool(settings.severities) or not settings.corruptions, "robustness.severities / --severities is empty; give severities 1..5, or no corruptions"),
        (settings.max_samples is None or settings.max_samples >= 1, f"robustness.max_samples / --max-samples must be >= 1 (or null: all), not {settings.max_samples}"),
        (settings.attack_samples is None or settings.attack_samples >= 1, f"robustness.attack_samples must be >= 1 (or null: all), not {settings.attack_samples}"),
        (settings.batch_size >= 1, f"robustness.batch_size / --batch-size must be >= 1, not {settings.batch_size}"),
        (settings.device in ("auto", "cpu") or settings.device.startswith("cuda"), f"robustness.device / --device must be auto, cpu, cuda or cuda:N, not {settings.device!r}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ConfigError(message)
    check_seed(settings.seed, "robustness.seed / --seed")
    if data_name is not None and data_name != CIFAR10:
        if settings.source == CIFAR10C and settings.corruptions:
            raise ConfigError(f"robustness.source=cifar10c holds CIFAR-10 test images, but the data is {data_name}; use robustness.source=generated")
        if settings.shift:
            raise ConfigError(f"robustness.shift={list(settings.shift)} holds CIFAR-10 test images, but the data is {data_name}; remove it")
    if settings.after_training or tuple(settings.corruptions) != (ALL,):
        resolve_corruptions(settings.corruptions, settings.source)
    if settings.after_training or tuple(settings.attacks) != (AUTO,):
        resolve_attacks(settings.attacks, channels=1)  # the channel count only picks the auto budget


def resolve_corruptions(requested: Sequence[str], source: str = GENERATED) -> tuple[str, ...]:
    """Corruption names for ``requested`` names, families or ``all``, in the order the source lists them."""
    from layerlottery.robustness.corruptions import CORRUPTION_FAMILIES, corruption_names

    if source == CIFAR10C:
        from layerlottery.data.cifar10c import CIFAR10C_CORRUPTIONS

        known: tuple[str, ...] = tuple(CIFAR10C_CORRUPTIONS)
    else:
        known = tuple(corruption_names())
    wanted: set[str] = set()
    for item in requested:
        key = str(item).strip().lower()
        if key == ALL:
            wanted.update(known)
        elif key in CORRUPTION_FAMILIES:
            wanted.update(name for name in CORRUPTION_FAMILIES[key] if name in known)
        elif key in known:
            wanted.add(key)
        else:
            families = ", ".join(CORRUPTION_FAMILIES)
            raise ConfigError(
                f"unknown corruption {item!r} for source {source}; choose from: {ALL}, {families}, {', '.join(known)}"
            )
    return tuple(name for name in known if name in wanted)


def resolve_severities(severities: Sequence[int]) -> tuple[int, ...]:
    """Severities sorted, duplicates merged; each in 1..5."""
    bad = [s for s in severities if isinstance(s, bool) or not isinstance(s, int) or s not in SEVERITIES]
    if bad:
        raise ConfigError(f"severities must lie in 1..5, not {bad}")
    return tuple(sorted(set(severities)))


def auto_attack_spec(channels: int) -> str:
    """The ``auto`` attack for images with ``channels`` channels (see the module docstring for the budgets)."""
    return AUTO_ATTACK_GRAYSCALE if channels == 1 else AUTO_ATTACK_COLOUR


def resolve_attacks(specs: Sequence[str], channels: int) -> tuple[Attack, ...]:
    """:class:`Attack` objects for ``specs`` (``auto`` or the attack module's spelling), validated, deduplicated."""
    from layerlottery.robustness.attacks import parse_attack

    attacks: dict[str, Attack] = {}
    for spec in specs:
        text = auto_attack_spec(channels) if str(spec).strip().lower() == AUTO else str(spec)
        attack = parse_attack(text)
        attack.validate()
        attacks.setdefault(attack.key, attack)
    return tuple(attacks.values())


NONE = "none"


def _listed(text: str | Sequence[str] | None, default: tuple[str, ...]) -> tuple[str, ...]:
    """Comma-separated (or repeated) words; None = ``default``; ``none`` = nothing."""
    if text is None:
        return default
    items = [text] if isinstance(text, str) else list(text)
    words = tuple(word.strip() for item in items for word in item.split(",") if word.strip())
    return () if [w.lower() for w in words] == [NONE] else words


def settings_from_flags(
    *,
    corruptions: str | Sequence[str] | None = None,
    severities: str | None = None,
    source: str = GENERATED,
    shift: str | Sequence[str] | None = None,
    attacks: str | Sequence[str] | None = None,
    max_samples: int | None = None,
    attack_samples: int = 500,
    batch_size: int = 256,
    device: str = "auto",
    seed: int = 0,
) -> RobustnessSettings:
    """:class:`RobustnessSettings` from the ``robustness`` command's flags (comma-separated lists, ``none``,
    ``--attack-samples 0`` = every image), checked."""
    levels = _listed(severities, tuple(str(s) for s in SEVERITIES))
    if not all(level.lstrip("+-").isdigit() for level in levels):
        raise ConfigError(f"--severities takes whole numbers from 1 to 5 separated by commas, not {severities!r}")
    if attack_samples < 0:
        raise ConfigError(f"--attack-samples must be >= 0 (0 = every test image), not {attack_samples}")
    settings = RobustnessSettings(
        corruptions=_listed(corruptions, (ALL,)),
        severities=tuple(int(level) for level in levels),
        source=source,
        shift=_listed(shift, ()),
        attacks=_listed(attacks, (AUTO,)),
        max_samples=max_samples,
        attack_samples=attack_samples or None,
        batch_size=batch_size,
        device=device,
        seed=seed,
    )
    check_robustness_settings(settings)
    return settings
