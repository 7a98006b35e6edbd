"""The experiment entry point: one arm evolving one agent of a running system, from a composed Hydra config.

``python -m experiments.run`` runs the default experiment; ``python -m experiments.run -m`` sweeps what the
experiment preset declares (arms x seeds) on the joblib launcher; ``experiment=smoke`` picks a preset from
``conf/experiment/``; any key can be overridden (``evolution.windows=20 controller=optuna seed=3``).

A run validates its whole config (:func:`experiments.config.load_config`) and builds the env before any
simulation (an evolution env, or a composition env for the arms registered with ``env="composition"``), then
lets the arm (:mod:`experiments.arms`) drive it window by window. Every
window is committed to the knowledge store as a trial (a killed run started again on the same store and
config replays deterministically and writes only the missing windows), logged to wandb and TensorBoard
and added to the table. The run directory ends up with ``config.yaml`` (resolved), ``metrics.csv``,
``metrics.parquet``, ``store.db``, ``summary.json``, ``figures/*.png``, ``wandb/`` and ``tb/``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import gymnasium as gym
import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from agents.decision.configs import cold_start_config
from agents.evolution.composition import ComponentPool, CompositionEnv, composition_of
from agents.evolution.deployment import REGIME_SCALARS
from agents.evolution.env import EvolutionEnv
from agents.infra.store import KnowledgeStore, store_location
from envs.validation import ConfigError, check_choice
from experiments.arms import ARMS, ArmContext, WindowRecorder, run_arm
from experiments.config import (
    ExperimentConfig,
    check_mapping_overrides,
    check_override_values,
    check_overrides,
    load_config,
    mapping_overrides,
)
from experiments.loggers import RunLoggers, write_atomic
from rewards.outer import OUTER_KEYS

__all__ = ["PHASES", "ConstrainedEvolution", "build_composition_env", "build_env", "cli", "main", "run"]

log = logging.getLogger(__name__)

# the phase boundaries of a run, in order (``window`` repeats): what ``run(on_phase=...)`` is called with
PHASES = ("configured", "started", "window", "finished", "figures", "logged", "summary")
NOT_IN_STORE_CONFIG = ("logger", "out_dir", "store", "claims", "threads")  # settings that do not change results


class ConstrainedEvolution(gym.Wrapper):
    """Subtracts a constraint penalty from the evolution env's layered reward, stepping the handler once per window.

    As :func:`rewards.layered.layered_reward` with a ``constraint``: the window's penalty uses the multipliers
    before this window's dual step; ``layered/<role>/penalty`` (and ``/penalty/<metric>``) and ``/total`` are
    updated in ``info`` and the handler's state (``constraint/<metric>/lambda``, ``/slack``, ``/violated``) added.
    """

    def __init__(self, env: EvolutionEnv, handler: Any) -> None:
        super().__init__(env)
        self.handler = handler

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        outer = {k: info[k] for k in OUTER_KEYS if k in info}
        parts = self.handler.terms(outer)
        penalty = float(sum(parts.values()))
        self.handler.update(outer)
        prefix = f"layered/{self.env.get_wrapper_attr('role')}"
        reward = float(reward) - penalty
        info = {**info, f"{prefix}/penalty": penalty, **{f"{prefix}/penalty/{k}": v for k, v in parts.items()},
                f"{prefix}/total": reward, **self.handler.state()}
        return obs, reward, terminated, truncated, info


def build_composition_env(cfg: ExperimentConfig) -> CompositionEnv:
    """The composition env of a config: the system's first pipeline templates the ``main`` slot, its second (or
    the cold-start pipeline) the ``specialist``; the system's routing is the initial composition; every pooled
    ranker trains with the main pipeline's ranker parameters. Checks
    ``evolution.agent`` against the pooled agents (no simulation yet)."""
    e, arm = cfg.evolution, cfg.controller.name
    if cfg.reward.constraints:
        raise ConfigError(f"`reward.constraints` are not supported by arm {arm!r} (it runs on the composition env); "
                          f"pick a reward without constraints, e.g. reward=outer_only (got {len(cfg.reward.constraints)})")
    if e.fixed:
        raise ConfigError(f"`evolution.fixed` is not supported by arm {arm!r} (it runs on the composition env); "
                          f"leave it empty (got {dict(e.fixed)})")
    if e.warmup_pipeline:
        raise ConfigError(f"`evolution.warmup_pipeline` is not supported by arm {arm!r} (it runs on the composition "
                          f"env, whose wiring is its decision); leave it empty (got {e.warmup_pipeline!r})")
    pipes = cfg.system.pipelines
    templates = {"main": pipes[0], "specialist": pipes[1] if len(pipes) > 1 else cold_start_config()}
    initial = composition_of(cfg.system, templates["specialist"])
    initial.routing = {seg: initial.routing.get(seg, "main") for seg in cfg.world.segment_names}  # every segment named
    env = CompositionEnv(world=cfg.world, templates=templates, window=e.window, concurrency=e.concurrency,
                         warmup=e.warmup, reward=cfg.reward.layered(), risk_bound=e.risk_bound, initial=initial,
                         ranker_params=dict(templates["main"].ranker.params), learn=e.learn, stationary=e.stationary,
                         replicate=cfg.controller.replicate, resources=e.resources)
    pooled = ComponentPool(env.world_cfg, templates, env.ranker_params).agents  # names only; rebuilt at reset
    evolvable = sorted(n for n, a in pooled.items() if a.role in ("rerank", "fusion", "ranking"))
    check_choice("evolution.agent", e.agent, evolvable)
    return env


def check_explore_share(cfg: ExperimentConfig) -> None:
    """``evolution.explore_share`` < 1 needs an arm that can explore on a share (``explores="share"``) and a reward
    without constraints (the searcher is told a difference of rewards); arms that propose nothing ignore it."""
    share, arm = cfg.evolution.explore_share, cfg.controller.name
    if share >= 1.0:
        return
    if ARMS[arm].explores == "all":
        raise ConfigError(f"`evolution.explore_share` must be 1 for arm {arm!r}: it explores on all traffic or on a "
                          f"share of its own (optuna_ab: controller.options.control_share) and cannot split it "
                          f"(got explore_share={share}); the arms that explore on a declared share: "
                          f"{sorted(n for n, a in ARMS.items() if a.explores == 'share')}")
    if ARMS[arm].explores == "share" and cfg.reward.constraints:
        raise ConfigError(f"`reward.constraints` are not supported with `evolution.explore_share` < 1 (arm {arm!r} "
                          f"is then told the candidate's reward minus the control's, which a constraint's penalty "
                          f"does not apply to); set explore_share=1 or pick a reward without constraints (got "
                          f"{len(cfg.reward.constraints)} constraints, explore_share={share})")


def build_env(cfg: ExperimentConfig) -> EvolutionEnv | ConstrainedEvolution | CompositionEnv:
    """The env of a config's arm (checks the agent against the system; no simulation yet)."""
    check_explore_share(cfg)
    if ARMS[cfg.controller.name].env == "composition":
        return build_composition_env(cfg)
    e = cfg.evolution
    if cfg.controller.name in ("oracle", "hindsight") and cfg.reward.constraints:
        raise ConfigError(f"`reward.constraints` are not supported by arm {cfg.controller.name!r} (it judges its twins "
                          f"by the layered reward without the constraint's penalty); pick a reward without constraints "
                          f"(got {len(cfg.reward.constraints)})")
    spec = ARMS[cfg.controller.name]
    if e.warmup_pipeline:
        check_choice("evolution.warmup_pipeline", e.warmup_pipeline, [p.name for p in cfg.system.pipelines])
    if spec.live or (spec.selects and e.select == "retest"):
        arm = repr(cfg.controller.name) + ("" if spec.live else " with `evolution.select` = 'retest'")
        if e.stationary:
            raise ConfigError(f"`evolution.stationary` must be false for arm {arm}: it changes what the running system "
                              f"serves, which a stationary env would restore every window (got true)")
        if cfg.reward.constraints and spec.live:  # (a re-test takes constraints as guardrails: arms.retest)
            raise ConfigError(f"`reward.constraints` are not supported by arm {arm} (it scores A/B windows on the "
                              f"env's own reward); pick a reward without constraints (got {len(cfg.reward.constraints)})")
    try:
        env = EvolutionEnv(world=cfg.world, system=cfg.system, agent=e.agent, window=e.window,
                           concurrency=e.concurrency, warmup=e.warmup, codec=e.codec, bins=e.bins,
                           reward=cfg.reward.layered(), risk_bound=e.risk_bound, fixed=dict(e.fixed) or None,
                           learn=e.learn, stationary=e.stationary, replicate=cfg.controller.replicate,
                           resources=e.resources, warmup_pipeline=e.warmup_pipeline)
    except ConfigError as exc:  # the agent's name or its fixed parameters: say where they are set
        message = str(exc).replace("`agent`", "`evolution.agent`", 1)
        raise ConfigError(message if message != str(exc) else f"{exc} (in `evolution.fixed` = {dict(e.fixed)})") from None
    handler = cfg.reward.build_handler()
    return env if handler is None else ConstrainedEvolution(env, handler)


def _plain_config(cfg: DictConfig | ExperimentConfig) -> dict[str, Any]:
    if isinstance(cfg, DictConfig):
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    return json.loads(json.dumps(asdict(cfg), default=str))


def _out_dir(cfg: ExperimentConfig, out_dir: str | os.PathLike[str] | None) -> Path:
    if out_dir is None and cfg.out_dir:
        out_dir = cfg.out_dir
    if out_dir is None:
        from hydra.core.hydra_config import HydraConfig

        out_dir = HydraConfig.get().runtime.output_dir if HydraConfig.initialized() else os.getcwd()
    path = Path(out_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _regime_columns(env: Any, regime: np.ndarray | None) -> dict[str, float]:
    """The observation the controller acted on, by name: segment request shares, then the regime scalars."""
    if regime is None:
        return {}
    names = [f"regime/share/{s}" for s in env.unwrapped.world_cfg.segment_names] + [f"regime/{k}" for k in REGIME_SCALARS]
    return {name: float(v) for name, v in zip(names, regime)}


def run(
    cfg: DictConfig | ExperimentConfig,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    on_phase: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run one experiment (one arm, one seed); returns the summary (also written to ``summary.json``).

    Resume is idempotent: run again on the same store and config after a kill at any point, it replays the
    windows already committed (writing none twice), commits the missing ones and writes the outputs; if the
    store already marks the experiment finished (a kill while figures or the summary were being written),
    it replays it whole and writes only the outputs, never a second experiment. ``on_phase(name)`` is
    called after each phase has committed what it writes (:data:`PHASES`, ``window`` once per window).
    """
    phase = on_phase or (lambda name: None)
    exp = load_config(cfg)  # every value checked before anything runs
    plain = _plain_config(cfg)
    env = build_env(exp)
    out = _out_dir(exp, out_dir)
    (out / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.create(plain)))
    phase("configured")

    import torch

    torch.set_num_threads(exp.threads)
    torch.manual_seed(exp.seed)
    arm = exp.arm_label
    store_url = store_location(exp.store, out)
    run_dir = str(out.resolve())
    loggers = RunLoggers(exp, out, plain)
    started = time.perf_counter()
    failed = True
    best = -math.inf
    with KnowledgeStore(store_url) as store:
        name, stored_config = f"{exp.name}/{arm}", {k: v for k, v in plain.items() if k not in NOT_IN_STORE_CONFIG}
        finished = store.find_experiment(name, stored_config, exp.seed, status="finished", run_dir=run_dir)
        exp_id = finished if finished is not None else store.start_experiment(name, stored_config, exp.seed,
                                                                              run_dir=run_dir)
        if finished is not None:
            log.info("%s seed %d is finished in the store (experiment %d): replaying it to write its outputs",
                     name, exp.seed, finished)
        phase("started")
        stored = {t.step: t.reward for t in store.trials(exp_id)}
        if stored:
            log.info("resuming %s/%s seed %d: %d windows already in the store", exp.name, arm, exp.seed, len(stored))
        bar = tqdm(total=exp.evolution.windows + exp.evolution.exploit, desc=f"{exp.name}/{arm}/s{exp.seed}",
                   disable=not exp.logger.progress, mininterval=1.0, dynamic_ncols=True)

        def on_window(step: int, config: dict[str, Any], reward: float, info: dict[str, Any]) -> None:
            nonlocal best
            best = max(best, reward)
            inner = {k: v for k, v in info.items() if k.startswith("inner/")}
            outer = {k: v for k, v in info.items() if k.startswith(("outer/", "layered/", "constraint/"))}
            regime = info.get("regime")
            if step in stored:
                if not math.isclose(stored[step], reward, rel_tol=1e-6, abs_tol=1e-9):
                    log.warning("window %d replayed with reward %.6g but the store has %.6g (not deterministic?)",
                                step, reward, stored[step])
            elif not info.get("stored"):  # (an arm that commits its own trials marks them)
                store.add_trial(exp_id, step, info.get("agent", exp.evolution.agent), arm, config,
                                [float(info["day"])] if regime is None else regime, inner, outer, reward)
            loggers.window({
                "experiment": exp.name, "arm": arm, "controller": exp.controller.name, "seed": exp.seed,
                "replicate": exp.controller.replicate, "step": step,
                "day": float(info["day"]), **({"phase": info["phase"]} if "phase" in info else {}),
                # a window split with a concurrent control tells the searcher a difference; the row's reward is
                # what the platform earned (the told one stays in the store and in `evolution/told_reward`)
                "reward": info.get("evolution/window_reward", reward), "evolution/best_reward": best,
                **({"evolution/told_reward": reward} if "evolution/window_reward" in info else {}),
                **{k: float(v) for k, v in info.items() if "/" in k and isinstance(v, (int, float, np.floating))},
                **_regime_columns(env, regime),
                **{f"config/{k}": v for k, v in config.items()},
                "time_s": time.perf_counter() - started,
            })
            bar.update(1)
            bar.set_postfix(reward=f"{reward:.4f}", refresh=False)
            phase("window")

        recorder = WindowRecorder(env, on_window, twins=exp.evolution.twins if ARMS[exp.controller.name].twins else "off",
                                  agent=exp.evolution.agent)
        ctx = ArmContext(exp, recorder, store, exp_id, on_window, exp.controller.typed_options(),
                         make_env=lambda **kw: build_env(replace(exp, evolution=replace(exp.evolution, **kw))),
                         out_dir=out)
        try:
            run_arm(ctx)
            failed = False
        except Exception:
            if finished is None:  # a replay of a finished experiment leaves its status alone
                store.finish_experiment(exp_id, "failed")
            raise
        finally:
            bar.close()
            if failed:
                loggers.close(failed=True)
        if finished is None:
            store.finish_experiment(exp_id)
        phase("finished")

    frame = loggers.table.frame()
    curves = {name: pd.DataFrame(rows) for name, rows in ctx.curves.items()}
    for name, table in curves.items():  # an arm's own curves (PPO's pre-training): a table each, and a figure
        write_atomic(out / f"{name}.csv", lambda tmp, t=table: t.to_csv(tmp, index=False))
    figures: dict[str, Any] = {}
    if exp.logger.plots:
        # matplotlib loads only when plots are on
        from experiments.plot import SHIFT_HORIZON, curve_figure, make_figures, save_figures, use_agg

        use_agg()
        figures = make_figures(frame, [(d, s.kind) for s in exp.world.shifts for d in s.days(SHIFT_HORIZON)])
        figures |= {name: curve_figure(table, name) for name, table in curves.items() if len(table)}
        loggers.figures(figures)
        save_figures(figures, out / "figures")
    phase("figures")
    rewards = frame["reward"].to_numpy()
    half = max(len(rewards) // 2, 1)
    summary = {
        "experiment": exp.name, "arm": arm, "controller": exp.controller.name, "seed": exp.seed,
        "replicate": exp.controller.replicate,
        "windows": int(len(frame)), "seconds": round(time.perf_counter() - started, 2), "out_dir": str(out),
        "store": store.location,
        "experiment_id": exp_id,
        "final/reward_mean": float(rewards.mean()), "final/reward_second_half": float(rewards[-half:].mean()),
        "final/best_reward": float(rewards.max()),
        **({"final/exploit_reward_mean": float(frame.loc[frame["phase"] == "exploit", "reward"].mean())}
           if "phase" in frame and (frame["phase"] == "exploit").any() else {}),
        **{f"final/{k.removeprefix('outer/')}": float(frame[k].mean()) for k in OUTER_KEYS if k in frame},
        **{k: float(v) for k, v in recorder.reset_info.items() if k.startswith("warmup/") and math.isfinite(v)},
        **{k: float(v) for k, v in ctx.summary.items() if math.isfinite(v)},
    }
    loggers.close({k: v for k, v in summary.items() if isinstance(v, float)})
    phase("logged")
    text = json.dumps(summary, indent=1)
    write_atomic(out / "summary.json", lambda tmp: tmp.write_text(text))
    phase("summary")
    log.info("%s/%s seed %d: mean reward %.4f over %d windows in %.1f s -> %s", exp.name, arm, exp.seed,
             summary["final/reward_mean"], summary["windows"], summary["seconds"], out)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Hydra's entry point; returns the mean reward (what a sweeper would optimise).

    A bad value ends the run with one line on stderr (the key, the allowed values, what was given) and exit
    status 2, never a traceback: every value is checked before any simulation runs.
    """
    from hydra.core.hydra_config import HydraConfig

    try:
        if HydraConfig.initialized():
            check_overrides(list(HydraConfig.get().overrides.task), cfg)
        return run(cfg)["final/reward_mean"]
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)  # the entry point speaks to the user; library code logs
        raise SystemExit(2) from None


def _compose(overrides: list[str]) -> DictConfig | None:
    """The config as the run would compose it from ``overrides`` (None when they do not compose: the run's own
    composition then reports why)."""
    from hydra import compose, initialize_config_dir

    try:
        with initialize_config_dir(str(Path(__file__).resolve().parents[1] / "conf"), version_base="1.3"):
            return compose(config_name="config", overrides=overrides)
    except Exception:  # noqa: BLE001 - reported by the run itself, with Hydra's message
        return None


def cli(argv: list[str] | None = None) -> None:
    """``python -m experiments.run [overrides]``: screens the override values Hydra would crash on, then runs
    :func:`main` (one line on stderr and exit status 2 for a bad value)."""
    args = sys.argv[1:] if argv is None else argv
    overrides = [a for a in args if not a.startswith("-") and "=" in a]
    try:
        check_override_values(overrides)
        mappings = mapping_overrides(overrides)
        # (rare: the config is composed once more, without them, to see what they would merge into)
        composed = _compose([a for a in overrides if a not in mappings]) if mappings else None
        if composed is not None:
            check_mapping_overrides(mappings, composed)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    main()


if __name__ == "__main__":
    cli()
