"""Every config group option composes and validates; bad overrides fail at start-up, before any simulation."""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf

from agents.decision.configs import static_baseline_config
from agents.evolution.composition import CompositionEnv
from agents.evolution.env import EvolutionEnv
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError
from experiments.config import REPLICATE_SUFFIX, ExperimentConfig, load_config
from experiments.run import ConstrainedEvolution, build_env, run

CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("world", "system", "controller", "reward", "logger", "experiment", "variant")
COMPOSITION_ARMS = ("static_composition", "compositional", "individual", "alternating")


def compose_config(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=hydra)


def options(group: str) -> list[str]:
    """The group's options: its YAML files and the options registered from Python (system, world/size)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def test_every_group_has_options_and_the_default_composes():
    for group in GROUPS:
        assert options(group), group
    cfg = load_config(compose_config())
    assert isinstance(cfg, ExperimentConfig)
    assert (cfg.name, cfg.controller.name, cfg.evolution.windows) == ("default", "optuna", 8)
    assert [(s.day, s.kind) for s in cfg.world.shifts] == [(1, "segment_mix"), (2, "topic_shock")]
    assert cfg.system.seed == cfg.seed  # interpolated


def sweep_values(value: str) -> list[str]:
    """The values of one sweeper param: ``a,b,c`` or ``range(n)``."""
    value = str(value)
    if value.startswith("range("):
        return [str(i) for i in range(*map(int, value[6:-1].split(",")))]
    return value.split(",")


def sweep_jobs(preset: str) -> list[list[str]]:
    """The override list of every job the preset's multirun launches (besides seeds)."""
    params = compose_config(f"experiment={preset}", hydra=True).hydra.sweeper.params
    keys = [k for k in params if k != "seed"]
    return [[f"{k}={v}" for k, v in zip(keys, combo)] for combo in itertools.product(*(sweep_values(params[k]) for k in keys))]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_validates_and_builds(group, option):
    cfg = load_config(compose_config(f"{group}={option}"))
    if group == "controller":  # an option is its arm, that arm's A/A replicate (<arm>_r<n>), or a labelled preset
        rep = cfg.controller.replicate  # of the arm's options (<arm>_<what>, e.g. ppo_pretrained: it sets `arm`)
        arm = option.removesuffix(f"{REPLICATE_SUFFIX}{rep}" * bool(rep))
        assert cfg.arm_label == option and (cfg.controller.name == arm or arm.startswith(f"{cfg.controller.name}_"))
        cfg.controller.typed_options()
    if group in ("world", "system", "reward", "variant"):
        env = build_env(cfg)  # builds the system and checks the agent; no simulation
        inner = env.unwrapped
        assert isinstance(inner, EvolutionEnv)
        assert isinstance(env, ConstrainedEvolution) == bool(cfg.reward.constraints)
    if group == "variant":
        assert cfg.arm_label == option  # a variant labels its arm
    if group == "experiment":
        assert cfg.name == option
        assert cfg.claims, "an experiment preset declares its claims"
        params = compose_config(f"experiment={option}", hydra=True).hydra.sweeper.params
        assert "seed" in params and {"controller", "variant"} & set(params), "a preset sweeps seeds and arms"
        arms = set()
        for job in sweep_jobs(option):
            job_cfg = load_config(compose_config(f"experiment={option}", *job))
            build_env(job_cfg)  # every arm's env builds (its agent exists, its reward fits the env)
            arms.add(job_cfg.arm_label)
        assert len(arms) == len(sweep_jobs(option)) >= 2, "every job of a sweep is a distinct arm"
        if option.startswith("c"):  # an ablation preset runs an A/A arm: one of its arms re-seeded (the noise floor)
            assert any(f"{a}{REPLICATE_SUFFIX}1" in arms for a in arms), f"{option} runs no A/A arm"
        for claim in cfg.claims:
            assert set(claim.a) | set(claim.b) <= arms, f"claim {claim.name} names an arm the sweep does not run"
            if claim.headroom:
                assert set(claim.headroom_arms) <= arms, f"claim {claim.name}'s headroom needs arms the sweep does not run"


ABLATION_PRESETS = ("c1_heterogeneity", "c2_individual", "c4_composition", "c5_reward", "c6_automodel")


@pytest.mark.parametrize("preset", ABLATION_PRESETS)
def test_ablation_presets_sweep_five_seeds_or_more_and_are_in_the_suite(preset):
    from experiments.ablations import ABLATIONS

    params = compose_config(f"experiment={preset}", hydra=True).hydra.sweeper.params
    assert len(set(sweep_values(params["seed"]))) >= 5
    assert preset in [a.preset for a in ABLATIONS]
    key = next(a.key for a in ABLATIONS if a.preset == preset)
    assert all(c.name.startswith(f"{key}-") for c in load_config(compose_config(f"experiment={preset}")).claims)


@pytest.mark.parametrize("arm", COMPOSITION_ARMS)
def test_composition_arms_build_a_composition_env(arm):
    cfg = load_config(compose_config(f"controller={arm}", "evolution.agent=main/rerank/mmr", "system=segment_routed"))
    env = build_env(cfg)
    assert isinstance(env, CompositionEnv)
    assert set(env.templates) == {"main", "specialist"}
    assert env.initial.routing == {"new": "specialist", "casual": "main", "heavy": "main"}  # the system routing
    assert env.ranker_params == cfg.system.pipelines[0].ranker.params


@pytest.mark.parametrize("overrides,message", [
    (["controller=individual"], r"`evolution.agent` must be one of \[.*'main/rerank/mmr'.*\] \(got 'baseline/rerank/mmr'\)"),
    (["controller=compositional", "evolution.agent=main/popularity"],
     r"`evolution.agent` must be one of \[.*\] \(got 'main/popularity'\)"),  # a recall route has one per slot: not evolvable alone
    (["controller=alternating", "evolution.agent=main/rerank/mmr", "reward=lagrangian"],
     r"`reward.constraints` are not supported by arm 'alternating' \(it runs on the composition env\)"),
    (["controller=individual", "evolution.agent=main/rerank/mmr", "+evolution.fixed.mmr_lambda=0.5"],
     r"`evolution.fixed` is not supported by arm 'individual'"),
    (["controller=individual", "evolution.agent=main/rerank/mmr", "evolution.warmup_pipeline=main"],
     r"`evolution.warmup_pipeline` is not supported by arm 'individual'"),
])
def test_composition_arms_reject_what_they_cannot_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_env(load_config(compose_config(*overrides)))


@pytest.mark.parametrize("overrides,message", [
    (["controller=alternating", "controller.options.search=gpt"],
     r"`controller.options.search` must be one of \['optuna', 'llm'\] \(got 'gpt'\)"),
    (["controller=llm", "controller.options.llm_backend=openia"],
     r"`controller.options.llm_backend` must be one of \['smollm2', 'openai'\] \(got 'openia'\); did you mean 'openai'\?"),
    (["controller=llm_compositional", "controller.options.llm_backend=openai"],
     r"`controller.options.llm_base_url` must be set when llm_backend is 'openai'"),
    (["controller=llm", "controller.options.llm_temperature=3"],
     r"`controller.options.llm_temperature` must be in \[0.0, 2.0\] \(got 3"),
])
def test_llm_options_are_validated(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(compose_config(*overrides))


@pytest.mark.parametrize("overrides,message", [
    (["controller=llm_designer", "controller.options.mode=rewrite"],
     r"`controller.options.mode` must be one of \['design', 'edit'\] \(got 'rewrite'\)"),
    (["controller=llm_designer", "evolution.stationary=true"],
     r"`evolution.stationary` must be false for arm 'llm_designer'"),
    (["controller=llm_designer", "reward=lagrangian"], r"`reward.constraints` are not supported by arm 'llm_designer'"),
])
def test_the_designer_arm_rejects_what_it_cannot_run(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_env(load_config(compose_config(*overrides)))


@pytest.mark.parametrize("overrides,message", [
    (["controller=alternating", "controller.options.min_windows=3"],
     r"`controller.options.min_windows` must be in \[5, inf\) \(got 3\)"),
    (["controller=alternating", "controller.options.gate_min_requests=200"],
     r"`controller.options.gate_min_requests` must be one of \[100, 1000, 5000\] \(got 200\)"),
    (["controller=llm_designer", "controller.options.earlier=-1"],
     r"`controller.options.earlier` must be in \[0, 20\] \(got -1\)"),
])
def test_alternating_options_are_validated(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(compose_config(*overrides))


def test_static_baseline_yaml_matches_fast_baseline():
    cfg = load_config(compose_config("system=static_baseline"))
    assert cfg.system == static_baseline_config(fast=True)


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
    (["world.num_items=0"], r"`world.num_items` must be in \[1, 10000000\] \(got 0\)"),
    (["seed=-1"], r"`seed` must be in \[0, inf\) \(got -1\)"),
    (["reward.inner_weight.rerank=2"], r"`reward.inner_weight.rerank` must be in \[0.0, 1.0\] \(got 2.0\)"),
    (["reward.outer=outer/engagement/clicks"], r"`reward.outer` must be one of \[.*\] \(got 'outer/engagement/clicks'\); "
                                               r"did you mean 'outer/engagement/clicks_per_request'\?"),
    (["world.shifts.0.kind=segment_mixx"], r"`world.shifts.kind` must be one of \[.*\] \(got 'segment_mixx'\); "
                                           r"did you mean 'segment_mix'\?"),
    (["controller.name=optuan"], r"`controller.name` must be one of \['alternating', 'autofeature', 'automodel_models', "
                                 r"'automodel_system', 'autotrain', 'compositional', 'hindsight', "
                                 r"'hindsight_composition', 'individual', 'llm', 'llm_compositional', 'llm_designer', "
                                 r"'optuna', 'optuna_ab', 'optuna_phases', 'oracle', 'oracle_composition', 'ppo', 'ppo_composition', "
                                 r"'random', 'static', 'static_composition'\] \(got 'optuan'\); did you mean 'optuna'\?"),
    (["controller=ppo", "controller.options.batch_size=8"],
     r"`controller.options.batch_size` must be in \[2, 4\] \(got 8\)"),
    (["controller=ppo", "+controller.options.n_stepz=4"],
     r"`controller.options key` must be one of \[.*'n_steps'.*\] \(got 'n_stepz'\); did you mean 'n_steps'\?"),
    (["controller=static", "+controller.options.lr=1"], r"`controller.options` must be empty: arm 'static' takes no options"),
    (["logger.wandb.mode=onlin"], r"`logger.wandb.mode` must be one of \['offline', 'online', 'disabled'\] "
                                  r"\(got 'onlin'\); did you mean 'online'\?"),
    (["claims.0.metric=rewrd"], r"`claims\[C0\].metric` must be one of \[.*\] \(got 'rewrd'\); did you mean 'reward'\?"),
    (["claims.0.direction=bigger"], r"`claims\[C0\].direction` must be one of \['greater', 'less'\] \(got 'bigger'\)"),
    (["claims.0.from_day=-1"], r"`claims\[C0\].from_day` must be in \[0.0, inf\) \(got -1.0\)"),
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
        (["evolution.agent=baseline/rerank/mmrr"], r"`evolution.agent` must be one of \[.*\] \(got 'baseline/rerank/mmrr'\); "
                                               r"did you mean 'baseline/rerank/mmr'\?"),
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
    assert not list(tmp_path.rglob("metrics.csv"))
    with KnowledgeStore(os.environ["AGENTIC_RS_STORE"]) as store:  # nothing registered in the shared store
        assert not [e for e in store.experiments() if e.run_dir == str((tmp_path / "run").resolve())]


def test_resolved_config_round_trips_through_yaml():
    cfg = compose_config("experiment=smoke")
    again = load_config(OmegaConf.create(OmegaConf.to_yaml(cfg, resolve=True)))
    assert again == load_config(cfg)


@pytest.mark.parametrize("overrides,message", [
    (["system=segment_routed", "evolution.warmup_pipeline=specialist"],
     r"`evolution.warmup_pipeline` must be one of \['baseline', 'cold_start'\] \(got 'specialist'\)"),
    (["evolution.warmup_pipeline=baseline", "evolution.warmup=0"],
     r"`evolution.warmup_pipeline` needs warm-up windows: set `evolution.warmup` >= 1"),
])
def test_a_shared_warm_up_names_a_pipeline_of_the_system(overrides, message):
    with pytest.raises(ConfigError, match=message):
        build_env(load_config(compose_config(*overrides)))
