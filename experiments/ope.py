"""The off-policy evaluation benchmark: IPS, SNIPS, DM, DR and the slate estimator on simulated logs, against twins.

``python -m experiments.ope [--out DIR] [--seeds N] [--log-sizes 500,2000,8000] [--targets A,B] [--shift S]
[--marginals auto|exact|mc] [--quick] [--obd]``

**The log.** A world (``envs.world.World``, the ``tiny`` size by default) is served through ``envs.sessions.SessionBatch``
by a logging policy: a Plackett-Luce (softmax) re-ranker at temperature ``logging_temperature`` over a fixed linear
score of what a recommender observes (:class:`LinearScorer`: the user's observable profile . the item's embedding,
the item's quality, popularity and freshness features; never the world's true utility). ``slots`` sessions run side
by side for ``steps`` steps, ``slots = log_size / steps`` (a session that ends is replaced at once), so every log
covers the same ``steps / steps_per_day`` days whatever its size. In the ``shift`` regime a shift
(``topic_shock`` or ``taste``, :data:`SHIFTS`) fires at the start of ``shift_day``, inside the logging period: the
log straddles it. Per request the log keeps the observation, the slate (candidate indices), the clicks per position
and the slate's exact probability under the logging policy (``agents.decision.stochastic``).

**The truth, from twins.** A target policy's true value is the mean *expected* clicks per request
(``Response.expected_clicks``, the choice model's ``1 - P(no click)``, noise-free) of the target itself run on a twin
world: the same ``seed`` and ``traffic_seed`` (``envs.streams``: every draw about a user or a request is keyed by the
traffic seed and that user's own event counters), the same slots, steps and shift, hence the same number of requests.
The twin's sessions evolve under the target: its users click, tire, exit, return and churn differently, so later
requests come from other users in other states than in the log. That is part of the truth (what deploying the target
would give), and a bias no per-request estimator can see: they all reweigh the states the logging policy produced.

**The estimators** (``rewards.ope``), on the log's ``n`` requests with reward = clicks per request:
``ips`` and ``snips`` with the whole slate's probability ratio ``pi(slate) / pi_0(slate)`` (exact for every policy
here; 0 for a greedy target wherever the logged slate is not its slate); ``slate_pbm`` with the per-position
marginals of both policies for the logged item at each position and the clicks per position. Marginals
(``agents.decision.stochastic``, ``marginals`` setting): exact for the greedy and epsilon-greedy targets and at position
0; for Plackett-Luce at later positions exact by the recursion over prefix sets (``"auto"``, the default, for these
slate sizes) or Rao-Blackwellised Monte Carlo with ``mc_samples`` prefixes (``"mc"``). Either way every trial also
draws the logging policy's Monte Carlo marginals and reports their error on the logged items at positions > 0:
``mc_rel_se`` (the median relative standard error the MC estimate reports) and, when the estimators use exact
marginals, ``mc_rel_err`` (the median relative error against them, measured);
``dm`` with a reward model fitted on the log (:func:`fit_reward_model`: one logistic regression of a click at a
position on the candidate's features, the user's observable features and their profile x embedding interaction, with
an intercept per position; a slate's value is the sum over its positions, and the target's value the sum over
positions and candidates of its marginals x the model); ``dr`` = DM plus the slate-weighted residual of the logged
slate. The position-based and model-based estimators assume a click at a position depends on that position's item
only; the world's multinomial-logit choice makes the items of a slate compete, so both are biased here by design.

Per (regime, log size, seed, target, estimator) one row in ``DIR/ope.csv``; per (regime, log size, target,
estimator) the bias, the standard deviation and the RMSE of ``estimate - truth`` over seeds and the relative RMSE
(RMSE / mean |truth|) in ``DIR/ope_summary.json`` and ``DIR/ope.md``, also pooled over targets (mean |bias|, root
mean square of the sds and RMSEs, mean relative RMSE); ``DIR/ope_rmse.png``: the pooled RMSE against the log size per
estimator, log-log, one panel per regime. :func:`run_benchmark` and :func:`ope_trial` are the plain functions behind
the CLI. ``--obd`` runs the Open Bandit Dataset check instead (:func:`obd_check`, ``DIR/obd.md``).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.decision.stochastic import MARGINAL_METHODS, EpsilonGreedy, Marginals, PlackettLuce, SlatePolicy
from envs.config import WORLD_SIZES, ShiftConfig, WorldConfig, world_size
from envs.obd import load_obd
from envs.reward import ResponseReward
from envs.sessions import ObservationLayout, SessionBatch
from envs.validation import ConfigError, check_choice, check_int, check_range
from envs.world import World
from experiments.plot import json_safe, use_agg
from rewards.ope import ESTIMATORS, Estimate, dm, dr, ips, slate_dm, slate_dr, slate_pbm, snips

__all__ = ["C9_CLAIMS", "REGIMES", "SHIFTS", "TARGETS", "LinearScorer", "OPESettings", "PolicyLog", "RewardModel",
           "estimate_target", "fit_reward_model", "main", "obd_check", "ope_trial", "run_benchmark", "run_policy",
           "suite_metrics", "summarise", "write_outputs", "write_suite_runs"]

log = logging.getLogger(__name__)

REGIMES = ("stationary", "shift")
SHIFTS = ("topic_shock", "taste")


@dataclass(frozen=True)
class LinearScorer:
    """A recommender's score of each candidate from observables only: ``affinity * <profile, embedding> + quality *
    quality + popularity * popularity + freshness * freshness`` (the observation's columns, ``ObservationLayout``)."""

    affinity: float = 4.0
    quality: float = 2.0
    popularity: float = 1.0
    freshness: float = 0.0

    def __call__(self, user: np.ndarray, candidates: np.ndarray, layout: ObservationLayout) -> np.ndarray:
        """(B, C) scores from ``obs["user"]`` (B, U) and ``obs["candidates"]`` (B, C, F)."""
        profile = user[:, layout.user_profile].astype(np.float64)
        s = self.affinity * np.einsum("bcd,bd->bc", candidates[..., layout.item_embedding].astype(np.float64), profile)
        for name in ("quality", "popularity", "freshness"):
            weight = getattr(self, name)
            if weight:
                s += weight * candidates[..., layout.item(name)]
        return s


RELEVANCE = LinearScorer()  # the logging policy's score, and every target's but ``popular``'s
POPULARITY = LinearScorer(affinity=1.0, quality=0.5, popularity=4.0)  # a popularity-heavy ranker

# name -> (the target's policy given the settings, its scorer); "logging" is the logging policy itself (on-policy)
TARGETS: dict[str, Callable[[OPESettings], tuple[SlatePolicy, LinearScorer]]] = {
    "logging": lambda s: (PlackettLuce(s.logging_temperature), RELEVANCE),
    "pl_t0.5": lambda s: (PlackettLuce(0.5), RELEVANCE),
    "pl_t0.25": lambda s: (PlackettLuce(0.25), RELEVANCE),
    "greedy": lambda s: (PlackettLuce(0.0), RELEVANCE),
    "eps_greedy": lambda s: (EpsilonGreedy(0.2), RELEVANCE),
    "popular": lambda s: (PlackettLuce(0.5), POPULARITY),
}


@dataclass
class OPESettings:
    """What the benchmark runs (validated at construction, before any simulation)."""

    log_sizes: tuple[int, ...] = (500, 2000, 8000)  # requests per log (rounded to a multiple of ``steps``)
    seeds: int = 20  # seeds 0..seeds-1 per (regime, log size)
    regimes: tuple[str, ...] = REGIMES
    targets: tuple[str, ...] = ("pl_t0.5", "pl_t0.25", "greedy", "popular")
    world: str = "tiny"  # a size of envs.config.WORLD_SIZES
    shift: str = "topic_shock"  # the shift regime's shift (SHIFTS)
    shift_day: int = 1  # the day at whose start it fires: inside the log's steps / steps_per_day days
    steps: int = 20  # steps per log (each serves every slot once)
    num_candidates: int = 10
    slate_size: int = 3
    logging_temperature: float = 1.0
    marginals: str = "auto"  # Plackett-Luce marginals: MARGINAL_METHODS ("auto": exact for small slates)
    mc_samples: int = 256  # prefixes per request for Monte Carlo marginals (the estimators' with "mc"; the diagnostic)
    max_session_steps: int = 50
    ridge: float = 1.0  # the reward model's L2 penalty

    def __post_init__(self) -> None:
        self.log_sizes = tuple(self.log_sizes)
        self.regimes = tuple(self.regimes)
        self.targets = tuple(self.targets)
        if not self.log_sizes:
            raise ConfigError("`log_sizes` must name at least one log size (got none)")
        check_int("seeds", self.seeds, 1, 10_000)
        check_choice("world", self.world, list(WORLD_SIZES))
        check_choice("shift", self.shift, SHIFTS)
        check_int("steps", self.steps, 1, 100_000)
        check_int("num_candidates", self.num_candidates, 2, WORLD_SIZES[self.world]["num_items"])
        check_int("slate_size", self.slate_size, 1, self.num_candidates)
        check_range("logging_temperature", self.logging_temperature, 0.0, 1000.0, low_inclusive=False)
        check_choice("marginals", self.marginals, MARGINAL_METHODS)
        check_int("mc_samples", self.mc_samples, 2, 100_000)
        check_int("max_session_steps", self.max_session_steps, 1)
        check_range("ridge", self.ridge, 0.0, 1e6)
        if not self.regimes or not self.targets:
            raise ConfigError(f"`regimes` and `targets` must each name at least one (got {self.regimes}, {self.targets})")
        for regime in self.regimes:
            check_choice("regimes", regime, REGIMES)
        for name in self.targets:
            check_choice("targets", name, list(TARGETS))
        users = WORLD_SIZES[self.world]["num_users"]
        for n in self.log_sizes:
            check_int("log_sizes", n, self.steps, self.steps * users)
        days = self.steps / WORLD_SIZES[self.world]["steps_per_day"]
        if "shift" in self.regimes:
            check_int("shift_day", self.shift_day, 1)
            if self.shift_day >= days:
                raise ConfigError(f"`shift_day` must be < the log's days (steps / steps_per_day = {days:g}) so that the "
                                  f"log straddles the shift (got {self.shift_day}); lower it or raise `steps`")

    def slots(self, log_size: int) -> int:
        """Concurrent sessions of a log of ``log_size`` requests: ``round(log_size / steps)``."""
        return max(1, round(log_size / self.steps))


def world_config(settings: OPESettings, regime: str) -> WorldConfig:
    """The world of ``regime``: the ``settings.world`` size, with the shift at ``shift_day`` in the ``shift`` regime."""
    check_choice("regime", regime, REGIMES)
    shifts: list[ShiftConfig] = []
    if regime == "shift":
        if settings.shift == "topic_shock":
            shifts = [ShiftConfig(kind="topic_shock", day=settings.shift_day, topic=0, strength=1.0)]
        else:  # every segment now weighs popularity heavily: the popularity-heavy target gains
            shifts = [ShiftConfig(kind="taste", day=settings.shift_day, param="popularity_sensitivity", value=3.0)]
    return WorldConfig(**world_size(settings.world), shifts=shifts)


def _rng(seed: int, *names: str | int) -> np.random.Generator:
    """A generator keyed by the seed and names (a policy's, a purpose's): independent of what else a run draws."""
    keys = [int(seed)] + [zlib.crc32(n.encode()) if isinstance(n, str) else int(n) for n in names]
    return np.random.default_rng(keys)


@dataclass
class PolicyLog:
    """One policy's run: per request the observation, the slate and the response (arrays over ``n`` requests)."""

    user: np.ndarray  # (n, U) float32 obs["user"]
    candidates: np.ndarray  # (n, C, F) float32 obs["candidates"]
    slate: np.ndarray  # (n, K) int64 candidate indices, in slate order
    click: np.ndarray  # (n, K) float64
    expected_clicks: np.ndarray  # (n,) float64 1 - P(no click)
    day: np.ndarray  # (n,) float64

    @property
    def n(self) -> int:
        return len(self.slate)

    @property
    def reward(self) -> np.ndarray:
        """Clicks per request."""
        return self.click.sum(axis=1)


def run_policy(cfg: WorldConfig, seed: int, policy: SlatePolicy, scorer: LinearScorer, slots: int, steps: int,
               settings: OPESettings, rng: np.random.Generator) -> PolicyLog:
    """Serve ``slots`` sessions for ``steps`` steps of a world of ``seed`` (world and traffic) with ``policy`` over
    ``scorer``'s scores; slates are drawn with ``rng``. A session that ends is replaced by a new one at once."""
    world = World(cfg, seed=seed, traffic_seed=seed)
    layout = ObservationLayout.of(cfg)
    batch = SessionBatch(world, slots, settings.num_candidates, settings.slate_size, ResponseReward(),
                         settings.max_session_steps)
    every = np.arange(slots)
    batch.start(every)
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "candidates", "slate", "click", "expected", "day")}
    for _ in range(steps):
        obs = batch.observe()
        slate = policy.sample(scorer(obs["user"], obs["candidates"], layout), settings.slate_size, rng)
        result = batch.serve(every, slate)
        parts["user"].append(np.array(obs["user"]))
        parts["candidates"].append(np.array(obs["candidates"]))
        parts["slate"].append(slate)
        parts["click"].append(result.response.click.astype(np.float64))
        parts["expected"].append(result.response.expected_clicks.astype(np.float64))
        parts["day"].append(np.full(slots, world.now))
        ended = every[result.terminated | result.truncated]
        batch.start(ended)
        world.tick()
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return PolicyLog(cat["user"], cat["candidates"], cat["slate"].astype(np.int64), cat["click"], cat["expected"],
                     cat["day"])


# ---------------------------------------------------------------------------------------------- the reward model
@dataclass(frozen=True)
class RewardModel:
    """``P(click at position k | candidate c) = sigmoid(phi(x, c) . beta + b_k)``."""

    beta: np.ndarray  # (P,)
    position: np.ndarray  # (K,)

    def q(self, phi: np.ndarray) -> np.ndarray:
        """(n, K, C) the modelled click probability of every candidate at every position, from ``phi`` (n, C, P)."""
        return _sigmoid((phi @ self.beta)[:, None, :] + self.position[None, :, None])


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -50.0, 50.0)))


def features(user: np.ndarray, candidates: np.ndarray, layout: ObservationLayout) -> np.ndarray:
    """(n, C, P) the reward model's inputs: the item's features, profile x embedding (per dimension), their sum, and
    the user's observable features other than the profile."""
    user = user.astype(np.float64)
    cand = candidates.astype(np.float64)
    profile = user[:, layout.user_profile]
    inter = cand[..., layout.item_embedding] * profile[:, None, :]
    rest = np.delete(user, np.arange(user.shape[1])[layout.user_profile], axis=1)
    n, c, _ = cand.shape
    return np.concatenate([cand, inter, inter.sum(axis=2, keepdims=True), np.broadcast_to(rest[:, None], (n, c, rest.shape[1]))],
                          axis=2)


def fit_reward_model(phi: np.ndarray, slate: np.ndarray, click: np.ndarray, ridge: float = 1.0,
                     iterations: int = 20) -> RewardModel:
    """Logistic regression (Newton's method, L2 penalty ``ridge`` on ``beta``) of the click at each logged position
    on the logged candidate's ``phi`` and a per-position intercept."""
    n, k = slate.shape
    x = np.take_along_axis(phi, slate[..., None], axis=1).reshape(n * k, -1)  # (n K, P): the logged candidates
    x = np.concatenate([x, np.tile(np.eye(k), (n, 1))], axis=1)
    y = click.reshape(n * k)
    p_dim = phi.shape[2]
    penalty = np.r_[np.full(p_dim, ridge), np.zeros(k)]
    theta = np.zeros(x.shape[1])
    theta[p_dim:] = math.log(max(y.mean(), 1e-6) / max(1 - y.mean(), 1e-6))
    for _ in range(iterations):
        p = _sigmoid(x @ theta)
        grad = x.T @ (p - y) + penalty * theta
        hess = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-7:  # Newton: about 5 iterations here
            break
    return RewardModel(theta[:p_dim], theta[p_dim:])


# ---------------------------------------------------------------------------------------------- the estimators
def estimate_target(logged: PolicyLog, logging: SlatePolicy, log_scores: np.ndarray, log_marginals: Marginals,
                    target: SlatePolicy, target_scores: np.ndarray, q_k: np.ndarray, mc_samples: int,
                    rng: np.random.Generator, method: str = "auto") -> tuple[dict[str, Estimate | None], dict[str, float]]:
    """Every estimator's value of ``target`` from the log (None where it is undefined: SNIPS without a logged slate the
    target could show; the slate estimator where a Monte Carlo logging marginal of a logged item is 0), and
    diagnostics: the slate weights' effective sample size and the share of logged slates the target could show."""
    k = logged.slate.shape[1]
    pscore = np.exp(logging.log_prob(log_scores, logged.slate))
    target_prob = np.exp(target.log_prob(target_scores, logged.slate))
    marg = target.marginals(target_scores, k, rng, mc_samples, method)
    reward = logged.reward
    out: dict[str, Estimate | None] = {
        "ips": ips(reward, pscore, target_prob),
        "dm": slate_dm(q_k, marg.prob),
        "dr": slate_dr(reward, logged.slate, pscore, target_prob, q_k, marg.prob),
    }
    for name, call in (("snips", lambda: snips(reward, pscore, target_prob)),
                       ("slate_pbm", lambda: slate_pbm(logged.click, log_marginals.of(logged.slate), marg.of(logged.slate)))):
        try:
            out[name] = call()
        except ConfigError as exc:  # SNIPS: 0 / 0 weights; slate_pbm: a logged item's MC marginal was 0
            log.warning("%s undefined on this log: %s", name, exc)
            out[name] = None
    w = target_prob / pscore
    ess = float(w.sum() ** 2 / (w**2).sum()) if w.any() else 0.0
    return {name: out[name] for name in ESTIMATORS}, {"ess": ess, "support": float((target_prob > 0).mean())}


def ope_trial(settings: OPESettings, regime: str, log_size: int, seed: int) -> dict[str, Any]:
    """One log of the logging policy and one twin run per target; every estimator's value of each target and its
    truth. Returns ``{"regime", "log_size", "seed", "n", "logging_value", "mc_rel_se", "mc_rel_err", "targets": {name:
    {"truth", "truth_se", "ess", "support", "estimates": {estimator: Estimate | None}}}}``: ``truth_se`` is the spread
    of the twin's expected clicks over its requests / sqrt(n), ``ess`` the slate weights' effective sample size."""
    check_choice("regime", regime, settings.regimes)
    check_int("seed", seed, 0)
    cfg = world_config(settings, regime)
    layout = ObservationLayout.of(cfg)
    slots = settings.slots(log_size)
    logging_policy, logging_scorer = TARGETS["logging"](settings)
    logged = run_policy(cfg, seed, logging_policy, logging_scorer, slots, settings.steps, settings, _rng(seed, "logging"))
    k, mc = settings.slate_size, settings.mc_samples
    log_scores = logging_scorer(logged.user, logged.candidates, layout)
    log_marginals = logging_policy.marginals(log_scores, k, _rng(seed, "mc", "logging"), mc, settings.marginals)
    mc_rel_se, mc_rel_err = _mc_error(logging_policy, log_scores, logged.slate, log_marginals, mc, _rng(seed, "mc-check"))
    phi = features(logged.user, logged.candidates, layout)
    q_k = fit_reward_model(phi, logged.slate, logged.click, settings.ridge).q(phi)
    out: dict[str, Any] = {"regime": regime, "log_size": log_size, "seed": seed, "n": logged.n,
                           "logging_value": float(logged.expected_clicks.mean()), "mc_rel_se": mc_rel_se,
                           "mc_rel_err": mc_rel_err, "targets": {}}
    for name in settings.targets:
        policy, scorer = TARGETS[name](settings)
        twin = run_policy(cfg, seed, policy, scorer, slots, settings.steps, settings, _rng(seed, name))
        estimates, diag = estimate_target(logged, logging_policy, log_scores, log_marginals, policy,
                                          scorer(logged.user, logged.candidates, layout), q_k, mc, _rng(seed, "mc", name),
                                          settings.marginals)
        out["targets"][name] = {"truth": float(twin.expected_clicks.mean()),
                                "truth_se": float(twin.expected_clicks.std(ddof=1) / math.sqrt(twin.n)),
                                "estimates": estimates, **diag}
    return out


def _mc_error(policy: SlatePolicy, scores: np.ndarray, slate: np.ndarray, used: Marginals, samples: int,
              rng: np.random.Generator) -> tuple[float, float]:
    """The Monte Carlo marginals' error on the logged items at positions > 0: the median relative standard error they
    report, and the median relative error against ``used`` when those are exact (nan otherwise)."""
    if slate.shape[1] < 2:
        return 0.0, 0.0
    mc = policy.marginals(scores, slate.shape[1], rng, samples, "mc")
    value = mc.of(slate)[:, 1:]
    se = np.take_along_axis(mc.se, slate[..., None], axis=2)[..., 0][:, 1:]
    rel_se = float(np.median(se[value > 0] / value[value > 0])) if (value > 0).any() else math.nan
    if (used.se != 0).any():  # the estimators' own marginals are Monte Carlo: nothing exact to compare with
        return rel_se, math.nan
    exact = used.of(slate)[:, 1:]
    return rel_se, float(np.median(np.abs(value - exact) / exact))


def trial_rows(trial: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (target, estimator) of a trial."""
    rows = []
    for name, t in trial["targets"].items():
        for est, e in t["estimates"].items():
            value = e.value if e is not None else math.nan
            rows.append({"regime": trial["regime"], "log_size": trial["log_size"], "n": trial["n"], "seed": trial["seed"],
                         "target": name, "estimator": est, "estimate": value,
                         "se": e.se if e is not None else math.nan, "truth": t["truth"], "truth_se": t["truth_se"],
                         "error": value - t["truth"], "logging_value": trial["logging_value"], "ess": t["ess"],
                         "support": t["support"], "mc_rel_se": trial["mc_rel_se"],
                         "mc_rel_err": trial["mc_rel_err"]})
    return rows


def run_benchmark(settings: OPESettings) -> pd.DataFrame:
    """Every (regime, log size, seed) trial: one row per (regime, log size, seed, target, estimator)."""
    rows: list[dict[str, Any]] = []
    for regime in settings.regimes:
        for size in settings.log_sizes:
            t = time.perf_counter()
            for seed in range(settings.seeds):
                rows.extend(trial_rows(ope_trial(settings, regime, size, seed)))
            log.info("%s, log size %d: %d seeds in %.1f s", regime, size, settings.seeds, time.perf_counter() - t)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- the summary
def summarise(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (regime, log size, target, estimator): ``bias`` (mean error), ``sd`` (of the error over seeds), ``rmse``,
    ``rel_rmse`` (RMSE / mean |truth|), ``valid`` (seeds with an estimate); and the same pooled over targets (mean
    |bias|, root mean square of sd and rmse, mean rel_rmse)."""
    keys = ["regime", "log_size", "target", "estimator"]

    def stats(g: pd.DataFrame) -> pd.Series:
        err = g["error"].dropna()
        m = len(err)
        return pd.Series({"n": int(g["n"].iloc[0]), "truth": g["truth"].mean(), "bias": err.mean() if m else math.nan,
                          "sd": err.std(ddof=1) if m > 1 else math.nan,
                          "rmse": math.sqrt((err**2).mean()) if m else math.nan,
                          "rel_rmse": math.sqrt((err**2).mean()) / g["truth"].abs().mean() if m else math.nan,
                          "valid": m, "seeds": len(g)})

    per_target = frame.groupby(keys, sort=False)[[c for c in frame.columns if c not in keys]].apply(stats).reset_index()
    per_target = per_target.astype({"n": int, "valid": int, "seeds": int})
    grouped = per_target.groupby(["regime", "log_size", "estimator"], sort=False)
    pooled = grouped.agg(n=("n", "first"), abs_bias=("bias", lambda b: b.abs().mean()),
                         sd=("sd", lambda s: math.sqrt((s**2).mean())), rmse=("rmse", lambda r: math.sqrt((r**2).mean())),
                         rel_rmse=("rel_rmse", "mean"), valid=("valid", "sum"), seeds=("seeds", "sum")).reset_index()
    return per_target, pooled


def _markdown(table: pd.DataFrame, columns: Sequence[str]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "nan" if math.isnan(v) else f"{v:.4f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for _, row in table.iterrows()]
    return "\n".join(lines)


def figure(pooled: pd.DataFrame, path: Path) -> None:
    """RMSE (pooled over targets) against the log size per estimator, log-log, one panel per regime."""
    use_agg()
    import matplotlib.pyplot as plt

    regimes = list(dict.fromkeys(pooled["regime"]))
    fig, axes = plt.subplots(1, len(regimes), figsize=(5.5 * len(regimes), 4.2), sharey=True, squeeze=False)
    for ax, regime in zip(axes[0], regimes):
        part = pooled[pooled["regime"] == regime]
        for est in ESTIMATORS:
            line = part[part["estimator"] == est].sort_values("n")
            ax.plot(line["n"], line["rmse"], marker="o", label=est)
        ax.set_xscale("log")
        ax.set_yscale("log")
        sizes = sorted(part["n"].unique())
        ax.set_xticks(sizes, [f"{int(n):,}" for n in sizes])
        ax.minorticks_off()
        ax.set_xlabel("logged requests")
        ax.set_title(f"{regime} world")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("RMSE of clicks per request (pooled over targets)")
    axes[0][-1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(frame: pd.DataFrame, settings: OPESettings, out: Path, seconds: float) -> dict[str, Path]:
    """``ope.csv``, ``ope_summary.json``, ``ope.md`` and ``ope_rmse.png`` under ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    per_target, pooled = summarise(frame)
    paths = {"csv": out / "ope.csv", "summary": out / "ope_summary.json", "markdown": out / "ope.md",
             "figure": out / "ope_rmse.png"}
    frame.to_csv(paths["csv"], index=False)
    mc, mc_err = float(frame["mc_rel_se"].median()), float(frame["mc_rel_err"].median())
    summary = {"settings": asdict(settings), "seconds": round(seconds, 1), "mc_rel_se_median": mc, "mc_rel_err_median": mc_err,
               "pooled": pooled.to_dict("records"), "per_target": per_target.to_dict("records")}
    paths["summary"].write_text(json.dumps(json_safe(summary), indent=1))
    s = settings
    text = [
        "# Off-policy evaluation benchmark", "",
        f"Logging policy: Plackett-Luce at temperature {s.logging_temperature:g} over a linear score of observables; "
        f"{s.num_candidates} candidates, slates of {s.slate_size}; world `{s.world}`, {s.steps} steps per log; shift "
        f"regime: `{s.shift}` at day {s.shift_day}. Truth: each target run on a twin world (same seed and traffic "
        f"seed, same requests), mean expected clicks per request. {s.seeds} seeds per cell; error = estimate - truth. "
        f"Plackett-Luce marginals (`{s.marginals}`): exact at position 0; after it "
        + ("Monte Carlo" if math.isnan(mc_err) else "exact (the recursion over prefix sets)")
        + f". Monte Carlo marginals of the logging policy with {s.mc_samples} Rao-Blackwellised prefixes, on the logged "
        f"items at positions > 0: median relative standard error {mc:.2%} (reported), median relative error against "
        f"the exact ones {mc_err:.2%} (measured; nan when the estimators use MC). Run time {seconds:.0f} s.",
        "", "## Pooled over the targets " + ", ".join(f"`{t}`" for t in s.targets), "",
        "abs_bias: mean over targets of |bias|; sd, rmse: root mean square over targets; rel_rmse: mean of RMSE / |truth|.",
        "", _markdown(pooled, ["regime", "n", "estimator", "abs_bias", "sd", "rmse", "rel_rmse", "valid"]), "",
        "## Per target", "", "valid: seeds with an estimate (SNIPS is undefined when no logged slate is one the target "
        "could show).", "", _markdown(per_target, ["regime", "n", "target", "estimator", "truth", "bias", "sd", "rmse",
                                                  "rel_rmse", "valid"]), "",
    ]
    paths["markdown"].write_text("\n".join(text))
    figure(pooled, paths["figure"])
    return paths


# ---------------------------------------------------------------------------------------------- the suite's C9
# Claim C9 of the ablation suite (``python -m experiments.ablations --only C9``): which estimator to trust, at which
# log size, measured against the twins' truth. The metric is an estimator's squared error per seed, averaged over the
# targets, at the smallest or the largest log size of the run (500 and 8,000 requests by default); each estimator is an
# "arm" and the seeds pair them (every estimator reads the same logs). ``min_effect``: a fifth of IPS's mean squared
# error at that size in the default benchmark (0.0146 at 500, 0.0010 at 8,000), or of DM's (0.0004) for DR vs DM.
C9_CLAIMS: list[dict[str, Any]] = [
    {"name": "C9-dr-vs-ips-small", "metric": "ope/sq_error/stationary/smallest", "a": ["ope_dr"], "b": ["ope_ips"],
     "direction": "less", "min_effect": 0.003,
     "description": "On the smallest logs, DR's squared error is below IPS's (its reward model absorbs variance)."},
    {"name": "C9-dr-vs-ips-large", "metric": "ope/sq_error/stationary/largest", "a": ["ope_dr"], "b": ["ope_ips"],
     "direction": "less", "min_effect": 0.0002,
     "description": "On the largest logs too, DR's squared error is below IPS's."},
    {"name": "C9-slate-vs-ips-small", "metric": "ope/sq_error/stationary/smallest", "a": ["ope_slate_pbm"],
     "b": ["ope_ips"], "direction": "less", "min_effect": 0.003,
     "description": "On the smallest logs, the position-based slate estimator's squared error is below whole-slate "
                    "IPS's (its bias, the slate's items compete, costs less than IPS's variance)."},
    {"name": "C9-dr-vs-dm-large", "metric": "ope/sq_error/stationary/largest", "a": ["ope_dr"], "b": ["ope_dm"],
     "direction": "less", "min_effect": 0.0001,
     "description": "On the largest logs, DR's squared error is below DM's (DM's bias no longer hides behind DR's "
                    "variance)."},
    {"name": "C9-shift-dr-vs-ips", "metric": "ope/sq_error/shift/largest", "a": ["ope_dr"], "b": ["ope_ips"],
     "direction": "less", "min_effect": 0.0002,
     "description": "When the log straddles a shift, DR's squared error is still below IPS's on the largest logs."},
]


def suite_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (estimator, seed): ``ope/sq_error/<regime>/<smallest|largest>`` and ``ope/abs_error/...``, the squared and
    absolute error averaged over the targets at the run's smallest and largest log size (nan where undefined)."""
    sizes = sorted(frame["log_size"].unique())
    which = {sizes[0]: "smallest", sizes[-1]: "largest"}
    sub = frame[frame["log_size"].isin(which)].assign(size=lambda f: f["log_size"].map(which),
                                                       sq=lambda f: f["error"] ** 2, ab=lambda f: f["error"].abs())
    per = sub.groupby(["estimator", "seed", "regime", "size"])[["sq", "ab"]].mean().reset_index()
    rows: dict[tuple[str, int], dict[str, float]] = {}
    for r in per.itertuples(index=False):
        row = rows.setdefault((r.estimator, int(r.seed)), {})
        row[f"ope/sq_error/{r.regime}/{r.size}"] = float(r.sq)
        row[f"ope/abs_error/{r.regime}/{r.size}"] = float(r.ab)
    return pd.DataFrame([{"arm": f"ope_{est}", "seed": seed, **m} for (est, seed), m in rows.items()])


def write_suite_runs(frame: pd.DataFrame, settings: OPESettings, out: Path) -> Path:
    """The ablation suite's layout under ``out/runs``: one folder per (estimator, seed) with ``metrics.csv`` (one
    window: :func:`suite_metrics`), ``config.yaml`` (the settings and :data:`C9_CLAIMS`) and ``summary.json``, so
    ``experiments.report`` evaluates C9 like any other claim."""
    import yaml

    runs = out / "runs"
    metrics = suite_metrics(frame)
    for i, row in enumerate(metrics.to_dict("records")):
        d = runs / f"{i}-{row['arm']}-s{row['seed']}"
        d.mkdir(parents=True, exist_ok=True)
        table = pd.DataFrame([{"experiment": "c9_ope", "controller": "ope", "replicate": 0, "step": 0, "day": 0.0, **row}])
        table.to_csv(d / "metrics.csv", index=False)
        config = {"name": "c9_ope", "arm": row["arm"], "seed": int(row["seed"]), "ope": json_safe(asdict(settings)),
                  "claims": C9_CLAIMS}
        (d / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        (d / "summary.json").write_text(json.dumps({"arm": row["arm"], "seed": int(row["seed"])}))
    return runs


# ---------------------------------------------------------------------------------------------- Open Bandit Dataset
def obd_check(campaign: str = "all", folder: Path | str | None = None, prior: float = 10.0) -> dict[str, Any]:
    """The classic Open Bandit Dataset check: the value (click rate per impression) of the Bernoulli-TS policy estimated
    from the uniform-random policy's logs, against the BTS logs' own mean click rate (their on-policy "ground truth").

    OBD logs impressions (an item at one of 3 positions), not linkable slates, so each row is a round whose action is
    the (item, position) pair; the random policy's ``propensity_score`` is 1/80 (the item's probability at that
    position). BTS's action probabilities per context are not in the random log (OBP estimates them by Monte Carlo
    from BTS's Beta posteriors, which the sample does not carry), so the target here is context-free: BTS's empirical
    per-(position, item) action frequencies in its own log. IPS and SNIPS weigh each random-log row by that frequency
    / (1/80); DM and DR use a reward model per (position, item): its click rate in the random log shrunk toward the
    position's rate with ``prior`` pseudo-impressions (fitted on the same log, no cross-fitting); per position, the
    slate estimator on that position's rows (with one position it is IPS) against BTS's click rate there.
    """
    rnd, bts = load_obd("random", campaign, folder), load_obd("bts", campaign, folder)
    freq = bts.action_frequencies()  # (positions, items): the target's marginal probability per position
    r = rnd.log
    pos, item = r["position"].to_numpy(), r["item_id"].to_numpy()
    click, pscore = r["click"].to_numpy(np.float64), r["propensity_score"].to_numpy(np.float64)
    target_prob = freq[pos, item]
    k, a = freq.shape
    clicks, shows = np.zeros((k, a)), np.zeros((k, a))
    np.add.at(clicks, (pos, item), click)
    np.add.at(shows, (pos, item), 1.0)
    rate_k = clicks.sum(axis=1, keepdims=True) / shows.sum(axis=1, keepdims=True)
    q = (clicks + prior * rate_k) / (shows + prior)  # (positions, items)
    estimates = [ips(click, pscore, target_prob), snips(click, pscore, target_prob), dm(q[pos], freq[pos]),
                 dr(click, item, pscore, q[pos], freq[pos])]
    truth = bts.log["click"].to_numpy(np.float64)
    per_position = []
    for p in range(k):
        rows = pos == p
        e = slate_pbm(click[rows, None], pscore[rows, None], target_prob[rows, None])
        t = truth[bts.log["position"].to_numpy() == p]
        per_position.append({"position": p + 1, "estimate": e.value, "se": e.se, "truth": float(t.mean()),
                             "truth_se": float(t.std(ddof=1) / math.sqrt(len(t))), "rows": int(rows.sum())})
    return {"campaign": campaign, "random_rows": len(r), "bts_rows": len(bts.log), "random_click_rate": float(click.mean()),
            "truth": float(truth.mean()), "truth_se": float(truth.std(ddof=1) / math.sqrt(len(truth))),
            "estimates": {e.name: {"value": e.value, "se": e.se} for e in estimates}, "per_position": per_position,
            "support": float((target_prob > 0).mean()), "num_items": int(a), "num_positions": int(k), "prior": prior}


def write_obd(result: dict[str, Any], out: Path) -> dict[str, Path]:
    """``obd.md`` and ``obd.json`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    truth, se = result["truth"], result["truth_se"]
    rows = ["| estimator | estimate | se | truth (BTS on-policy) | relative error "
            "| z = (est - truth) / sqrt(se^2 + se_truth^2) |",
            "|---|---|---|---|---|---|"]
    for name, e in result["estimates"].items():
        z = (e["value"] - truth) / math.sqrt(e["se"] ** 2 + se**2)
        rows.append(f"| {name} | {e['value']:.5f} | {e['se']:.5f} | {truth:.5f} +- {se:.5f} | "
                    f"{(e['value'] - truth) / truth:+.1%} | {z:+.2f} |")
    pos = ["| position | slate_pbm (= IPS on that position's rows) | se | BTS click rate | se |", "|---|---|---|---|---|"]
    pos += [f"| {p['position']} | {p['estimate']:.5f} | {p['se']:.5f} | {p['truth']:.5f} | {p['truth_se']:.5f} |"
            for p in result["per_position"]]
    text = ["# Open Bandit Dataset: Bernoulli TS from the uniform-random logs", "",
            f"Campaign `{result['campaign']}` of the sample in the obp wheel: {result['random_rows']} random-policy rows "
            f"(click rate {result['random_click_rate']:.5f}), {result['bts_rows']} BTS rows; {result['num_items']} items, "
            f"{result['num_positions']} positions.", "",
            "What was done: each logged impression is a round whose action is an (item, position) pair; the random "
            "policy's propensity of the logged item at its position is the logged `propensity_score` (1/80). The BTS "
            "target's probabilities per context are not in the random log and cannot be rebuilt from the sample (OBP "
            "derives them by Monte Carlo from BTS's Beta posteriors), so the target is context-free: BTS's empirical "
            "per-(position, item) action frequencies in its own log. That keeps IPS/SNIPS unbiased for a policy that "
            "shows items with those frequencies regardless of the user; BTS itself conditions on nothing but its "
            "posteriors, which drift over the logging period, so the substitute is close but not exact. DM/DR: a "
            "per-(position, item) click rate from the random log, shrunk toward the position's rate "
            f"({result['prior']:g} pseudo-impressions), fitted on the same log (DM's se is over rows only: it leaves "
            "out the reward model's own error). Ground truth: the BTS log's mean click rate (on-policy), "
            "itself a sample of 10,000 impressions.", "", *rows, "", "## Per position", "", *pos, ""]
    paths = {"markdown": out / "obd.md", "json": out / "obd.json"}
    paths["markdown"].write_text("\n".join(text))
    paths["json"].write_text(json.dumps(result, indent=1))
    return paths


# ---------------------------------------------------------------------------------------------- the CLI
QUICK = {"seeds": 3, "log_sizes": (300, 1200), "mc_samples": 64}


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--log-sizes must be comma-separated integers (got {text!r})") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("outputs/ope"), help="output folder (default outputs/ope)")
    parser.add_argument("--seeds", type=int, default=None, help=f"seeds per cell (default {OPESettings.seeds})")
    parser.add_argument("--log-sizes", type=_sizes, default=None, help="comma-separated log sizes (default 500,2000,8000)")
    parser.add_argument("--targets", default=None, help=f"comma-separated targets of {list(TARGETS)}")
    parser.add_argument("--shift", default=None, help=f"the shift regime's shift, one of {list(SHIFTS)}")
    parser.add_argument("--marginals", default=None, help=f"Plackett-Luce marginals, one of {list(MARGINAL_METHODS)}")
    parser.add_argument("--quick", action="store_true", help=f"a smoke run: {QUICK}")
    parser.add_argument("--obd", action="store_true", help="run the Open Bandit Dataset check instead (DIR/obd.md)")
    parser.add_argument("--suite", action="store_true", help="also write DIR/runs in the ablation suite's layout "
                        "(claim C9: experiments.ablations --only C9)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    t = time.perf_counter()
    if args.obd:
        try:
            paths = write_obd(obd_check(), args.out)
        except ConfigError as exc:
            parser.error(str(exc))
        print(f"Open Bandit Dataset check in {time.perf_counter() - t:.1f} s: " + ", ".join(str(p) for p in paths.values()))
        return
    kwargs: dict[str, Any] = dict(QUICK) if args.quick else {}
    for key in ("seeds", "log_sizes", "shift", "marginals"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if args.targets is not None:
        kwargs["targets"] = tuple(v.strip() for v in args.targets.split(",") if v.strip())
    try:
        settings = OPESettings(**kwargs)
    except ConfigError as exc:
        parser.error(str(exc))
    frame = run_benchmark(settings)
    seconds = time.perf_counter() - t
    paths = write_outputs(frame, settings, args.out, seconds)
    if args.suite:
        paths["runs"] = write_suite_runs(frame, settings, args.out)
    print(f"OPE benchmark in {seconds:.1f} s: " + ", ".join(str(p) for p in paths.values()))


if __name__ == "__main__":
    main()
