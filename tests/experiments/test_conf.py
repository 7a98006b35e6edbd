"""Every config group option composes and validates; bad overrides fail at start-up, before any simulation."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from agents.evolution.env import EvolutionEnv
from envs.validation import ConfigError
from experiments.config import ExperimentConfig, load_config
from experiments.run import ConstrainedEvolution, build_env, run

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("world", "system", "controller", "reward", "logger", "experiment")


def compose_config(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_group_has_options_and_the_default_composes():
    for group in GROUPS:
        assert options(group), group
    cfg = load_config(compose_config())
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.name, cfg.controller.name, cfg.evolution.windows) == ("default", "optuna", 8)
    assert [(s.day, s.kind) for s in cfg.world.shifts] == [(1, "segment_mix"), (2, "topic_shock")]
    assert cfg.system.seed == cfg.seed  # interpolated


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_validates_and_builds(group, option):
    cfg = load_config(compose_config(f"{group}={option}"))
    if group == "controller":
        assert cfg.controller.name == option
        cfg.controller.typed_options()
    if group in ("world", "system", "reward"):
        env = build_env(cfg)  # builds the system and checks the agent; no simulation
        inner = env.unwrapped
        assert isinstance(inner, EvolutionEnv)
        assert isinstance(env, ConstrainedEvolution) == bool(cfg.reward.constraints)
    if group == "experiment":
        assert cfg.name == option
        assert cfg.claims, "an experiment preset declares its claims"
        sweep = compose_config(f"experiment={option}", hydra=True).hydra.sweeper.params
        assert {"controller", "seed"} <= set(sweep)
        for arm in sweep["controller"].split(","):
            load_config(compose_config(f"experiment={option}", f"controller={arm}"))
        arms = set(sweep["controller"].split(","))
        for claim in cfg.claims:
            assert set(claim.a) | set(claim.b) <= arms, f"claim {claim.name} names an arm the sweep does not run"


def test_static_baseline_yaml_matches_fast_baseline():
    from agents.evolution.env import fast_baseline

    cfg = load_config(compose_config("system=static_baseline"))
    assert cfg.system == fast_baseline()


def test_wandb_mode_is_offline_unless_the_environment_says_otherwise(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert load_config(compose_config()).logger.wandb.mode == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert load_config(compose_config()).logger.wandb.mode == "disabled"
    assert load_config(compose_config("logger.wandb.mode=online")).logger.wandb.mode == "online"


LAUNCHERS = {
    "parallel": ("hydra_plugins.hydra_joblib_launcher", "JoblibLauncher"),
    "subprocesses": ("hydra_plugins.hydra_submitit_launcher", "LocalLauncher"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "SlurmLauncher"),
    "ray_cluster": ("hydra_plugins.hydra_ray_launcher", "RayLauncher"),
}


@pytest.mark.parametrize("preset", sorted(LAUNCHERS))
def test_launcher_presets_compose(preset):
    module, cls = LAUNCHERS[preset]
    pytest.importorskip(module)
    launcher = compose_config(f"hydra/launcher={preset}", hydra=True).hydra.launcher
    assert launcher._target_.endswith(cls)
    assert sorted(p.stem for p in (CONF / "hydra" / "launcher").glob("*.yaml")) == sorted(LAUNCHERS)


def test_joblib_is_the_default_multirun_launcher():
    launcher = compose_config(hydra=True).hydra.launcher
    assert launcher._target_.endswith("JoblibLauncher") and launcher.n_jobs == 2


# ------------------------------------------------------------------ bad input


def test_unknown_group_option_lists_the_available_ones():
    with pytest.raises(MissingConfigException) as err:
        compose_config("controller=optuan")
    message = str(err.value)
    assert "Could not find 'controller/optuan'" in message
    assert "Available options in 'controller'" in message
    for name in ("optuna", "ppo", "random", "static"):
        assert name in message


@pytest.mark.parametrize("override,cause", [
    ("evolution.windows=abc", r"Value 'abc' of type 'str' could not be converted to Integer\s+full_key: evolution.windows"),
    ("seed=1.5", r"Value '1.5' of type 'float' could not be converted to Integer\s+full_key: seed"),
    ("evolution.windowz=3", r"Key 'windowz' not in 'EvolutionSettings'\s+full_key: evolution.windowz"),
    ("world.num_itemz=3", r"Key 'num_itemz' not in 'WorldConfig'\s+full_key: world.num_itemz"),
])
def test_wrong_type_or_unknown_key_fails_while_composing(override, cause):
    with pytest.raises(ConfigCompositionException) as err:
        compose_config(override)
    assert override.split("=")[0] in str(err.value)
    assert err.value.__cause__ is not None
    assert re.search(cause, str(err.value.__cause__)), str(err.value.__cause__)


@pytest.mark.parametrize("overrides,message", [
    (["evolution.windows=0"], r"`evolution.windows` must be in \[1, inf\) \(got 0\)"),
    (["world.num_items=0"], r"`world.num_items` must be in \[1, inf\) \(got 0\)"),
    (["seed=-1"], r"`seed` must be in \[0, inf\) \(got -1\)"),
    (["reward.inner_weight.rerank=2"], r"`reward.inner_weight.rerank` must be in \[0.0, 1.0\] \(got 2.0\)"),
    (["reward.outer=outer/engagement/clicks"], r"`reward.outer` must be one of \[.*\] \(got 'outer/engagement/clicks'\); "
                                               r"did you mean 'outer/engagement/clicks_per_request'\?"),
    (["world.shifts.0.kind=segment_mixx"], r"`world.shifts.kind` must be one of \[.*\] \(got 'segment_mixx'\); "
                                           r"did you mean 'segment_mix'\?"),
    (["controller.name=optuan"], r"`controller.name` must be one of \['optuna', 'ppo', 'random', 'static'\] "
                                 r"\(got 'optuan'\); did you mean 'optuna'\?"),
    (["controller=ppo", "controller.options.batch_size=8"],
     r"`controller.options.batch_size` must be in \[2, 4\] \(got 8\)"),
    (["controller=ppo", "+controller.options.n_stepz=4"],
     r"`controller.options key` must be one of \[.*'n_steps'.*\] \(got 'n_stepz'\); did you mean 'n_steps'\?"),
    (["controller=static", "+controller.options.lr=1"], r"`controller.options` must be empty: arm 'static' takes no options"),
    (["logger.wandb.mode=onlin"], r"`logger.wandb.mode` must be one of \['offline', 'online', 'disabled'\] "
                                  r"\(got 'onlin'\); did you mean 'online'\?"),
    (["claims.0.metric=rewrd"], r"`claims\[C0\].metric` must be one of \[.*\] \(got 'rewrd'\); did you mean 'reward'\?"),
    (["claims.0.direction=bigger"], r"`claims\[C0\].direction` must be one of \['greater', 'less'\] \(got 'bigger'\)"),
    (["reward=lagrangian", "reward.lr=0"], r"`reward.lr` must be in \(0.0, inf\) \(got 0.0\)"),
    (["+evolution.windowz=3"], r"`evolution.windowz` is not a key of `evolution` \(allowed: \[.*\]\); did you mean 'window'\?"),
    (["+world.items.zipf_exponant=1"], r"`world.items.zipf_exponant` is not a key of `world.items` .*did you mean 'zipf_exponent'\?"),
])
def test_bad_values_fail_in_load_config_with_the_full_key(overrides, message):
    cfg = compose_config(*overrides)
    with pytest.raises(ConfigError, match=message):
        load_config(cfg)


def test_unknown_agent_fails_before_any_simulation(tmp_path, monkeypatch):
    from agents.decision.system import Simulation

    def no_simulation(*args, **kwargs):
        raise AssertionError("simulated before validating")

    monkeypatch.setattr(Simulation, "window", no_simulation)
    for overrides, message in [
        (["evolution.agent=baseline/rerankk"], r"`evolution.agent` must be one of \[.*\] \(got 'baseline/rerankk'\); "
                                               r"did you mean 'baseline/rerank'\?"),
        (["evolution.windows=0"], r"`evolution.windows` must be in \[1, inf\)"),
    ]:
        with pytest.raises(ConfigError, match=message):
            run(compose_config(*overrides, "logger=csv"), out_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_cli_rejects_a_bad_value_with_the_message_and_writes_nothing(tmp_path):
    env = {**os.environ, "WANDB_MODE": "disabled", "MPLCONFIGDIR": str(tmp_path / "mpl"), "HYDRA_FULL_ERROR": "0"}
    proc = subprocess.run([sys.executable, "-m", "experiments.run", "evolution.windows=0", f"hydra.run.dir={tmp_path / 'run'}"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "`evolution.windows` must be in [1, inf) (got 0)" in proc.stderr
    assert not list(tmp_path.rglob("metrics.csv")) and not list(tmp_path.rglob("store.db"))


def test_resolved_config_round_trips_through_yaml():
    cfg = compose_config("experiment=smoke")
    again = load_config(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True)))
    assert again == load_config(cfg)
