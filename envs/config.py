"""Configuration of the simulated world: items, user segments, request mix and the shift schedule.

Plain dataclasses (Hydra ConfigStore-ready). Every value is validated in ``__post_init__``, so a bad
world fails at construction, before any simulation runs.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from envs.validation import (
    ConfigError,
    check_choice,
    check_int,
    check_probability,
    check_range,
    check_simplex,
)

__all__ = [
    "SHIFT_KINDS",
    "ItemConfig",
    "SegmentConfig",
    "ShiftConfig",
    "WorldConfig",
    "default_segments",
    "known_keys",
]

SHIFT_KINDS = ("segment_mix", "topic_shock", "catalog_refresh", "cold_start_influx", "risk_surge")


@dataclass
class ItemConfig:
    """How items are generated: popularity prior, quality, lifetime, risk and cost."""

    zipf_exponent: float = 1.0  # popularity prior p(rank) ~ rank^-a
    head_fraction: float = 0.05  # share of items (by popularity rank) that form the head
    torso_fraction: float = 0.25  # the next share forms the torso; the rest is the long tail
    topic_noise: float = 0.35  # spread of item embeddings around their topic centre
    quality_alpha: float = 2.0  # quality ~ Beta(alpha, beta)
    quality_beta: float = 2.0
    risk_mean: float = 0.02  # mean probability that an item violates policy
    risk_concentration: float = 4.0  # Beta concentration of risk around its mean (lower: heavier tail)
    lifetime_days: float = 10.0  # median lifetime (log-normal); freshness = exp(-age / lifetime)
    lifetime_sigma: float = 1.0  # log-normal sigma of lifetimes (ephemeral vs evergreen items)
    expire_after: float = 3.0  # an item leaves the catalog at age > expire_after * lifetime
    cost_mean: float = 1.0  # mean serving cost of an item (log-normal)
    cost_sigma: float = 0.5

    def __post_init__(self) -> None:
        check_range("items.zipf_exponent", self.zipf_exponent, 0.0)
        check_range("items.head_fraction", self.head_fraction, 0.0, 1.0, low_inclusive=False)
        check_range("items.torso_fraction", self.torso_fraction, 0.0, 1.0)
        if self.head_fraction + self.torso_fraction > 1.0:
            raise ConfigError(
                "`items.head_fraction + items.torso_fraction` must be <= 1 "
                f"(got {self.head_fraction} + {self.torso_fraction})"
            )
        check_range("items.topic_noise", self.topic_noise, 0.0)
        check_range("items.quality_alpha", self.quality_alpha, 0.0, low_inclusive=False)
        check_range("items.quality_beta", self.quality_beta, 0.0, low_inclusive=False)
        check_range("items.risk_mean", self.risk_mean, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
        check_range("items.risk_concentration", self.risk_concentration, 0.0, low_inclusive=False)
        check_range("items.lifetime_days", self.lifetime_days, 0.0, low_inclusive=False)
        check_range("items.lifetime_sigma", self.lifetime_sigma, 0.0)
        check_range("items.expire_after", self.expire_after, 0.0, low_inclusive=False)
        check_range("items.cost_mean", self.cost_mean, 0.0, low_inclusive=False)
        check_range("items.cost_sigma", self.cost_sigma, 0.0)


@dataclass
class SegmentConfig:
    """One user segment. Utilities are logits of a multinomial choice with a no-click option."""

    history_mean: float = 40.0  # mean number of past clicks at creation (observable history length)
    interest_concentration: float = 0.5  # Dirichlet alpha over topics: lower = more concentrated interests
    no_click_utility: float = 1.0  # utility of clicking nothing (higher = pickier)
    affinity_scale: float = 3.0  # weight of interest-item cosine affinity
    quality_sensitivity: float = 1.0
    novelty_sensitivity: float = 0.5  # weight of item freshness
    popularity_sensitivity: float = 0.5  # weight of the item's popularity prior (log-rank scaled to [0, 1])
    risk_appeal: float = 0.5  # clickbait: attraction added per unit of item risk
    risk_sensitivity: float = 1.0  # satisfaction lost per violating item shown
    fatigue_sensitivity: float = 1.0  # utility lost per unit of topic fatigue
    fatigue_increment: float = 0.5  # fatigue added to a topic on each click
    fatigue_decay: float = 0.8  # per-step multiplicative decay of fatigue
    drift_rate: float = 0.05  # interest moves this far toward each clicked item
    patience: float = 1.5  # logit of continuing the session at neutral satisfaction
    return_bias: float = 0.0  # logit of returning the next day at neutral satisfaction
    churn_probability: float = 0.1  # probability of churning after a session without a next-day return

    def validate(self, name: str) -> None:
        p = f"segments.{name}"
        check_range(f"{p}.history_mean", self.history_mean, 0.0)
        check_range(f"{p}.interest_concentration", self.interest_concentration, 0.0, low_inclusive=False)
        check_range(f"{p}.affinity_scale", self.affinity_scale, 0.0)
        for key in ("quality_sensitivity", "novelty_sensitivity", "popularity_sensitivity", "risk_appeal",
                    "risk_sensitivity", "fatigue_sensitivity", "fatigue_increment"):
            check_range(f"{p}.{key}", getattr(self, key), 0.0)
        check_probability(f"{p}.fatigue_decay", self.fatigue_decay)
        check_probability(f"{p}.drift_rate", self.drift_rate)
        check_probability(f"{p}.churn_probability", self.churn_probability)
        for key in ("no_click_utility", "patience", "return_bias"):
            check_range(f"{p}.{key}", getattr(self, key))

    def __post_init__(self) -> None:
        self.validate("<segment>")


def default_segments() -> dict[str, SegmentConfig]:
    """Cold-start, casual and heavy users that really differ (ordered new < casual < heavy in engagement)."""
    return {
        "new": SegmentConfig(
            history_mean=1.0, interest_concentration=1.0, no_click_utility=3.9, affinity_scale=2.0,
            quality_sensitivity=0.5, novelty_sensitivity=0.3, popularity_sensitivity=3.0, risk_appeal=1.0,
            risk_sensitivity=0.5, fatigue_sensitivity=0.5, drift_rate=0.10, patience=1.0, return_bias=-0.3,
            churn_probability=0.3,
        ),
        "casual": SegmentConfig(
            history_mean=40.0, interest_concentration=0.5, no_click_utility=3.8, affinity_scale=3.0,
            quality_sensitivity=1.0, novelty_sensitivity=0.5, popularity_sensitivity=1.5, risk_appeal=0.5,
            risk_sensitivity=1.0, fatigue_sensitivity=1.0, drift_rate=0.05, patience=2.0, return_bias=0.6,
            churn_probability=0.1,
        ),
        "heavy": SegmentConfig(
            history_mean=400.0, interest_concentration=0.15, no_click_utility=4.3, affinity_scale=4.0,
            quality_sensitivity=2.0, novelty_sensitivity=1.0, popularity_sensitivity=0.5, risk_appeal=0.2,
            risk_sensitivity=1.5, fatigue_sensitivity=1.5, drift_rate=0.02, patience=3.2, return_bias=2.0,
            churn_probability=0.02,
        ),
    }


@dataclass
class ShiftConfig:
    """One scheduled change of the world, applied at the start of ``day``.

    kinds: ``segment_mix`` (the request mix becomes ``request_mix``), ``topic_shock`` (interests of all
    users and popularity of items move toward ``topic`` by ``strength``), ``catalog_refresh`` (``fraction``
    of the catalog is replaced by new items), ``cold_start_influx`` (``fraction`` of users are replaced
    by new users and the new segment's request share is multiplied by ``1 + strength``), ``risk_surge``
    (``fraction`` of the catalog becomes riskier: risk multiplied by ``1 + strength``, capped at 1, e.g. a
    wave of borderline creators or a stricter policy).
    """

    kind: str = "segment_mix"
    day: int = 1
    request_mix: dict[str, float] | None = None
    topic: int = 0
    strength: float = 1.0
    fraction: float = 0.5

    def __post_init__(self) -> None:
        check_choice("shifts.kind", self.kind, SHIFT_KINDS)
        check_int("shifts.day", self.day, 0)
        check_range("shifts.strength", self.strength, 0.0)
        check_probability("shifts.fraction", self.fraction)
        check_int("shifts.topic", self.topic, 0)
        if self.kind == "segment_mix" and not self.request_mix:
            raise ConfigError(f"`shifts.request_mix` is required for kind 'segment_mix' (got {self.request_mix!r})")


@dataclass
class WorldConfig:
    """The whole world: sizes, items, segments, the request mix, the clock and the shift schedule."""

    num_items: int = 10_000
    num_users: int = 20_000
    num_topics: int = 20
    embedding_dim: int = 16
    num_creators: int = 500
    steps_per_day: int = 100  # env steps (vector steps) per simulated day
    position_decay: float = 1.0  # examination log-weight at position k is -position_decay * log(1 + k)
    new_user_segment: str = "new"  # segment of users that arrive (churn replacement, cold-start influx)
    graduate_after: int = 10  # clicks after which a new user takes its latent segment (0 = never)
    graduate_to: dict[str, float] = field(default_factory=lambda: {"casual": 0.7, "heavy": 0.3})
    items: ItemConfig = field(default_factory=ItemConfig)
    segments: dict[str, SegmentConfig] = field(default_factory=default_segments)
    request_mix: dict[str, float] = field(default_factory=lambda: {"new": 0.2, "casual": 0.5, "heavy": 0.3})
    shifts: list[ShiftConfig] = field(default_factory=list)

    def __post_init__(self) -> None:
        # accept plain mappings (from YAML / Hydra / kwargs) for the nested parts
        if isinstance(self.items, dict):
            self.items = ItemConfig(**known_keys("items", self.items, ItemConfig))
        self.segments = {name: _segment(name, seg) for name, seg in dict(self.segments).items()}
        self.shifts = [
            s if isinstance(s, ShiftConfig) else ShiftConfig(**known_keys("shifts", s, ShiftConfig)) for s in self.shifts
        ]
        check_int("num_items", self.num_items, 1)
        check_int("num_users", self.num_users, 1)
        check_int("num_topics", self.num_topics, 1)
        check_int("embedding_dim", self.embedding_dim, 1)
        check_int("num_creators", self.num_creators, 1)
        check_int("steps_per_day", self.steps_per_day, 1)
        check_range("position_decay", self.position_decay, 0.0)
        check_int("graduate_after", self.graduate_after, 0)
        if not self.segments:
            raise ConfigError("`segments` must define at least one segment (got none)")
        for name, seg in self.segments.items():
            seg.validate(name)
        names = list(self.segments)
        check_choice("new_user_segment", self.new_user_segment, names)
        self.request_mix = check_simplex("request_mix", self.request_mix, names)
        if self.graduate_after > 0:
            self.graduate_to = check_simplex("graduate_to", self.graduate_to, names)
        for shift in self.shifts:
            if shift.kind == "topic_shock":
                check_int("shifts.topic", shift.topic, 0, self.num_topics - 1)
            if shift.request_mix is not None:
                shift.request_mix = check_simplex("shifts.request_mix", shift.request_mix, names)

    @property
    def segment_names(self) -> list[str]:
        return list(self.segments)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _segment(name: str, seg: SegmentConfig | dict[str, Any]) -> SegmentConfig:
    """A segment from a config or a mapping; errors name the segment."""
    if isinstance(seg, SegmentConfig):
        return seg
    try:
        return SegmentConfig(**known_keys(f"segments.{name}", seg, SegmentConfig))
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("segments.<segment>", f"segments.{name}")) from None


def known_keys(key: str, values: Any, cls: type) -> dict[str, Any]:
    """Reject unknown keys of a nested mapping with a did-you-mean, before building ``cls``."""
    allowed = [f.name for f in fields(cls)]
    values = dict(values)
    for name in values:
        check_choice(f"{key} key", name, allowed)
    return values
