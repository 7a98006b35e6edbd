"""The demo job: baseline recommenders, then an evolved re-ranker, on shifting simulated populations.

``python -m experiments.demo --out outputs/demo`` first runs each baseline policy (random, popularity,
profile) on the same seeded, non-stationary world (a segment-mix change, a topic shock and a catalog
refresh) through the native vector env, and writes ``metrics.csv`` (one row per policy and window),
``segments.csv``, ``engagement.png`` and ``segments.png``. Then the agentic part
(``experiments.evolution_demo``) evolves the re-ranker of a learning pipeline with random search and
Optuna against the static config, writing ``evolution.csv``, ``evolution.png`` and the trials to the
knowledge store ``store.db``; then the alternation schedule (re-ranker, then wiring, A/B-gated) against
the static composition: ``alternation.csv``, ``alternation.png``. ``summary.json`` has the config, the shifts and every arm's means.
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import pandas as pd
from tqdm import tqdm

import envs  # noqa: F401  (registers the env ids)
from agents.decision.baselines import POLICIES, make_policy
from envs.validation import ConfigError, check_choice, check_int
from experiments.plot import day_curves

__all__ = ["DemoConfig", "run"]

log = logging.getLogger(__name__)

ENV_ID = "agentic-rs/SlateShift-v0"


@dataclass
class DemoConfig:
    out: str = "outputs/demo"
    policies: list[str] = field(default_factory=lambda: list(POLICIES))
    num_envs: int = 512
    days: int = 8
    window: int = 25  # steps per metrics row
    seed: int = 0
    evolution_windows: int = 24  # windows of the agentic part (0 skips it)

    def __post_init__(self) -> None:
        if not self.policies:
            raise ConfigError(f"`policies` must name at least one of {list(POLICIES)} (got none)")
        for p in self.policies:
            check_choice("policies", p, POLICIES)
        check_int("num_envs", self.num_envs, 1)
        check_int("days", self.days, 1)
        check_int("window", self.window, 1)
        check_int("evolution_windows", self.evolution_windows, 0)


def simulate(policy_name: str, cfg: DemoConfig) -> tuple[pd.DataFrame, pd.DataFrame, list[tuple[int, str]]]:
    """Run one policy; return per-window metrics, per-segment totals and the world's shift events."""
    env = gym.make_vec(ENV_ID, num_envs=cfg.num_envs, vectorization_mode="vector_entry_point")
    world_cfg = env.unwrapped.world_cfg
    names = world_cfg.segment_names
    policy = make_policy(policy_name, env.unwrapped.slate_size, world_cfg, np.random.default_rng(cfg.seed + 1))
    obs, _ = env.reset(seed=cfg.seed)
    steps = cfg.days * world_cfg.steps_per_day
    s = len(names)
    rows, acc = [], _Acc(s)
    seg_tot = _Acc(s)
    for step in tqdm(range(steps), desc=f"demo/{policy_name}", leave=False, mininterval=1.0):
        obs, reward, terminated, truncated, info = env.step(policy(obs))
        for a in (acc, seg_tot):
            a.add(info)
        if (step + 1) % cfg.window == 0:
            rows.append({"policy": policy_name, "seed": cfg.seed, "step": step + 1,
                         "day": (step + 1) / world_cfg.steps_per_day, **acc.summary(names)})
            acc = _Acc(s)
    events = list(env.unwrapped.world.events)
    env.close()
    seg = pd.DataFrame(
        {"policy": policy_name, "segment": names, "ctr": seg_tot.clicks / np.maximum(seg_tot.steps, 1),
         "return_rate": seg_tot.returned / np.maximum(seg_tot.sessions, 1),
         "session_length": seg_tot.session_steps / np.maximum(seg_tot.sessions, 1),
         "requests": seg_tot.steps}
    )
    return pd.DataFrame(rows), seg, events


class _Acc:
    """Running sums of the vector env's masked info, per segment."""

    def __init__(self, num_segments: int) -> None:
        z = lambda: np.zeros(num_segments)  # noqa: E731
        self.steps, self.clicks, self.dwell, self.violations = z(), z(), z(), z()
        self.sessions, self.returned, self.churned, self.session_steps = z(), z(), z(), z()

    def add(self, info: dict) -> None:
        if "_click" in info:
            m = info["_click"]
            seg = info["segment"][m]
            np.add.at(self.steps, seg, 1)
            np.add.at(self.clicks, seg, info["click"][m].sum(axis=1))
            np.add.at(self.dwell, seg, info["dwell"][m].sum(axis=1) / 60.0)
            np.add.at(self.violations, seg, info["violation"][m].sum(axis=1))
        if "_returned" in info:
            m = info["_returned"]
            seg = info["segment"][m]
            np.add.at(self.sessions, seg, 1)
            np.add.at(self.returned, seg, info["returned"][m])
            np.add.at(self.churned, seg, info["churned"][m])
            np.add.at(self.session_steps, seg, info["session_steps"][m])

    def summary(self, names: list[str]) -> dict[str, float]:
        n, ns = max(self.steps.sum(), 1), max(self.sessions.sum(), 1)
        out = {
            "outer/ctr": self.clicks.sum() / n,
            "outer/dwell_min": self.dwell.sum() / n,
            "outer/violations_per_request": self.violations.sum() / n,
            "outer/return_rate": self.returned.sum() / ns,
            "outer/churn_rate": self.churned.sum() / ns,
            "outer/session_length": self.session_steps.sum() / ns,
        }
        for i, name in enumerate(names):
            out[f"segment/{name}/ctr"] = self.clicks[i] / max(self.steps[i], 1)
            out[f"segment/{name}/share"] = self.steps[i] / n
        return out


def plot(metrics: pd.DataFrame, segments: pd.DataFrame, events: list[tuple[int, str]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for ax, (col, label) in zip(
        axes,
        [("outer/ctr", "clicks per request"), ("outer/return_rate", "next-day return rate"),
         ("outer/violations_per_request", "policy violations per request")],
    ):
        day_curves(ax, metrics, "policy", col, label, events)
    fig.tight_layout()
    paths.append(out / "engagement.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    table = segments.pivot(index="segment", columns="policy", values="ctr").loc[segments["segment"].unique()]
    table.plot.bar(ax=ax, rot=0)
    ax.set_ylabel("clicks per request")
    ax.set_xlabel("user segment")
    ax.set_title("engagement by segment and policy")
    fig.tight_layout()
    paths.append(out / "segments.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def run(cfg: DemoConfig) -> dict:
    """Run every policy, write the tables and plots, return the summary (also written as summary.json)."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    frames, segs, events = [], [], []
    for name in cfg.policies:
        m, s, events = simulate(name, cfg)
        frames.append(m)
        segs.append(s)
    metrics, segments = pd.concat(frames, ignore_index=True), pd.concat(segs, ignore_index=True)
    metrics.to_csv(out / "metrics.csv", index=False)
    segments.to_csv(out / "segments.csv", index=False)
    figures = plot(metrics, segments, events, out)
    files = ["metrics.csv", "segments.csv", *[p.name for p in figures]]
    evolution: dict[str, dict[str, float]] = {}
    if cfg.evolution_windows:
        from experiments.evolution_demo import EvolutionDemoConfig, run_alternation, run_evolution

        demo_cfg = EvolutionDemoConfig(out=cfg.out, windows=cfg.evolution_windows, seed=cfg.seed)
        frame = run_evolution(demo_cfg)
        evolution = {
            arm: {"reward": float(g["reward"].mean()),
                  "clicks_per_request": float(g["outer/engagement/clicks_per_request"].mean())}
            for arm, g in frame.groupby("arm", sort=False)
        }
        alt = run_alternation(demo_cfg)
        evolution |= {
            f"composition/{arm}": {"reward": float(g["outer"].mean()), "clicks_per_request": float(g["outer"].mean())}
            for arm, g in alt.groupby("arm", sort=False)
        }
        files += ["evolution.csv", "evolution.png", "alternation.csv", "alternation.png", "store.db"]
    summary = {
        "config": asdict(cfg),
        "env_id": ENV_ID,
        "shifts": [{"day": d, "kind": k} for d, k in events],
        "policies": {
            name: {k: float(v) for k, v in g.drop(columns=["policy", "seed", "step", "day"]).mean().items()}
            for name, g in metrics.groupby("policy", sort=False)
        },
        "evolution": evolution,
        "files": files,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DemoConfig.out)
    parser.add_argument("--policies", default=",".join(POLICIES), help=f"comma-separated, of {list(POLICIES)}")
    parser.add_argument("--num-envs", type=int, default=DemoConfig.num_envs)
    parser.add_argument("--days", type=int, default=DemoConfig.days)
    parser.add_argument("--seed", type=int, default=DemoConfig.seed)
    parser.add_argument("--evolution-windows", type=int, default=DemoConfig.evolution_windows,
                        help="windows of the re-ranker evolution part (0 skips it)")
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = DemoConfig(out=a.out, policies=a.policies.split(","), num_envs=a.num_envs, days=a.days, seed=a.seed,
                     evolution_windows=a.evolution_windows)
    summary = run(cfg)
    print(f"wrote {', '.join(summary['files'])} to {cfg.out}")
    print(f"{'policy':<12}{'ctr':>8}{'return':>8}{'violations':>12}")
    for name, m in summary["policies"].items():
        print(f"{name:<12}{m['outer/ctr']:>8.3f}{m['outer/return_rate']:>8.3f}{m['outer/violations_per_request']:>12.3f}")
    if summary["evolution"]:
        print(f"\nre-ranker evolution ({cfg.evolution_windows} windows)\n{'arm':<12}{'reward':>8}{'clicks':>8}")
        for arm, m in summary["evolution"].items():
            print(f"{arm:<12}{m['reward']:>8.3f}{m['clicks_per_request']:>8.3f}")


if __name__ == "__main__":
    main()
