"""Configuration of the simulated world: items, user segments, request mix and the shift schedule.

Plain dataclasses (Hydra ConfigStore-ready). Every value is validated in ``__post_init__``, so a bad
world fails at construction, before any simulation runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from envs.calibration import DATA_SIZES, DATA_SOURCES
from envs.validation import (
    ConfigError,
    check_choice,
    check_int,
    check_mapping,
    check_probability,
    check_range,
    check_simplex,
    short_repr,
)

__all__ = [
    "MIX_OF",
    "SHIFT_KINDS",
    "TASTE_PARAMS",
    "WORLD_SIZES",
    "ItemConfig",
    "SegmentConfig",
    "ShiftConfig",
    "WorldConfig",
    "default_segments",
    "known_keys",
    "shift_days",
    "world_cells",
    "world_size",
]

SHIFT_KINDS = ("segment_mix", "topic_shock", "catalog_refresh", "cold_start_influx", "risk_surge", "taste")
MIX_OF = ("sessions", "requests")  # what a request mix is a share of
# what a ``taste`` shift may set: the segment parameters that weigh an item or a slate in the user's choice
TASTE_PARAMS = ("affinity_scale", "quality_sensitivity", "novelty_sensitivity", "popularity_sensitivity", "risk_appeal",
                "risk_sensitivity", "fatigue_sensitivity", "fatigue_increment", "slate_satiation", "no_click_utility")

# The named world sizes, the one place they are written (WorldConfig's own defaults are the full-size world).
# tiny: seconds per run, the experiment app's default (conf/world/small, shifting, shifting_long);
# small: minutes per run, the evolution benchmark's world (agents.evolution, conf/world/medium).
WORLD_SIZES: dict[str, dict[str, int]] = {
    "tiny": {"num_items": 600, "num_users": 1200, "num_topics": 5, "num_creators": 30, "steps_per_day": 10},
    "small": {"num_items": 2000, "num_users": 4000, "num_topics": 10, "num_creators": 100, "steps_per_day": 20},
}

# Upper bounds of parameters that had none: each is far beyond any meaningful setting and below where the
# simulation's float32 / numpy arithmetic breaks (overflow to inf, then NaN), so a config that validates runs.
MIN_CONCENTRATION, MAX_CONCENTRATION = 1e-3, 1e4  # Beta / Dirichlet parameters: 1e-3 is all-or-nothing, 1e4 a point mass
RISK_MEAN_MARGIN = 1e-6  # Beta(risk_mean * c, (1 - risk_mean) * c) needs both products > 0 (5e-324 * 1e-3 is 0)
MAX_UTILITY_WEIGHT = 50.0  # logit weights and offsets: exp(50) is 5e21, float32 exp overflows at 88
MAX_LOG_SIGMA = 5.0  # log-normal sigmas: exp(5 z) already spans 1e-13..1e13 over z in [-6, 6]
MAX_COUNT = 10_000_000  # items, users, creators: a 1e7-slot column array is ~40 MB per float32 feature
MAX_TOPICS = 10_000  # topics: fatigue is a (num_users, num_topics) float32 array
MAX_EMBEDDING_DIM = 1024
MAX_WORLD_CELLS = 2**29  # float cells of the world's arrays (~2 GiB float32, more while they are drawn)
MAX_DAYS = 1_000_000  # days (a shift's day), clicks (history, graduation), steps per day


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
        # the popularity feature is a * (1 - log rank / log N), clipped to +-FEATURE_BOUND (10): a > 10 only saturates
        check_range("items.zipf_exponent", self.zipf_exponent, 0.0, 10.0)
        check_range("items.head_fraction", self.head_fraction, 0.0, 1.0, low_inclusive=False)
        check_range("items.torso_fraction", self.torso_fraction, 0.0, 1.0)
        if self.head_fraction + self.torso_fraction > 1.0:
            raise ConfigError(
                "`items.head_fraction + items.torso_fraction` must be <= 1 "
                f"(got {self.head_fraction} + {self.torso_fraction})"
            )
        # embeddings are unit(centre + topic_noise * z): beyond 100 the topic is lost in the noise
        check_range("items.topic_noise", self.topic_noise, 0.0, 100.0)
        check_range("items.quality_alpha", self.quality_alpha, MIN_CONCENTRATION, MAX_CONCENTRATION)
        check_range("items.quality_beta", self.quality_beta, MIN_CONCENTRATION, MAX_CONCENTRATION)
        check_range("items.risk_mean", self.risk_mean, RISK_MEAN_MARGIN, 1.0 - RISK_MEAN_MARGIN)
        check_range("items.risk_concentration", self.risk_concentration, MIN_CONCENTRATION, MAX_CONCENTRATION)
        # lifetime = lifetime_days * exp(lifetime_sigma * z); freshness = exp(-age / lifetime): a lifetime that
        # overflows (inf / inf) or underflows to 0 (0 / 0) makes NaN freshness
        check_range("items.lifetime_days", self.lifetime_days, 1e-3, 1e5)
        check_range("items.lifetime_sigma", self.lifetime_sigma, 0.0, MAX_LOG_SIGMA)
        check_range("items.expire_after", self.expire_after, 0.0, 1e3, low_inclusive=False)
        # cost = cost_mean * exp(cost_sigma * z - cost_sigma^2 / 2), stored as float32
        check_range("items.cost_mean", self.cost_mean, 0.0, 1e6, low_inclusive=False)
        check_range("items.cost_sigma", self.cost_sigma, 0.0, MAX_LOG_SIGMA)


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
    # variety seeking within one slate: utility lost per item of the same topic shown above it (a redundant slate
    # is worth less; a pointwise ranker cannot represent it, a slate-level re-ranker such as MMR can act on it)
    slate_satiation: float = 0.0
    drift_rate: float = 0.05  # interest moves this far toward each clicked item
    patience: float = 1.5  # logit of continuing the session at neutral satisfaction
    return_bias: float = 0.0  # logit of returning the next day at neutral satisfaction
    churn_probability: float = 0.1  # probability of churning after a session without a next-day return

    def validate(self, name: str) -> None:
        p = f"segments.{name}"
        # history ~ Poisson(history_mean) as int32 (numpy refuses lam > ~9e18): a million past clicks is plenty
        check_range(f"{p}.history_mean", self.history_mean, 0.0, float(MAX_DAYS))
        check_range(f"{p}.interest_concentration", self.interest_concentration, MIN_CONCENTRATION, MAX_CONCENTRATION)
        # utility weights (float32 logits of the choice model) and the satisfaction penalty per violation
        for key in ("affinity_scale", "quality_sensitivity", "novelty_sensitivity", "popularity_sensitivity",
                    "risk_appeal", "risk_sensitivity", "fatigue_sensitivity", "fatigue_increment", "slate_satiation"):
            check_range(f"{p}.{key}", getattr(self, key), 0.0, MAX_UTILITY_WEIGHT)
        check_probability(f"{p}.fatigue_decay", self.fatigue_decay)
        check_probability(f"{p}.drift_rate", self.drift_rate)
        check_probability(f"{p}.churn_probability", self.churn_probability)
        # logit offsets: the no-click utility, sigmoid(patience + 2 s), sigmoid(return_bias + mean x)
        for key in ("no_click_utility", "patience", "return_bias"):
            check_range(f"{p}.{key}", getattr(self, key), -MAX_UTILITY_WEIGHT, MAX_UTILITY_WEIGHT)

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
    wave of borderline creators or a stricter policy), ``taste`` (the users of ``segment``, every segment when
    empty, now weigh items with ``param`` = ``value``, one of :data:`TASTE_PARAMS`: e.g. ``fatigue_sensitivity``
    up, users tire of a topic sooner and a diverse slate is worth more; ``novelty_sensitivity`` up, they seek
    fresh items).

    ``every`` > 0 repeats the shift every ``every`` days from ``day`` (recurring regimes: two ``taste`` or
    ``segment_mix`` shifts with the same period and offset days alternate A -> B -> A -> B; a ``taste`` or
    ``segment_mix`` shift sets a value, so repeating it returns to the same regime).
    """

    kind: str = "segment_mix"
    day: int = 1
    request_mix: dict[str, float] | None = None
    topic: int = 0
    strength: float = 1.0
    fraction: float = 0.5
    segment: str = ""  # taste: the segment whose users change ("" = every segment)
    param: str = ""  # taste: the segment parameter set (TASTE_PARAMS)
    value: float = 0.0  # taste: its new value
    every: int = 0  # > 0: the shift repeats every this many days from ``day``

    def fires_on(self, day: int) -> bool:
        """Whether the shift applies at the start of ``day``."""
        return day == self.day or (self.every > 0 and day > self.day and (day - self.day) % self.every == 0)

    def days(self, until: int) -> list[int]:
        """The days up to ``until`` (inclusive) at whose start the shift applies."""
        return shift_days(self.day, self.every, until)

    def __post_init__(self) -> None:
        check_choice("shifts.kind", self.kind, SHIFT_KINDS)
        check_int("shifts.day", self.day, 0, MAX_DAYS)
        # interest += strength * centre (then unit norm), risk *= 1 + strength, new-user share *= 1 + strength
        check_range("shifts.strength", self.strength, 0.0, 100.0)
        check_probability("shifts.fraction", self.fraction)
        check_int("shifts.topic", self.topic, 0, MAX_TOPICS - 1)
        if self.request_mix is not None:  # names are checked against the segments by WorldConfig
            check_mapping("shifts.request_mix", self.request_mix, "segment -> weight")
            for name, w in self.request_mix.items():
                check_range(f"shifts.request_mix.{_name(name)}", w, 0.0)
        if self.kind == "segment_mix" and not self.request_mix:
            raise ConfigError(f"`shifts.request_mix` is required for kind 'segment_mix' (got {self.request_mix!r})")
        check_int("shifts.every", self.every, 0, MAX_DAYS)
        check_range("shifts.value", self.value, -MAX_UTILITY_WEIGHT, MAX_UTILITY_WEIGHT)
        if self.kind == "taste":  # the segment's name is checked against the segments by WorldConfig
            check_choice("shifts.param", self.param, list(TASTE_PARAMS))
            if self.param != "no_click_utility" and self.value < 0:  # a weight (the no-click utility is an offset)
                raise ConfigError(f"`shifts.value` must be >= 0 for param {self.param!r}, a utility weight "
                                  f"(got {self.value!r})")


def shift_days(day: int, every: int, until: int) -> list[int]:
    """The days up to ``until`` (inclusive) at whose start a shift of ``day`` repeated ``every`` days (0: once) applies."""
    return list(range(day, until + 1, every)) if every > 0 else [day] if day <= until else []


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
    # what request_mix (and a segment_mix shift) sets: the share of session starts (``sessions``: a segment of short
    # sessions then makes fewer of the requests, e.g. new users ~6% at 0.2) or of requests (``requests``: session
    # starts are weighted by each segment's inverse session length, measured in the run and updated daily)
    mix_of: str = "sessions"
    shifts: list[ShiftConfig] = field(default_factory=list)
    # a data set that grounds the world (envs.calibration: "ml100k" takes the items, their embeddings, popularity
    # ranks, quality and ages, and the initial users' interests, activity and segments from MovieLens-100K); "" none
    data: str = ""

    def __post_init__(self) -> None:
        # accept plain mappings (from YAML / Hydra / kwargs) for the nested parts
        if isinstance(self.items, Mapping):
            self.items = ItemConfig(**known_keys("items", self.items, ItemConfig))
        elif not isinstance(self.items, ItemConfig):
            check_mapping("items", self.items, "item parameters")
        check_mapping("segments", self.segments, "segment name -> segment parameters")
        self.segments = {_segment_name(name): _segment(name, seg) for name, seg in self.segments.items()}
        if isinstance(self.shifts, (str, bytes, Mapping)) or not isinstance(self.shifts, Sequence):
            got = f"{type(self.shifts).__name__} {short_repr(self.shifts)}"
            raise ConfigError(f"`shifts` must be a list of shifts (got {got})")
        self.shifts = [_shift(i, s) for i, s in enumerate(self.shifts)]
        check_int("num_items", self.num_items, 1, MAX_COUNT)
        check_int("num_users", self.num_users, 1, MAX_COUNT)
        check_int("num_topics", self.num_topics, 1, MAX_TOPICS)
        check_int("embedding_dim", self.embedding_dim, 1, MAX_EMBEDDING_DIM)
        check_int("num_creators", self.num_creators, 1, MAX_COUNT)
        check_int("steps_per_day", self.steps_per_day, 1, MAX_DAYS)
        cells = world_cells(int(self.num_items), int(self.num_users), int(self.num_topics), int(self.embedding_dim))
        if cells > MAX_WORLD_CELLS:
            raise ConfigError(
                "`num_users * (2 * embedding_dim + num_topics) + num_items * (2 * embedding_dim + 4)` (float cells of "
                f"the world's arrays) must be <= {MAX_WORLD_CELLS}, about 2 GiB of float32 (got {cells} with "
                f"num_users={self.num_users}, num_items={self.num_items}, num_topics={self.num_topics}, "
                f"embedding_dim={self.embedding_dim}); lower one of them"
            )
        # examination log-weight -position_decay * log(1 + k) in float32: at 50 only the first position is seen
        check_range("position_decay", self.position_decay, 0.0, MAX_UTILITY_WEIGHT)
        check_int("graduate_after", self.graduate_after, 0, MAX_DAYS)
        check_choice("data", self.data, list(DATA_SOURCES))
        for key, size in DATA_SIZES.get(self.data, {}).items():
            if getattr(self, key) != size:
                raise ConfigError(f"`{key}` must be {size} for a world grounded in data={self.data!r}, the data set's "
                                  f"size (got {getattr(self, key)}); use `world={self.data}` or set it to {size}")
        if not self.segments:
            raise ConfigError("`segments` must define at least one segment (got none)")
        for name, seg in self.segments.items():
            seg.validate(name)
        names = list(self.segments)
        check_choice("new_user_segment", self.new_user_segment, names)
        self.request_mix = check_simplex("request_mix", self.request_mix, names)
        check_choice("mix_of", self.mix_of, list(MIX_OF))
        if self.graduate_after > 0:
            self.graduate_to = check_simplex("graduate_to", self.graduate_to, names)
        else:  # unused (no graduation), but never holds garbage
            check_mapping("graduate_to", self.graduate_to, "segment -> weight")
            for name, w in self.graduate_to.items():
                check_range(f"graduate_to.{_name(name)}", w, 0.0)
        for shift in self.shifts:
            if shift.kind == "topic_shock":
                check_int("shifts.topic", shift.topic, 0, self.num_topics - 1)
            if shift.request_mix is not None:
                shift.request_mix = check_simplex("shifts.request_mix", shift.request_mix, names)
            if shift.kind == "taste" and shift.segment:
                check_choice("shifts.segment", shift.segment, names)

    @property
    def segment_names(self) -> list[str]:
        return list(self.segments)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def world_size(name: str) -> dict[str, int]:
    """A copy of the named world size (:data:`WORLD_SIZES`), e.g. ``WorldConfig(**world_size("tiny"), shifts=...)``."""
    check_choice("world size", name, list(WORLD_SIZES))
    return dict(WORLD_SIZES[name])


def world_cells(num_items: int, num_users: int, num_topics: int, embedding_dim: int) -> int:
    """Float cells of the world's big arrays: per user interest, profile, topic fatigue; per item embedding, features."""
    return num_users * (2 * embedding_dim + num_topics) + num_items * (2 * embedding_dim + 4)


def _name(name: Any) -> str:
    return name if isinstance(name, str) else short_repr(name)


def _segment_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"`segments` keys must be non-empty segment names (got {type(name).__name__} {short_repr(name)})")
    return name


def _segment(name: Any, seg: SegmentConfig | Mapping[str, Any]) -> SegmentConfig:
    """A segment from a config or a mapping; errors name the segment."""
    if isinstance(seg, SegmentConfig):
        return seg
    key = f"segments.{_segment_name(name)}"
    check_mapping(key, seg, "segment parameters")
    try:
        return SegmentConfig(**known_keys(key, seg, SegmentConfig))
    except ConfigError as exc:
        raise ConfigError(str(exc).replace("segments.<segment>", key)) from None


def _shift(index: int, shift: ShiftConfig | Mapping[str, Any]) -> ShiftConfig:
    """A shift from a config or a mapping."""
    if isinstance(shift, ShiftConfig):
        return shift
    check_mapping(f"shifts[{index}]", shift, "shift parameters")
    return ShiftConfig(**known_keys("shifts", shift, ShiftConfig))


def known_keys(key: str, values: Any, cls: type) -> dict[str, Any]:
    """Reject a non-mapping, and unknown keys of a mapping with a did-you-mean, before building ``cls``."""
    check_mapping(key, values, f"{cls.__name__} fields")
    allowed = [f.name for f in fields(cls)]
    for name in values:
        check_choice(f"{key} key", name, allowed)
    return {str(name): value for name, value in values.items()}
