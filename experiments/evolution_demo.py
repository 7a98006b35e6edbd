"""The agentic part of the demo: evolve the re-ranker of a learning pipeline on a shifting world.

Three arms run the same seeded world and system for ``windows`` windows of traffic: ``static`` keeps
the hand-tuned re-rank config, ``random`` and ``optuna`` propose a new config every window through the
evolution env. Every window is committed to the knowledge store (``store.db``) as a trial; the table
``evolution.csv`` holds one row per arm and window (reward, its inner/outer terms, config), and
``evolution.png`` plots the reward curves with the world's shifts marked.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from agents.evolution.controllers import OptunaSearch, RandomSearch, StaticController, evolve
from agents.evolution.env import SMALL_EVOLUTION_WORLD, EvolutionEnv
from agents.infra.store import KnowledgeStore
from envs.validation import check_int
from experiments.plot import day_curves

__all__ = ["ARMS", "EvolutionDemoConfig", "run_alternation", "run_evolution"]

log = logging.getLogger(__name__)

ARMS = ("static", "random", "optuna")
SHIFTING_WORLD = {
    **SMALL_EVOLUTION_WORLD,
    "shifts": [
        {"kind": "segment_mix", "day": 2, "request_mix": {"new": 0.5, "casual": 0.3, "heavy": 0.2}},
        {"kind": "topic_shock", "day": 4, "topic": 0, "strength": 1.0},
    ],
}


@dataclass
class EvolutionDemoConfig:
    out: str = "outputs/demo"
    windows: int = 24
    window: int = 2000
    agent: str = "baseline/rerank"
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("windows", self.windows, 1)
        check_int("window", self.window, 1)


def run_evolution(cfg: EvolutionDemoConfig) -> pd.DataFrame:
    """Run the three arms; write ``evolution.csv``, ``evolution.png`` and the trials to ``store.db``."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with KnowledgeStore(out / "store.db") as store:
        for arm in ARMS:
            env = EvolutionEnv(world=SHIFTING_WORLD, agent=cfg.agent, window=cfg.window)
            env.reset(seed=cfg.seed)
            controller = {
                "static": lambda: StaticController(env.target.config),
                "random": lambda: RandomSearch(env.target_params(), seed=cfg.seed),
                "optuna": lambda: OptunaSearch(env.target_params(), seed=cfg.seed),
            }[arm]()
            exp = store.start_experiment(f"demo/{arm}", {"agent": cfg.agent, "window": cfg.window}, cfg.seed)
            done = store.completed_steps(exp)
            bar = tqdm(total=cfg.windows, desc=f"evolution/{arm}", leave=False, mininterval=1.0)

            def commit(step: int, config: dict, reward: float, info: dict) -> None:
                inner = {k: v for k, v in info.items() if k.startswith("inner/")}
                outer = {k: v for k, v in info.items() if k.startswith("outer/")}
                if step not in done:
                    store.add_trial(exp, step, cfg.agent, arm, config, [float(info["day"])], inner, outer, reward)
                rows.append({"arm": arm, "window": step, "day": info["day"], "reward": reward,
                             **{k: v for k, v in info.items() if k.startswith(("layered/", "outer/"))},
                             **{f"config/{k}": v for k, v in config.items()}})
                bar.update(1)

            evolve(env, controller, cfg.windows, seed=cfg.seed, on_window=commit)
            bar.close()
            store.finish_experiment(exp)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "evolution.csv", index=False)
    plot_evolution(frame, [(s["day"], s["kind"]) for s in SHIFTING_WORLD["shifts"]], out / "evolution.png")
    return frame


def plot_evolution(frame: pd.DataFrame, shifts: list[tuple[int, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for ax, col, label in zip(axes, ["reward", "outer/engagement/clicks_per_request"],
                              ["layered reward of the re-ranker", "clicks per request"]):
        day_curves(ax, frame, "arm", col, label, shifts, marker=".")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_alternation(cfg: EvolutionDemoConfig) -> pd.DataFrame:
    """The alternation schedule vs the static composition on the same world: ``alternation.csv`` / ``.png``.

    ``alternating`` evolves the main pipeline's re-ranker (Optuna) until gains saturate or a shift is
    seen, then the wiring (Optuna over routes, quotas, ranker sets and segment routing), A/B-gating each
    phase's winner; ``static`` keeps the hand-tuned composition. Every window served (exploration, the
    sentinel windows of production, the A/B gates' windows), gate and shift is committed to ``store.db``.
    """
    from agents.evolution.composition import CompositionEnv
    from agents.evolution.schedule import PHASES, SaturationTest, ShiftTest, alternate

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with KnowledgeStore(out / "store.db") as store:
        for arm in ("static", "alternating"):
            env = CompositionEnv(world=SHIFTING_WORLD, window=cfg.window)
            exp = store.start_experiment(f"demo/composition/{arm}", {"window": cfg.window}, cfg.seed)
            bar = tqdm(total=cfg.windows, desc=f"alternation/{arm}", leave=False, mininterval=1.0)

            def record(row: dict, arm: str = arm) -> None:  # every window served: exploration, sentinels, A/B gates
                rows.append({"arm": arm, **row})
                bar.update(row["phase"] in PHASES)

            if arm == "static":
                never = SaturationTest(patience=cfg.windows, min_windows=cfg.windows + 1)
                keep = lambda p: StaticController(env.agent("main/rerank").config)  # noqa: E731
                alternate(env, "main/rerank", keep, keep, cfg.windows, seed=cfg.seed, saturation=never,
                          shift=ShiftTest(check_every=cfg.windows + 1), store=store, exp_id=exp, on_window=record)
            else:
                history = alternate(env, "main/rerank", lambda p: OptunaSearch(p, seed=cfg.seed),
                                    lambda e: OptunaSearch(e.target_params(), seed=cfg.seed), cfg.windows,
                                    seed=cfg.seed, saturation=SaturationTest(patience=4, min_gain=0.02, min_windows=6),
                                    shift=ShiftTest(check_every=4, tolerance=0.2), store=store, exp_id=exp,
                                    on_window=record)
                log.info("alternation: switches %s, gates %s", history.switches,
                         [(g["phase"], g["accepted"], round(g["effect"], 4)) for g in history.gates])
            bar.close()
            store.finish_experiment(exp)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "alternation.csv", index=False)
    plot_alternation(frame, [(s["day"], s["kind"]) for s in SHIFTING_WORLD["shifts"]], out / "alternation.png")
    return frame


def plot_alternation(frame: pd.DataFrame, shifts: list[tuple[int, str]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    day_curves(ax, frame, "arm", "outer", "clicks per request (outer reward)", shifts, marker=".")
    alt = frame[frame["arm"] == "alternating"]
    for _, row in alt[alt["phase"] == "compositional"].iterrows():
        ax.axvspan(row["day"] - 0.05, row["day"] + 0.05, color="tab:orange", alpha=0.12, lw=0)
    ax.set_title("alternation (shaded: compositional windows) vs static composition")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
