"""Structured system configs: OmegaConf/Hydra round trip, validation before any simulation, building."""

from __future__ import annotations

import numpy as np
import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf
from omegaconf.errors import ValidationError

import envs
from agents.decision.configs import (
    PipelineConfig,
    RankerConfig,
    RouteConfig,
    SystemConfig,
    baseline_config,
    build_system,
    segment_routed_config,
)
from envs.validation import ConfigError

WORLD = envs.WorldConfig(num_items=500, num_users=1000, num_topics=5)


def test_structured_config_round_trip_with_overrides():
    ConfigStore.instance().store(name="system_test", node=SystemConfig)
    base = OmegaConf.structured(segment_routed_config("linear"))
    OmegaConf.update(base, "pipelines[0].fusion_size", 300)
    OmegaConf.update(base, "routing.casual", "cold_start")
    cfg = OmegaConf.to_object(base)  # dataclasses again, __post_init__ validated
    assert isinstance(cfg, SystemConfig) and isinstance(cfg.pipelines[1].routes[0], RouteConfig)
    system = build_system(cfg, WORLD)
    assert system.pipelines[0].fusion.config["size"] == 300
    np.testing.assert_array_equal(system.router.assignment(), [1, 1, 0])  # new, casual -> cold_start
    assert [r.name for r in system.pipelines[1].recalls] == ["popularity", "exploration", "fresh"]
    assert system.pipelines[1].recalls[0].config["k"] == 400
    assert system.pipelines[0].ranker.arch == "linear"
    # the type of a structured field is enforced by OmegaConf too
    with pytest.raises(ValidationError, match="fusion_size"):
        OmegaConf.update(base, "pipelines[0].fusion_size", "lots")


@pytest.mark.parametrize(
    "make, pattern",
    [
        (lambda: RouteConfig("popularty"), r"`routes.kind` must be one of .* \(got 'popularty'\); did you mean 'popularity'\?"),
        (lambda: RouteConfig("fresh", quota=1.5), r"`routes\[fresh\].quota` must be in \[0.0, 1.0\] \(got 1.5\)"),
        (lambda: RouteConfig("content", params={"k": 7}), r"`routes\[content\].params.k` must be one of \[50, 100, 200, 400\] \(got 7\)"),
        (lambda: RouteConfig("content", params={"prob": 2}), r"did you mean 'probe'\?"),
        (lambda: RankerConfig("mpl"), r"`ranker.arch` must be one of \['linear', 'mlp'\] \(got 'mpl'\); did you mean 'mlp'\?"),
        (lambda: RankerConfig(params={"lr": 0.5}), r"`ranker.params.lr` must be one of"),
        (lambda: PipelineConfig(fusion_size=250), r"`pipelines\[baseline\].fusion_size` must be one of \[100, 200, 300, 500\] \(got 250\)"),
        (lambda: PipelineConfig(routes=[]), r"must hold at least one route"),
        (lambda: PipelineConfig(routes=[RouteConfig(), RouteConfig()]), r"each route kind once"),
        (lambda: PipelineConfig(rerank={"mmr_lambda": 2.0}), r"`pipelines\[baseline\].rerank.mmr_lambda` must be in \[0.0, 1.0\] \(got 2.0\)"),
        (lambda: SystemConfig([baseline_config(), baseline_config()]), r"names must be unique"),
        (lambda: SystemConfig(routing={"new": "cold"}), r"`system.routing\[new\]` must be one of \['baseline'\] \(got 'cold'\)"),
    ],
)
def test_bad_configs_fail_with_the_key_the_range_and_the_value(make, pattern):
    with pytest.raises(ConfigError, match=pattern):
        make()


def test_unknown_segment_in_routing_fails_when_building():
    cfg = SystemConfig([baseline_config()], routing={"hevy": "baseline"})
    with pytest.raises(ConfigError, match=r"\(got 'hevy'\); did you mean 'heavy'\?"):
        build_system(cfg, WORLD)
