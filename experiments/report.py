"""The claim-by-claim report of a (multi)run: effects across seeds with 95% t-intervals, verdicts and figures.

``python -m experiments.report <run or multirun dir> --out report.md`` reads every run's ``metrics.parquet``
(or ``metrics.csv``) and the claims of its ``config.yaml`` (declared in ``conf/experiment/*.yaml``, see
:class:`~experiments.config.ClaimConfig`). Per claim: the metric is averaged per seed over windows
of the claim's ``stage`` (the evolution's, the exploit ones after it, or all), ``>= from_step``, ending on or after day
``from_day``, and over each group's arms; the effect ``a - b`` gets a 95% t-interval across seeds and a two-sided p-value,
paired by seed on the seeds both groups ran (when at least 2 are common; seeds only one group ran are left out: an
arm extended by more seeds does not turn its claims unpaired) else Welch's interval over all of them.
:data:`VERDICT_RULE`: the verdict is ``held`` when the interval lies wholly on the claimed side of 0,
``contradicted`` when it lies wholly on the other side or wholly short of the claim's ``min_effect`` (a gain that
large is ruled out), ``inconclusive`` otherwise (``underpowered`` too when the power to detect the claim's
``min_effect`` is < 0.8), and ``untestable`` when an arm, the metric or a second seed is missing; whether the
effect is beyond ``min_effect`` (the smallest effect worth detecting) is reported apart. Each claim also gets its
MDE at 80% power, the power at ``min_effect``, a bootstrap interval when there are few seeds, an A/A noise floor
(its baseline group against itself, :class:`NoiseFloor`) and the verdicts after Holm's and Benjamini-Hochberg's
adjustment over the report's claims (:func:`adjust`). The figures of :mod:`experiments.plot` are written next to
the report and embedded.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from envs.validation import ConfigError
from experiments.config import REPLICATE_SUFFIX, ClaimConfig
from experiments.plot import load_metrics, load_shifts, make_figures, run_dirs, run_store, run_summary, save_figures, use_agg
from rewards.outer import EXPECTED_SUFFIX
from rewards.stats import (
    benjamini_hochberg,
    bootstrap_ci,
    holm,
    mde,
    mean_ci,
    mean_test,
    power_at,
    t_cdf,
    t_quantile,
    welch_interval,
)

__all__ = ["ALPHA", "BOOTSTRAP_BELOW", "POWER", "VERDICT_RULE", "Adjustment", "ClaimResult", "NoiseFloor", "adjust",
           "claim_samples", "claims_table", "dropped_seeds", "evaluate_claim", "false_alarm_line", "headroom_of", "load_claims",
           "load_warmups", "main", "noise_floor", "paired_seeds", "power_table", "render_report", "render_warmups",
           "replicates", "scope_of", "window_table", "write_report"]

log = logging.getLogger(__name__)

VERDICTS = ("held", "contradicted", "inconclusive", "untestable")
ALPHA = 0.05  # two-sided: the 95% intervals
POWER = 0.8  # the MDE's power, and the power below which an inconclusive claim is called underpowered
BOOTSTRAP_BELOW = 10  # seeds: a percentile bootstrap interval is shown next to the t-interval below this many
VERDICT_RULE = (
    "A claim says `a` beats `b` by at least its `min_effect` (the smallest effect worth detecting, in the metric's "
    "units). It **held** when the whole 95% interval of `a - b` lies on the claimed side of 0 (two-sided p < 0.05 "
    "with the effect in the claimed direction), is **contradicted** when the interval lies wholly short of "
    "`min_effect` (a gain of `min_effect` or more is ruled out: *p short* < 0.05, twice the one-sided p of the test "
    "that the effect reaches `min_effect`; *reversed* too when the interval lies wholly on the other side of 0), and is "
    "**inconclusive** otherwise (**underpowered** too when the power to detect its `min_effect` with these seeds "
    "is < 0.8: a null result that says little), **untestable** when an arm, the metric or a second seed is missing, "
    "or **untestable (no headroom)** when the claim declares a `headroom` and its reference arm (`headroom_arms`: "
    "by default the clairvoyant `oracle`; a `hindsight` arm, the best fixed config or wiring in hindsight; an oracle "
    "by the claim's own metric) beats its baseline (`static`) by less than that on the claim's metric and windows "
    "(*headroom* column: reference - baseline, mean over seeds): no arm could show the claimed gain there, so a null "
    "result would be a property of the world, not an answer. "
    "Whether the effect is as large as the claim's `min_effect` is reported apart, as *beyond min_effect*: **yes** "
    "when the interval lies wholly past it, **no** when wholly short of it (for a held claim: a significant but "
    "negligible effect), **unclear** otherwise. *Holm* and *BH* repeat the verdict with the p-values adjusted over "
    "the table's claims (family-wise error, false discovery rate): each testable claim brings its two hypotheses "
    "(no gain: `a - b` on the other side of 0; a gain of at least `min_effect`) into the family, the verdict is held "
    "when the first is rejected, contradicted when the second is, and the column shows the smaller adjusted p. "
    "*MDE80* is the effect these seeds detect with 80% power given the observed spread (with MDE80 <= `min_effect` a "
    "claim whose true effect is 0 is contradicted, or one whose effect is `min_effect` held, 80% of the time). The "
    "*A/A* columns are the noise floor, an "
    "interval that should cover 0: where the preset ran an A/A arm (`<arm>_r1`: the same arm with the system's and "
    "the controller's own randomness re-seeded, on the same world and traffic) its difference from the arm over the "
    "claim's windows, paired by seed (the arm is the claim's `b` when it has one); otherwise a placebo, `b`'s odd "
    "minus even windows. An A/A interval that excludes 0 is a *false alarm*: the report counts them (a 5%-level "
    "test raises one in ~5% of A/A comparisons; many more say the claims' intervals are too narrow)."
)


# --------------------------------------------------------------------------- claims


@dataclass
class NoiseFloor:
    """An A/A check: what the claim's test says when nothing differs (it should cover 0).

    ``kind`` ``replicate`` (a true A/A arm, ``controller.replicate``): per seed, the metric of an arm's A/A replicate
    minus the arm's own over the claim's windows, paired by seed (``pair`` names them, e.g. ``static_r1 - static``;
    the arm is the claim's ``b`` when it has a replicate, else ``a``'s, else the preset's A/A arm): the spread of
    two runs that differ only in the system's and the controller's own randomness, the noise a claim's paired
    effect must clear. ``placebo`` (no A/A arm ran): group ``b`` against itself, its odd-numbered windows of the
    claim's scope minus the even-numbered ones (a trend over windows or a bug shows here). ``effect``, its 95%
    interval and p-value are across the ``n`` seeds; ``seed_sd`` is the spread of group ``b``'s per-seed mean across
    seeds and ``mde80`` the MDE at 80% power of two independent groups of ``n`` seeds of that spread (what seeds
    alone, without pairing, leave undetectable)."""

    effect: float = math.nan
    low: float = math.nan
    high: float = math.nan
    p: float = math.nan
    n: int = 0
    seed_sd: float = math.nan
    mde80: float = math.nan
    kind: str = ""  # replicate | placebo ('' when neither could be computed)
    pair: str = ""  # the runs compared: '<arm>_r1 - <arm>' or 'b: odd - even windows'

    @property
    def false_alarm(self) -> bool:
        """The A/A interval excludes 0 (what a test at the 5% level does in 5% of A/A comparisons)."""
        return not math.isnan(self.low) and (self.low > 0 or self.high < 0)

    def as_dict(self) -> dict[str, float | int | str | bool | list[float]]:
        return {"kind": self.kind, "pair": self.pair, "effect": self.effect, "ci": [self.low, self.high], "p": self.p,
                "n": self.n, "seed_sd": self.seed_sd, "mde80": self.mde80, "false_alarm": self.false_alarm}


@dataclass
class ClaimResult:
    """A claim's effect ``a - b`` across seeds, its 95% interval, p-value, power and the verdict.

    ``sd`` is the spread behind the interval (paired: of the per-seed differences; Welch: the root mean square of
    the two groups' standard deviations), ``mde80`` the effect detected with 80% power at this ``n`` and ``sd``,
    ``n_a``/``n_b`` the groups' seeds, ``power`` the power at the claim's ``min_effect``, ``beyond_min`` whether
    the effect is beyond ``min_effect`` (``yes``, ``no``, ``unclear``), ``boot_low``/``boot_high`` a percentile
    bootstrap interval (fewer than :data:`BOOTSTRAP_BELOW` seeds), ``aa`` the A/A noise floor of group ``b``.
    ``p`` is the two-sided p-value of ``a - b = 0``; ``p_short`` twice the one-sided p-value of the test that the
    effect reaches ``min_effect`` in the claimed direction (below 0.05 exactly when the 95% interval lies wholly
    short of it: the contradicted side of :data:`VERDICT_RULE`).
    """

    claim: ClaimConfig
    verdict: str
    effect: float = math.nan
    low: float = math.nan
    high: float = math.nan
    a_mean: float = math.nan
    b_mean: float = math.nan
    n: int = 0
    paired: bool = False
    seeds: list[int] = field(default_factory=list)
    note: str = ""
    p: float = math.nan
    p_short: float = math.nan
    sd: float = math.nan
    n_a: int = 0
    n_b: int = 0
    mde80: float = math.nan
    power: float = math.nan
    beyond_min: str = ""
    boot_low: float = math.nan
    boot_high: float = math.nan
    aa: NoiseFloor = field(default_factory=NoiseFloor)
    headroom: float = math.nan  # headroom_arms[0] - headroom_arms[1] on the claim's metric and windows (mean over seeds)
    headroom_low: float = math.nan
    headroom_high: float = math.nan
    # a claim judged on an expected metric (``<key>/exp``): the same comparison on the realised ``<key>``, beside it
    realised: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # effect, 95% CI low, high

    @property
    def no_headroom(self) -> bool:
        """Untestable because the measured headroom is below the claim's ``headroom``."""
        return self.verdict == "untestable" and self.note.startswith("no headroom")

    @property
    def underpowered(self) -> bool:
        """Inconclusive with less than :data:`POWER` power to detect ``min_effect``."""
        return self.verdict == "inconclusive" and self.power < POWER

    @property
    def p_held(self) -> float:
        """Twice the one-sided p-value of the claimed direction (the two-sided ``p`` when the effect lies on the
        claimed side, 1 otherwise): below 0.05 exactly when the claim held."""
        if math.isnan(self.p):
            return math.nan
        return self.p if (self.effect > 0) == (self.claim.direction == "greater") and self.effect != 0 else 1.0

    @property
    def reversed(self) -> bool:
        """Contradicted with the whole interval on the other side of 0 (not only short of ``min_effect``)."""
        sign = 1.0 if self.claim.direction == "greater" else -1.0
        return self.verdict == "contradicted" and max(sign * self.low, sign * self.high) < 0

    @property
    def label(self) -> str:
        """The verdict in words: ``inconclusive (underpowered: power 0.23 at min_effect)``, ``contradicted
        (reversed)`` or ``contradicted (short of min_effect)`` when it is."""
        if self.verdict == "contradicted":
            return "contradicted (reversed)" if self.reversed else "contradicted (short of min_effect)"
        if self.no_headroom:
            return f"untestable (no headroom: {self.headroom:+.3g} < {self.claim.headroom:g})"
        return f"{self.verdict} (underpowered: power {self.power:.2f} at min_effect)" if self.underpowered else self.verdict

    def line(self) -> str:
        """One Markdown line stating the claim and whether it held."""
        c = self.claim
        a, b = " + ".join(c.a), " + ".join(c.b)
        sign = ">" if c.direction == "greater" else "<"
        scope = scope_of(c)
        flag = f" (underpowered: power {self.power:.2f} at min_effect)" if self.underpowered else ""
        if self.verdict == "contradicted":
            flag = " (reversed)" if self.reversed else " (short of min_effect)"
        share = f" as shares of each seed's {c.headroom_arms[0]} - {c.headroom_arms[1]} gap" if c.scale == "headroom" else ""
        head = (f"**{c.name}: {self.verdict.upper()}**{flag}: {c.metric}{share} of {a} {sign} {b} (effect a - b {sign} 0; "
                f"min_effect {c.min_effect:g})" + (f" over {scope}" if scope else ""))
        if self.verdict == "untestable":
            return f"{head}; {self.note}"
        test = "paired by seed" if self.paired else "Welch, unpaired"
        boot = "" if math.isnan(self.boot_low) else f", bootstrap [{self.boot_low:+.4g}, {self.boot_high:+.4g}]"
        if self.note:
            head = f"{head} ({self.note})"
        return (f"{head}; effect {self.effect:+.4g}, 95% CI [{self.low:+.4g}, {self.high:+.4g}] "
                f"({a} {self.a_mean:.4g} vs {b} {self.b_mean:.4g}; {test}, n={self.n} seeds); p={_fmt_p(self.p)}, "
                f"p short of min_effect={_fmt_p(self.p_short)}{boot}; "
                f"MDE80 {_fmt_g(self.mde80)}, power {_fmt_pow(self.power)} at min_effect; "
                f"beyond min_effect: {self.beyond_min}" + self._realised_text())

    def _realised_text(self) -> str:
        if math.isnan(self.realised[0]):
            return ""
        effect, low, high = self.realised
        return f"; realised (sampled clicks): {effect:+.4g} [{low:+.4g}, {high:+.4g}]"

    def as_dict(self) -> dict:
        """The numbers of the result (``summary.json``); nan where not computed."""
        return {"direction": self.claim.direction,
                "verdict": self.verdict, "label": self.label, "underpowered": self.underpowered, "effect": self.effect,
                "ci": [self.low, self.high], "p": self.p, "p_short": self.p_short, "n": self.n, "n_a": self.n_a, "n_b": self.n_b,
                "paired": self.paired,
                "sd": self.sd, "mde80": self.mde80, "min_effect": self.claim.min_effect,
                "power_at_min_effect": self.power, "beyond_min_effect": self.beyond_min,
                "bootstrap_ci": [self.boot_low, self.boot_high], "aa": self.aa.as_dict(), "note": self.note,
                "headroom": self.headroom, "headroom_ci": [self.headroom_low, self.headroom_high],
                "headroom_min": self.claim.headroom, "no_headroom": self.no_headroom,
                "realised": {"effect": self.realised[0], "ci": list(self.realised[1:])}}


def _fmt_p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.2g}" if p >= 1e-4 else "<1e-4"


def _fmt_g(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.3g}"


def _fmt_pow(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


@dataclass
class Adjustment:
    """A claim's p-value and verdict after Holm's and after Benjamini-Hochberg's adjustment over a family of claims."""

    p_holm: float
    verdict_holm: str
    p_bh: float
    verdict_bh: str


def adjust(results: Sequence[ClaimResult], alpha: float = ALPHA) -> list[Adjustment]:
    """Holm- and BH-adjusted p-values over ``results`` (untestable claims take no part) and the verdicts they give.

    Each testable claim brings two hypotheses: "no gain" (``p_held``; rejected: held) and "a gain of at least
    ``min_effect``" (``p_short``; rejected: contradicted). They exclude each other, so at most one per claim is
    true: Holm's step-down runs over all of them with Shaffer's multiplier, the number of claims with a hypothesis
    still in play (:func:`rewards.stats.holm` with ``groups``; with one hypothesis per claim, Holm's own). A claim
    is ``held`` when its first hypothesis is rejected, else ``contradicted`` when its second is, else
    ``inconclusive`` (``untestable`` stays); its adjusted p is the smaller of its two. BH runs over each claim's
    smaller p (the p of the verdict it would reach). A claim without ``p_short`` (nan) brings only its first."""
    n = len(results)
    ok = [r.verdict != "untestable" for r in results]
    held = np.array([r.p_held if k else math.nan for r, k in zip(results, ok)], dtype=np.float64)
    short = np.array([r.p_short if k else math.nan for r, k in zip(results, ok)], dtype=np.float64)
    by_holm = holm(np.concatenate([held, short]), alpha, groups=np.tile(np.arange(n), 2)).p
    smaller = np.array([np.nanmin([h, s]) if k and np.isfinite([h, s]).any() else math.nan
                        for h, s, k in zip(held, short, ok)], dtype=np.float64)
    by_bh = benjamini_hochberg(smaller, alpha).p
    out = []
    for i in range(n):
        if not ok[i]:
            out.append(Adjustment(math.nan, "untestable", math.nan, "untestable"))
            continue
        ph, ps = by_holm[i], by_holm[n + i]
        p_holm = float(np.nanmin([ph, ps])) if np.isfinite([ph, ps]).any() else math.nan
        v_holm = "held" if ph <= alpha else "contradicted" if ps <= alpha else "inconclusive"
        bh_side = "held" if held[i] <= short[i] or not np.isfinite(short[i]) else "contradicted"
        v_bh = bh_side if by_bh[i] <= alpha else "inconclusive"
        out.append(Adjustment(p_holm, v_holm, float(by_bh[i]), v_bh))
    return out


def scope_of(claim: ClaimConfig) -> str:
    """Which windows a claim averages, in words ('' for all of them)."""
    stage = {"all": [], "evolution": ["the evolution's windows"], "exploit": ["the exploit windows"]}[claim.stage]
    parts = stage + ([f"windows >= {claim.from_step}"] if claim.from_step else []) + (
        [f"windows ending on or after day {claim.from_day:g}"] if claim.from_day else [])
    return " and ".join(parts)


def _in_scope(frame: pd.DataFrame, arms: list[str], from_step: int, from_day: float = 0.0, stage: str = "all") -> pd.Series:
    """Rows of the group's arms in the ``stage``'s windows ``>= from_step`` ending on or after day ``from_day``."""
    keep = frame["arm"].isin(arms) & (frame["step"] >= from_step)
    if from_day > 0:
        keep &= frame["day"] >= from_day
    if stage != "all":
        exploit = frame["phase"] == "exploit" if "phase" in frame else pd.Series(False, index=frame.index)
        keep &= exploit if stage == "exploit" else ~exploit
    return keep


def _group_means(frame: pd.DataFrame, arms: list[str], metric: str, from_step: int, from_day: float = 0.0,
                 stage: str = "all") -> pd.Series:
    """Per seed: the metric averaged over the ``stage``'s windows ``>= from_step`` ending on or after day ``from_day``,
    then over the group's arms (seeds with all arms)."""
    sub = frame[_in_scope(frame, arms, from_step, from_day, stage)]
    per_run = sub.groupby(["arm", "seed"])[metric].mean().unstack("arm")
    return per_run.dropna().mean(axis=1) if set(arms) <= set(per_run.columns) else pd.Series(dtype=float)


def window_table(frame: pd.DataFrame, arms: list[str], claim: ClaimConfig, metric: str | None = None) -> pd.DataFrame:
    """The group's metric per seed (rows) and window (columns: the window's position among the claim's windows of
    its run, in step order: arms that serve extra windows, e.g. A/B gates, still line up), averaged over the group's
    arms (seeds that ran all of them; nan where a seed's runs have fewer windows)."""
    metric = metric or claim.metric
    if metric not in frame:
        return pd.DataFrame()
    # only the columns it needs: a copy of four columns, not of a wide frame (whose many inserted columns fragment it)
    sub = frame.loc[_in_scope(frame, arms, claim.from_step, claim.from_day, claim.stage), ["arm", "seed", "step", metric]]
    if sub.empty:
        return pd.DataFrame()
    sub = sub.sort_values("step", kind="stable")
    sub = sub.assign(window=sub.groupby(["arm", "seed"]).cumcount())
    per = sub.groupby(["seed", "window", "arm"])[metric].mean().unstack("arm")
    if not set(arms) <= set(per.columns):
        return pd.DataFrame()
    return per[arms].mean(axis=1, skipna=False).unstack("window")


def claim_samples(frame: pd.DataFrame, claim: ClaimConfig) -> tuple[pd.Series, pd.Series, str]:
    """Per seed, the claim's metric of group ``a`` and of group ``b`` over its windows (finite values only), and
    why the claim cannot be tested ('' when it can: both groups have at least 2 seeds)."""
    empty = pd.Series(dtype=float)
    present = set(frame["arm"].unique()) if "arm" in frame else set()
    missing = [arm for arm in [*claim.a, *claim.b] if arm not in present]
    if missing:
        return empty, empty, f"no runs of arm(s) {missing} (arms present: {sorted(present)})"
    if claim.metric not in frame:
        return empty, empty, f"the metrics have no column {claim.metric!r}"
    a = _group_means(frame, claim.a, claim.metric, claim.from_step, claim.from_day, claim.stage)
    b = _group_means(frame, claim.b, claim.metric, claim.from_step, claim.from_day, claim.stage)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if claim.scale == "headroom":
        missing = [arm for arm in claim.headroom_arms if arm not in present]
        if missing:
            return empty, empty, f"`scale: headroom` needs the headroom arm(s) {missing} (arms present: {sorted(present)})"
        base, room = _headroom_by_seed(frame, claim)
        room = room[room >= claim.headroom]  # seeds with a gap to recover
        a = ((a - base) / room).dropna()
        b = ((b - base) / room).dropna()
    if len(a) < 2 or len(b) < 2:
        return a, b, f"needs at least 2 seeds per group (got {len(a)} and {len(b)})"
    return a, b, ""


def dropped_seeds(frame: pd.DataFrame, claim: ClaimConfig) -> int:
    """How many seeds a ``scale: headroom`` claim leaves out: those whose own headroom is below the claim's
    ``headroom`` (0 for other claims)."""
    if claim.scale != "headroom" or claim.metric not in frame or not set(claim.headroom_arms) <= set(frame["arm"]):
        return 0
    return int((_headroom_by_seed(frame, claim)[1] < claim.headroom).sum())


def _headroom_by_seed(frame: pd.DataFrame, claim: ClaimConfig) -> tuple[pd.Series, pd.Series]:
    """Per seed, on the claim's metric over its windows: the baseline arm's mean (``headroom_arms[1]``) and, for the
    seeds that ran both headroom arms (finite values), the headroom ``headroom_arms[0] - headroom_arms[1]``."""
    ref, base = (_group_means(frame, [arm], claim.metric, claim.from_step, claim.from_day, claim.stage)
                 for arm in claim.headroom_arms)
    room = ref - base
    return base, room[np.isfinite(room)]


def paired_seeds(a: pd.Series, b: pd.Series) -> list[int]:
    """The seeds two per-seed samples both hold (finite values), sorted: a claim is paired on them when there are at
    least 2 (seeds only one group ran are left out), else it gets Welch's interval over all of them."""
    return sorted(set(a[np.isfinite(a)].index) & set(b[np.isfinite(b)].index))


def _paired_diffs(frame: pd.DataFrame, claim: ClaimConfig, x: str, y: str) -> np.ndarray:
    """Per seed that ran both (finite values), arm ``x`` minus arm ``y`` on the claim's metric over its windows."""
    a, b = (_group_means(frame, [arm], claim.metric, claim.from_step, claim.from_day, claim.stage) for arm in (x, y))
    seeds = paired_seeds(a, b)
    return (a[seeds] - b[seeds]).to_numpy()


def replicates(frame: pd.DataFrame) -> dict[str, list[str]]:
    """The A/A replicates in a metrics table: arm label -> the labels of its replicates that ran
    (``<arm>_r<n>`` rows with ``replicate`` = n, :attr:`~experiments.config.ExperimentConfig.arm_label`)."""
    if "replicate" not in frame or "arm" not in frame:
        return {}
    arms = set(frame["arm"].unique())
    out: dict[str, list[str]] = {}
    for label, rep in frame.loc[frame["replicate"].fillna(0) > 0, ["arm", "replicate"]].drop_duplicates().itertuples(index=False):
        suffix = f"{REPLICATE_SUFFIX}{int(rep)}"
        base = label[: -len(suffix)] if label.endswith(suffix) else None
        if base in arms:
            out.setdefault(base, []).append(label)
    return {k: sorted(v) for k, v in out.items()}


def _aa_arm(frame: pd.DataFrame, claim: ClaimConfig) -> tuple[str, str] | None:
    """(arm, replicate) for the claim's true A/A check: ``b``'s arm if it has a replicate, else ``a``'s, else the
    first arm that has one (the preset's A/A arm); None when no replicate ran."""
    reps = replicates(frame)
    for group in (claim.b, claim.a):
        for arm in group:
            if arm in reps:
                return arm, reps[arm][0]
    return next(((arm, labels[0]) for arm, labels in sorted(reps.items())), None)


def noise_floor(frame: pd.DataFrame, claim: ClaimConfig, alpha: float = ALPHA, power: float = POWER) -> NoiseFloor:
    """The A/A check of the claim (:class:`NoiseFloor`): an arm's A/A replicate against the arm where one ran, else
    group ``b``'s odd minus even windows; and the unpaired MDE of group ``b``'s spread across seeds."""
    table = window_table(frame, claim.b, claim)
    per_seed = table.mean(axis=1) if not table.empty else pd.Series(dtype=float)
    per_seed = per_seed[np.isfinite(per_seed)]
    n = len(per_seed)
    seed_sd = float(per_seed.std(ddof=1)) if n >= 2 else math.nan
    floor = mde(seed_sd, n, alpha, power, paired=False) if n >= 2 else math.nan
    pair = _aa_arm(frame, claim) if claim.metric in frame else None
    if pair is not None:
        arm, rep = pair
        diffs = _paired_diffs(frame, claim, rep, arm)
        if len(diffs) >= 2:
            t = mean_test(diffs, 1 - alpha)
            return NoiseFloor(t.effect, t.low, t.high, t.p, t.n, seed_sd, floor, "replicate", f"{rep} - {arm}")
    if table.empty:
        return NoiseFloor()
    diffs = []
    for _, row in table.iterrows():
        w = row.dropna().to_numpy()
        if len(w) >= 2:
            diffs.append(float(w[1::2].mean() - w[0::2].mean()))
    if len(diffs) < 2:
        return NoiseFloor(n=len(diffs), seed_sd=seed_sd, mde80=floor, kind="placebo", pair="b: odd - even windows")
    t = mean_test(diffs, 1 - alpha)
    return NoiseFloor(t.effect, t.low, t.high, t.p, t.n, seed_sd, floor, "placebo", "b: odd - even windows")


ORACLE_GAP = "oracle/gap"  # the oracle arm's per-window gap over the hand-tuned config, on identical traffic


def headroom_of(frame: pd.DataFrame, claim: ClaimConfig, alpha: float = ALPHA) -> tuple[float, float, float]:
    """The claim's headroom, mean and 95% interval across seeds (nan when it cannot be measured):
    ``headroom_arms[0] - headroom_arms[1]`` (the clairvoyant oracle minus static by default) on the claim's metric
    and windows, paired by seed. It includes what the oracle's choices taught the learning system by then (the
    oracle is greedy per window, so later windows may gain or lose from its earlier picks); the oracle's own
    per-window gap on identical traffic (``oracle/gap``) is the fallback when the baseline arm did not run."""
    ref, base = claim.headroom_arms
    arms = set(frame["arm"].unique()) if "arm" in frame else set()
    if claim.metric in frame and {ref, base} <= arms:
        diffs = _paired_diffs(frame, claim, ref, base)
    elif ref == "oracle" and ref in arms and ORACLE_GAP in frame:
        per_seed = _group_means(frame, [ref], ORACLE_GAP, claim.from_step, claim.from_day, claim.stage)
        diffs = per_seed[np.isfinite(per_seed)].to_numpy()
    else:
        return math.nan, math.nan, math.nan
    if not len(diffs):
        return math.nan, math.nan, math.nan
    if len(diffs) < 2:
        return float(diffs.mean()), math.nan, math.nan
    t = mean_test(diffs, 1 - alpha)
    return t.effect, t.low, t.high


def _p_short(effect: float, floor: float, width: float, df: float, alpha: float) -> float:
    """Twice the one-sided p-value of ``effect >= floor`` (``effect`` signed so the claimed direction is positive),
    from the interval's ``width`` at level ``1 - alpha`` and its degrees of freedom: ``< alpha`` exactly when the
    interval's upper end lies below ``floor``."""
    if not (math.isfinite(width) and math.isfinite(df)) or df <= 0:
        return math.nan
    se = width / (2.0 * t_quantile(1.0 - alpha / 2.0, df))
    if se <= 0:
        return 0.0 if effect < floor else 1.0
    return min(1.0, 2.0 * t_cdf((effect - floor) / se, df))


def evaluate_claim(frame: pd.DataFrame, claim: ClaimConfig, alpha: float = ALPHA, power: float = POWER) -> ClaimResult:
    """The claim's effect, interval, p-value, power and verdict (:data:`VERDICT_RULE`) on a metrics table with
    ``arm``, ``seed``, ``step`` and the metric; its headroom (:func:`headroom_of`), which makes it untestable when
    below the claim's ``headroom``."""
    room = headroom_of(frame, claim, alpha)
    a, b, why = claim_samples(frame, claim)
    # nan (not measured) passes: stated in the table. Measured and short, it is the reason even when the claim's own
    # arms did not run: headroom first (the reference arms alone can rule a claim out before its arms are paid for)
    if claim.headroom > 0 and room[0] < claim.headroom:
        ref, base = claim.headroom_arms
        why = (f"no headroom: {ref} - {base} = {room[0]:+.4g} (95% CI {_ci(room[1], room[2]) or 'n/a'}) over the "
               f"claim's windows, below the {claim.headroom:g} the claim needs; no arm can show the claimed gain here")
    if why:
        return ClaimResult(claim, "untestable", a_mean=float(a.mean()) if len(a) else math.nan,
                           b_mean=float(b.mean()) if len(b) else math.nan, note=why, headroom=room[0],
                           headroom_low=room[1], headroom_high=room[2])
    common = paired_seeds(a, b)
    paired = len(common) >= 2
    small = False
    if paired:
        seeds = common
        diffs = (a[seeds] - b[seeds]).to_numpy()
        effect, low, high, df, p, sd, n = mean_test(diffs, 1 - alpha)
        n_a = n_b = n
        small = n < BOOTSTRAP_BELOW
        _, boot_low, boot_high = bootstrap_ci(diffs, level=1 - alpha) if small else (math.nan, math.nan, math.nan)
    else:
        seeds = sorted(set(a.index) | set(b.index))
        effect, low, high, df, p = welch_interval(a.to_numpy(), b.to_numpy(), 1 - alpha)  # a - b
        n_a, n_b = len(a), len(b)
        n = min(n_a, n_b)
        sd = math.sqrt((float(a.var(ddof=1)) + float(b.var(ddof=1))) / 2)
        small = n < BOOTSTRAP_BELOW
        _, boot_low, boot_high = bootstrap_ci(a.to_numpy(), b.to_numpy(), 1 - alpha) if small else (math.nan,) * 3
    sign = 1.0 if claim.direction == "greater" else -1.0
    lo, hi = sorted((sign * low, sign * high))
    floor = claim.min_effect
    verdict = "held" if lo > 0 else "contradicted" if hi < floor else "inconclusive"
    p_short = _p_short(sign * effect, floor, high - low, df, alpha)
    beyond = "yes" if lo > floor else "no" if hi < floor else "unclear"
    mde80 = mde(sd, n_a, alpha, power, paired, n_b)
    pw = power_at(floor, sd, n_a, alpha, paired, n_b)
    return ClaimResult(claim, verdict, effect, low, high, float(a.mean()), float(b.mean()), n, paired,
                       [int(s) for s in seeds], p=p, p_short=p_short, sd=sd, n_a=n_a, n_b=n_b, mde80=mde80, power=pw,
                       beyond_min=beyond,
                       boot_low=boot_low, boot_high=boot_high, aa=noise_floor(frame, claim, alpha, power),
                       headroom=room[0], headroom_low=room[1], headroom_high=room[2],
                       realised=_realised(frame, claim, alpha), note=_dropped_note(frame, claim))


def _dropped_note(frame: pd.DataFrame, claim: ClaimConfig) -> str:
    k = dropped_seeds(frame, claim)
    return f"{k} seed(s) with a gap below {claim.headroom:g} left out" if k else ""


def _realised(frame: pd.DataFrame, claim: ClaimConfig, alpha: float) -> tuple[float, float, float]:
    """The effect and interval of a claim on an expected metric (``<key>/exp``) re-measured on the realised ``<key>``
    (paired by seed, the same windows); nan where the claim's metric is not an expected one or ``<key>`` is missing."""
    if not claim.metric.endswith(EXPECTED_SUFFIX) or claim.metric.removesuffix(EXPECTED_SUFFIX) not in frame:
        return math.nan, math.nan, math.nan
    a, b, why = claim_samples(frame, replace(claim, metric=claim.metric.removesuffix(EXPECTED_SUFFIX)))
    seeds = sorted(set(a.index) & set(b.index))
    if why or len(seeds) < 2:
        return math.nan, math.nan, math.nan
    effect, low, high, *_ = mean_test((a[seeds] - b[seeds]).to_numpy(), 1 - alpha)
    return effect, low, high


# --------------------------------------------------------------------------- loading and rendering


def _configs(run_dir: Path, newest_first: bool = False) -> list[dict]:
    """The resolved configs (``config.yaml``) of the runs under ``run_dir`` (the most recently written first with
    ``newest_first``)."""
    paths = [d / "config.yaml" for d in run_dirs(run_dir) if (d / "config.yaml").exists()]
    if newest_first:
        paths.sort(key=lambda p: p.stat().st_mtime_ns, reverse=True)
    return [yaml.safe_load(p.read_text()) or {} for p in paths]


def load_claims(run_dir: str | os.PathLike[str], min_effect: float | None = None) -> list[ClaimConfig]:
    """The claims declared in the runs' ``config.yaml``. Where runs disagree (an arm added later to a folder of
    runs, with the preset's claims as they are now) the newest run's declaration is used, with a warning.
    ``min_effect`` fills in claims stored without one (or with 0: runs made before it was required); without it
    they are a ConfigError."""
    declared = [c.get("claims") or [] for c in _configs(Path(run_dir), newest_first=True)]
    if not declared:
        return []
    if any(d != declared[0] for d in declared[1:]):
        log.warning("runs under %s declare different claims; using the newest run's", run_dir)
    claims = []
    for c in declared[0]:
        if min_effect is not None and not c.get("min_effect"):
            c = {**c, "min_effect": min_effect}
        try:
            claims.append(ClaimConfig(**c))
        except ConfigError as exc:
            raise ConfigError(f"{exc} in the config.yaml of the runs under {run_dir} (runs made before `min_effect` "
                              f"was required store 0 or none: set it there, or pass a default)") from None
    return claims


def _fmt_ci(values: Sequence[float]) -> str:
    m, lo, hi = mean_ci(values)
    if math.isnan(m):
        return "n/a"
    return f"{m:.4g}" if math.isnan(lo) else f"{m:.4g} [{lo:.4g}, {hi:.4g}]"


SUMMARY_METRICS = ("reward", "outer/engagement/clicks_per_request", "outer/risk/violations_per_request",
                   "outer/long_term/return_rate")


def load_gates(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Every A/B-gated decision the runs under ``run_dir`` committed to the knowledge store (the LLM designer's
    proposals, the alternation's gates): arm, seed, step, agent, what was tested, decision, effect and its 95% CI.
    A designer's proposal is described by its stored rationale's first part (the edit it made)."""
    from agents.infra.store import KnowledgeStore

    rows = []
    for run in run_dirs(run_dir):
        summary = run_summary(run)
        try:
            url, exp_id = run_store(run)  # the store it wrote to (shared by many runs) and its experiment there
        except FileNotFoundError:
            continue
        if "***" in url:
            log.warning("%s: its store's URL has a hidden password (%s); its gates are not read", run, url)
            continue
        with KnowledgeStore(url) as store:
            rollouts = store.rollouts(exp_id)
            if not rollouts:
                continue
            designs = {(d.experiment_id, json.dumps(d.document, sort_keys=True)): d
                       for d in store.designs(valid=True, exp_id=exp_id)}
        for r in rollouts:  # a designer's rollout tests the document it stored as a design
            design = designs.get((r.experiment_id, json.dumps(r.candidate_config, sort_keys=True)))
            what = design.rationale.split(":")[0] if design is not None and design.rationale else (
                ", ".join(f"{k}={v}" for k, v in r.candidate_config.items()) if isinstance(r.candidate_config, dict)
                and "pipelines" not in r.candidate_config else "a new design")
            rows.append({"arm": summary.get("arm", run.name), "seed": summary.get("seed"), "step": r.step,
                         "agent": r.agent, "what": what[:120], "decision": r.decision, "effect": r.effect,
                         "ci_low": r.ci_low, "ci_high": r.ci_high})
    return pd.DataFrame(rows, columns=["arm", "seed", "step", "agent", "what", "decision", "effect", "ci_low", "ci_high"])


def render_gates(gates: pd.DataFrame) -> list[str]:
    """Markdown lines: per arm, how many gated candidates were accepted; then every accepted one."""
    if gates.empty:
        return []
    lines = ["## A/B-gated changes", "", "| arm | tested | accepted |", "|---|---|---|"]
    for arm, g in gates.groupby("arm", sort=False):
        lines.append(f"| {arm} | {len(g)} | {int((g['decision'] == 'accepted').sum())} |")
    accepted = gates[gates["decision"] == "accepted"]
    if len(accepted):
        lines += ["", "Accepted (effect on the gate's metric, candidate - incumbent, with its 95% interval):", "",
                  "| arm | seed | step | change | effect | 95% CI |", "|---|---|---|---|---|---|"]
        for _, r in accepted.iterrows():
            lines.append(f"| {r['arm']} | {r['seed']} | {r['step']} | {r['what']} | {r['effect']:+.4f} | "
                         f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] |")
    return lines + [""]


def _ci(low: float, high: float) -> str:
    return "" if math.isnan(low) else f"[{low:+.4g}, {high:+.4g}]"


def claims_table(results: Sequence[ClaimResult], adjustments: Sequence[Adjustment] | None = None,
                 keys: Sequence[str] | None = None) -> list[str]:
    """Markdown lines: every claim's effect, 95% CI, p, n, test, verdict and the verdicts after Holm and BH
    (``adjustments``: default :func:`adjust` over ``results``); ``keys`` adds a first column (the ablation)."""
    adjustments = adjust(results) if adjustments is None else adjustments
    first = ("| ablation ", "|---") if keys is not None else ("", "")
    lines = [f"| claim {first[0]}| metric | a | b | claimed | effect (a - b) | 95% CI | p | p short | n | test "
             f"| headroom | verdict | Holm | BH |",
             f"|---{first[1]}|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for i, (r, adj) in enumerate(zip(results, adjustments)):
        eff = "" if math.isnan(r.effect) else f"{r.effect:+.4g}"
        test = "" if r.verdict == "untestable" else ("paired" if r.paired else "Welch")
        p = "" if r.verdict == "untestable" else _fmt_p(r.p)
        p_short = "" if r.verdict == "untestable" else _fmt_p(r.p_short)
        holm_, bh = (f"{v} (p {_fmt_p(q)})" if v != "untestable" else v
                     for v, q in ((adj.verdict_holm, adj.p_holm), (adj.verdict_bh, adj.p_bh)))
        key = f" {keys[i]} |" if keys is not None else ""
        claimed = "a > b" if r.claim.direction == "greater" else "a < b"
        room = "" if math.isnan(r.headroom) else f"{r.headroom:+.3g}"
        room += f" (min {r.claim.headroom:g})" if room and r.claim.headroom else ""
        lines.append(f"| {r.claim.name} |{key} {r.claim.metric} | {' + '.join(r.claim.a)} | {' + '.join(r.claim.b)} "
                     f"| {claimed} | {eff} | {_ci(r.low, r.high)} | {p} | {p_short} | {r.n} | {test} | {room} | {r.label} "
                     f"| {holm_} | {bh} |")
    return lines


def power_table(results: Sequence[ClaimResult]) -> list[str]:
    """Markdown lines: per claim its min_effect, whether the effect is beyond it, the spread, MDE80, power at
    min_effect, the bootstrap interval (few seeds) and the A/A noise floor."""
    lines = ["| claim | min_effect | beyond min_effect | sd | MDE80 | power at min_effect | bootstrap 95% CI "
             "| A/A | A/A effect | A/A 95% CI | A/A p | seed sd of b | unpaired MDE80 of b |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        aa = r.aa
        if r.verdict == "untestable":
            lines.append(f"| {r.claim.name} | {r.claim.min_effect:g} | | | | | | | | | | | |")
            continue
        what = f"{aa.kind}: {aa.pair}" if aa.kind else ""
        lines.append(f"| {r.claim.name} | {r.claim.min_effect:g} | {r.beyond_min} | {_fmt_g(r.sd)} | {_fmt_g(r.mde80)} "
                     f"| {_fmt_pow(r.power)} | {_ci(r.boot_low, r.boot_high)} | {what} "
                     f"| {'' if math.isnan(aa.effect) else f'{aa.effect:+.3g}'} | {_ci(aa.low, aa.high)} "
                     f"| {'' if math.isnan(aa.p) else _fmt_p(aa.p)} | {_fmt_g(aa.seed_sd)} | {_fmt_g(aa.mde80)} |")
    return lines + ["", false_alarm_line(results)]


def false_alarm_line(results: Sequence[ClaimResult]) -> str:
    """One sentence: how many of the claims' A/A intervals exclude 0, by kind."""
    parts = []
    for kind in ("replicate", "placebo"):
        checked = [r for r in results if r.verdict != "untestable" and r.aa.kind == kind and not math.isnan(r.aa.low)]
        if checked:
            alarms = sum(r.aa.false_alarm for r in checked)
            parts.append(f"{alarms} of {len(checked)} {'A/A-arm' if kind == 'replicate' else 'placebo'} intervals "
                         f"exclude 0")
    if not parts:
        return "A/A false alarms: none computed (no claim had two seeds of an A/A pair)."
    return ("A/A false alarms: " + "; ".join(parts) + " (about 5% expected at the 5% level; the claims of one "
            "preset share runs, so their A/A checks are not independent).")


def load_warmups(run_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """Each run's warm-up trend test (``warmup/*`` of its ``summary.json``): arm, seed, windows, slope, p, settled."""
    rows = []
    for run in run_dirs(run_dir):
        summary = run_summary(run)
        if "warmup/windows" in summary:
            rows.append({"arm": summary.get("arm", run.name), "seed": summary.get("seed"),
                         **{k.removeprefix("warmup/"): float(summary[k]) for k in summary if k.startswith("warmup/")}})
    return pd.DataFrame(rows)


def render_warmups(warmups: pd.DataFrame) -> list[str]:
    """One line: how many runs began evolution on a settled system (no upward trend over their warm-up)."""
    if warmups is None or not len(warmups) or "windows" not in warmups:
        return []
    if "settled" not in warmups:  # no run could test (a warm-up under 3 windows: the summaries leave it out)
        warmups = warmups.assign(settled=math.nan, slope=math.nan)
    tested = warmups[warmups["settled"].notna()]
    windows = sorted({int(w) for w in warmups["windows"]})
    if not len(tested):
        return [f"Settled start: warm-up of {'/'.join(map(str, windows))} window(s), too short to test for a trend.", ""]
    slope = tested["slope"].astype(float)
    last = sorted({int(w) for w in tested["tested"]}) if "tested" in tested else []
    over = (f"the last {'/'.join(map(str, last))} of their {'/'.join(map(str, windows))} warm-up windows" if last
            else f"their {'/'.join(map(str, windows))} warm-up windows")
    return [f"Settled start: {int(tested['settled'].sum())} of {len(tested)} runs showed no upward trend over "
            f"{over} (least-squares slope, t-test at 5%); slope per window "
            f"mean {slope.mean():+.4g} (range {slope.min():+.4g} to {slope.max():+.4g}). Few windows test weakly: "
            f"\"settled\" means no trend was detectable.", ""]


def render_report(frame: pd.DataFrame, results: list[ClaimResult], figures: dict[str, Path], out: Path,
                  title: str = "Experiment report", source: str = "", gates: pd.DataFrame | None = None,
                  warmups: pd.DataFrame | None = None) -> str:
    """The Markdown report: the claims (one line each, then a table), a per-arm summary (the usual metrics and
    every claim's), the runs' warm-up trend tests (``warmups``, from :func:`load_warmups`), the A/B-gated changes
    (``gates``, from :func:`load_gates`) and the figures."""
    arms = list(dict.fromkeys(frame["arm"])) if len(frame) else []
    seeds = sorted(int(s) for s in frame["seed"].unique()) if len(frame) else []
    lines = [f"# {title}", ""]
    if source:
        lines.append(f"Runs under `{source}`: {frame.groupby(['arm', 'seed']).ngroups if len(frame) else 0} "
                     f"(arms {', '.join(arms)}; seeds {', '.join(map(str, seeds))}); "
                     f"{int(frame['step'].max()) + 1 if len(frame) else 0} windows each.")
        lines.append("")
    lines += ["## Claims", ""]
    if not results:
        lines += ["No claims declared (add `claims:` to the experiment config).", ""]
    else:
        lines += [VERDICT_RULE, ""]
    for r in results:
        lines.append(f"- {r.line()}" + (f"  \n  _{r.claim.description}_" if r.claim.description else ""))
    if results:
        lines += ["", *claims_table(results), "", *power_table(results)]
    lines += ["", "## Arms", "", *render_warmups(warmups), "Mean over windows per run, then mean and 95% CI across seeds.", ""]
    cols = [m for m in dict.fromkeys([*SUMMARY_METRICS, *(r.claim.metric for r in results)]) if m in frame]
    if cols:
        lines += ["| arm | seeds | " + " | ".join(cols) + " |", "|---|---|" + "---|" * len(cols)]
        per_run = frame.groupby(["arm", "seed"])[cols].mean()
        for arm in arms:
            runs = per_run.loc[arm]
            lines.append(f"| {arm} | {len(runs)} | " + " | ".join(_fmt_ci(runs[c].to_numpy()) for c in cols) + " |")
    if gates is not None and not gates.empty:
        lines += ["", *render_gates(gates)]
    if figures:
        lines += ["", "## Figures", ""]
        for name, path in figures.items():
            lines += [f"![{name}]({os.path.relpath(path, out.parent)})", ""]
    return "\n".join(lines).rstrip() + "\n"


def write_report(run_dir: str | os.PathLike[str], out: str | os.PathLike[str] | None = None,
                 claims: list[ClaimConfig] | None = None, figures: bool = True, min_effect: float | None = None
                 ) -> tuple[Path, list[ClaimResult]]:
    """Evaluate the claims of the runs under ``run_dir``, draw the figures and write the report (default
    ``<run_dir>/report.md``); ``min_effect`` for stored claims without one (:func:`load_claims`)."""
    run_dir = Path(run_dir)
    out = Path(out) if out is not None else run_dir / "report.md"
    frame = load_metrics(run_dir)
    claims = load_claims(run_dir, min_effect) if claims is None else claims
    results = [evaluate_claim(frame, c) for c in claims]
    paths: dict[str, Path] = {}
    if figures:
        metrics = list(dict.fromkeys(c.metric for c in claims))
        paths = save_figures(make_figures(frame, load_shifts(run_dir), claim_metrics=metrics), out.parent / "figures")
    names = {c.get("name") for c in _configs(run_dir)} - {None}
    title = f"Report: {', '.join(sorted(names))}" if names else "Experiment report"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(frame, results, paths, out, title, str(run_dir), load_gates(run_dir),
                                 load_warmups(run_dir)))
    return out, results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="a run or multirun directory (searched recursively for metrics)")
    parser.add_argument("--out", default=None, help="the report's path (default <run_dir>/report.md)")
    parser.add_argument("--no-figures", action="store_true", help="leave the figures out")
    parser.add_argument("--min-effect", type=float, default=None,
                        help="min_effect for claims stored without one (runs made before it was required)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    use_agg()
    path, results = write_report(args.run_dir, args.out, figures=not args.no_figures, min_effect=args.min_effect)
    for r in results:
        print(r.line())
    print(f"report: {path}")


if __name__ == "__main__":
    main()
