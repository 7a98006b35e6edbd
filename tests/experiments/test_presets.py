"""One value, one place: every preset equals the Python it names, and YAML holds only what differs from the schema.

The system presets are registered from :data:`agents.decision.configs.SYSTEM_PRESETS` and the world sizes from
:data:`envs.config.WORLD_SIZES` (no YAML repeats them); every other YAML value is checked to differ from the
default it overrides, so a YAML line that restates a dataclass default (and would silently pin it) fails here.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

import experiments.arms  # noqa: F401  (registers the arms the controller options are checked against)
from agents.decision.configs import SYSTEM_PRESETS, lean_config, segment_routed_config, static_baseline_config
from envs.calibration import DATA_SIZES
from envs.config import WORLD_SIZES
from experiments.config import EvolutionSettings, ExperimentConfig, LoggerConfig, load_config
from experiments.registry import ARMS

CONF = Path(__file__).resolve().parents[2] / "conf"
SIZE_KEYS = sorted({k for sizes in WORLD_SIZES.values() for k in sizes})
# The world options and the size each documents (its YAML comment); the sizes themselves live in WORLD_SIZES.
WORLD_OPTIONS = {"small": "tiny", "shifting": "tiny", "shifting_long": "tiny", "recurring": "tiny", "medium": "small"}
DATA_WORLDS = {"ml100k": "ml100k"}  # world option -> the data set that grounds it (its sizes: envs.calibration.DATA_SIZES)
GROUP_FILES = sorted(p for p in CONF.rglob("*.yaml") if p.relative_to(CONF).parts[0] != "hydra")


def compose_config(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def group_options(group: str) -> list[str]:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


# ------------------------------------------------------------------ presets equal what they name


@pytest.mark.parametrize("name", sorted(SYSTEM_PRESETS))
def test_system_presets_are_the_python_presets_with_fast_rankers(name):
    cfg = load_config(compose_config(f"system={name}", "seed=3"))
    assert cfg.system == SYSTEM_PRESETS[name](fast=True, seed=3)


def test_system_presets_have_no_yaml_copy_and_name_the_documented_pythons():
    assert group_options("system") == sorted(SYSTEM_PRESETS) == ["cascade", "lean", "linear_baseline", "segment_routed",
                                                                 "static_baseline"]
    assert not list((CONF / "system").glob("*.yaml")), "a YAML system preset would be a second definition"
    routed, single = segment_routed_config(fast=True), static_baseline_config(fast=True)
    # C6 starts from the same baseline with a linear ranker, nothing else changed
    linear = SYSTEM_PRESETS["linear_baseline"](fast=True)
    assert linear.pipelines[0].ranker.arch == "linear" and dataclasses.replace(
        linear.pipelines[0], ranker=single.pipelines[0].ranker) == single.pipelines[0]
    # the cascade is the static baseline behind a pre-ranker that keeps everything
    cascade = SYSTEM_PRESETS["cascade"](fast=True)
    assert cascade.pipelines[0].prerank_keep == 500 and dataclasses.replace(
        cascade.pipelines[0], prerank_keep=None) == single.pipelines[0]
    # ablation C1's arms differ by the specialist only: the same (fast) baseline pipeline serves everyone else
    assert routed.pipelines[0] == single.pipelines[0] and routed.routing == {"new": "cold_start"}
    # the specialist trains on the same schedule per window (epochs, minimum steps, memory), with its own lr and batch
    schedule = {k: routed.pipelines[0].ranker.params[k] for k in ("epochs", "min_updates", "memory")}
    assert routed.pipelines[1].ranker.params == {"lr": 1e-2, "batch_size": 256, **schedule}
    assert segment_routed_config().pipelines[1].ranker.params == {"lr": 1e-2, "epochs": 4, "batch_size": 256}
    assert lean_config(fast=True).ranker.arch == "linear" and [r.kind for r in lean_config().routes] == [
        "popularity", "exploration"]


@pytest.mark.parametrize("option,size", sorted(WORLD_OPTIONS.items()))
def test_world_presets_take_their_sizes_from_world_sizes(option, size):
    world = load_config(compose_config(f"world={option}")).world
    assert {k: getattr(world, k) for k in SIZE_KEYS} == WORLD_SIZES[size]
    text = yaml.safe_load((CONF / "world" / f"{option}.yaml").read_text())
    assert not set(text) & set(SIZE_KEYS), f"world/{option}.yaml repeats a size of WORLD_SIZES[{size!r}]"


@pytest.mark.parametrize("option,data", sorted(DATA_WORLDS.items()))
def test_data_worlds_take_their_sizes_from_the_data(option, data):
    world = load_config(compose_config(f"world={option}")).world
    assert world.data == data and {k: getattr(world, k) for k in DATA_SIZES[data]} == DATA_SIZES[data]


@pytest.mark.parametrize("preset", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_preset_validates_on_the_grounded_world(preset):
    """`world=ml100k` replaces any preset's world; the whole config validates (segment names, shifts, sizes)."""
    cfg = load_config(compose_config(f"experiment={preset}", "world=ml100k"))
    assert cfg.world.data == "ml100k" and cfg.world.num_items == 1682


def test_every_world_option_is_documented_here():
    assert sorted(o for o in group_options("world")) == sorted({**WORLD_OPTIONS, **DATA_WORLDS})
    assert group_options("world/size") == sorted(WORLD_SIZES)


def test_the_default_config_is_the_schema_defaults(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg, schema = load_config(compose_config()), ExperimentConfig()
    assert cfg.evolution == EvolutionSettings() == schema.evolution
    assert cfg.logger == LoggerConfig() == schema.logger
    assert cfg.reward == schema.reward  # reward=layered sets nothing
    assert cfg.system == schema.system == static_baseline_config(fast=True)  # seed 0 = the run's seed
    assert (cfg.seed, cfg.threads, cfg.out_dir, cfg.store) == (schema.seed, schema.threads, schema.out_dir, schema.store)
    assert {k: getattr(cfg.world, k) for k in SIZE_KEYS} == {k: getattr(schema.world, k) for k in SIZE_KEYS}


# ------------------------------------------------------------------ YAML holds only differences


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value


def restated_defaults(values: dict[str, Any], defaults: Any, path: str = "") -> list[str]:
    """Keys of ``values`` (a YAML mapping) whose value equals the default it overrides.

    Mappings are compared key by key (Hydra merges them), lists and scalars whole (a list replaces the default);
    ``name`` keys are an option's identity and interpolations (``${...}``) are not values, so neither counts.
    """
    defaults = _plain(defaults)
    found = []
    for key, value in values.items():
        if key in ("defaults", "hydra", "name") or not isinstance(defaults, dict) or key not in defaults:
            continue
        where, default = f"{path}{key}", _plain(defaults[key])
        if isinstance(value, dict) and isinstance(default, dict):
            found += restated_defaults(value, default, f"{where}.")
        elif isinstance(value, str) and "${" in value:
            continue
        elif value == default:
            found.append(where)
    return found


def yaml_defaults(path: Path, values: dict[str, Any]) -> dict[str, Any]:
    """The defaults a conf file's values are merged onto: the schema's node of its package."""
    schema = dataclasses.asdict(ExperimentConfig())
    parts = path.relative_to(CONF).parts
    if len(parts) == 1 or path.read_text().startswith("# @package _global_"):
        return schema
    return schema[parts[0]]


def test_the_checker_finds_a_restated_default():
    assert restated_defaults({"evolution": {"windows": 8, "window": 500}}, ExperimentConfig()) == ["evolution.windows"]
    assert restated_defaults({"reward": {"inner_weight": {"rerank": 0.6, "recall": 1.0}}}, ExperimentConfig()) == [
        "reward.inner_weight.rerank"]
    assert restated_defaults({"world": {"shifts": []}, "arm": "${controller.name}"}, ExperimentConfig()) == [
        "world.shifts"]


@pytest.mark.parametrize("option", sorted(ARMS))
def test_controller_options_list_exactly_the_arm_options_defaults(option):
    """A controller YAML lists its arm's options (so ``controller.options.<key>=...`` overrides them without ``+``
    in Hydra's struct mode) with the options dataclass's defaults, the one place their values are decided."""
    values = yaml.safe_load((CONF / "controller" / f"{option}.yaml").read_text())
    schema = ARMS[option].options
    assert values["name"] == option
    assert values.get("options", {}) == (dataclasses.asdict(schema()) if schema else {})


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: str(p.relative_to(CONF)))
def test_yaml_sets_only_what_differs_from_the_defaults(path):
    values = yaml.safe_load(path.read_text()) or {}
    if path.parent.name == "controller":  # the options mirror the arm's defaults (the test above)
        values = {k: v for k, v in values.items() if k != "options"}
    restated = restated_defaults(values, yaml_defaults(path, values))
    assert not restated, f"{path.relative_to(CONF)} restates defaults {restated}: delete them (the dataclass holds them)"
