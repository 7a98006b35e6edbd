"""A shared warm-up (``warmup_pipeline``): systems that differ only by their routing serve an identical warm-up, then
each takes its own routing, a pipeline taking over a segment trained on what the previous one remembered of it; an
A/A replicate shares the warm-up and takes its own randomness only after it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.decision.configs import segment_routed_config, static_baseline_config
from agents.evolution.deployment import WARM_UPDATES, Deployment
from agents.evolution.env import EvolutionEnv
from envs.config import WorldConfig
from envs.validation import ConfigError

TINY = {"num_items": 600, "num_users": 1200, "num_topics": 5, "num_creators": 30, "steps_per_day": 20}
NEW = 0  # the "new" segment's index in the default segments


def _env(system, **kw) -> EvolutionEnv:
    args = {"world": TINY, "system": system, "window": 200, "concurrency": 100, "warmup": 3,
            "warmup_pipeline": "baseline", **kw}
    return EvolutionEnv(**args)


def _run(env: EvolutionEnv, windows: int = 2) -> tuple[dict, list[np.ndarray]]:
    torch.set_num_threads(1)
    _, info = env.reset(seed=5)
    logs = []
    for _ in range(windows):
        env.step(env.current_action())
        logs.append(env.service.last_log.impressions["item"].copy())
    return info, logs


def test_systems_that_differ_by_routing_share_the_warm_up_then_route_their_own_way():
    one, routed = _env(static_baseline_config(fast=True)), _env(segment_routed_config(fast=True))
    info_one, logs_one = _run(one)
    info_routed, logs_routed = _run(routed)
    # the warm-up is the same run, bit for bit: every segment served by the main pipeline of both
    assert info_one["warmup/reward_last"] == info_routed["warmup/reward_last"]
    assert info_one["warmup/slope"] == info_routed["warmup/slope"]
    # then the specialised system serves new users from its specialist (and only them), the other does not
    assert routed.service.routing["new"] == "cold_start" and one.service.routing["new"] == "baseline"
    requests = routed.service.last_log.requests
    assert np.array_equal(requests["pipeline"] == 1, requests["segment"] == NEW) and (requests["pipeline"] == 1).any()
    assert not np.array_equal(logs_one[0], logs_routed[0])  # so the two systems' slates now differ


def test_the_hand_over_trains_the_specialist_on_the_segments_remembered_impressions_only():
    torch.set_num_threads(1)
    service = Deployment.start(WorldConfig(**TINY), segment_routed_config(fast=True), seed=2, concurrency=100, window=200)
    before = service.route({"new": "baseline"}, hand_over=False)
    assert before["new"] == "cold_start" and service.routing["new"] == "baseline"
    service.serve(2)
    main, specialist = (p.ranker for p in service.system.pipelines)
    assert specialist.updates == 0 and len(specialist.memory()[0]) == 0  # it served nobody: nothing to learn from
    _, _, segments = main.memory()
    assert (segments == NEW).any() and (segments != NEW).any()
    service.route(before)  # the hand-over
    assert service.routing == before
    x, _, s = specialist.memory()
    assert len(x) == int((segments == NEW).sum()) and (s == NEW).all()  # the new users' impressions, no others
    assert specialist.updates >= min(main.updates, WARM_UPDATES)
    # routing back without a hand-over leaves the specialist as it is
    updates = specialist.updates
    service.route({"new": "baseline"}, hand_over=False)
    assert specialist.updates == updates
    with pytest.raises(ConfigError, match=r"routing\[new\].*'baseline', 'cold_start'.*'nowhere'"):
        service.route({"new": "nowhere"})


def test_a_replicate_shares_the_warm_up_and_then_draws_its_own_randomness():
    system = static_baseline_config(fast=True)
    info_0, logs_0 = _run(_env(system), windows=3)
    info_1, logs_1 = _run(_env(system, replicate=1), windows=3)
    assert info_1["warmup/reward_last"] == info_0["warmup/reward_last"]  # the same warmed system
    assert any(not np.array_equal(a, b) for a, b in zip(logs_0, logs_1))  # its own randomness after it
    # without a shared warm-up a replicate differs from its first window on (its own initial weights)
    info_2, _ = _run(_env(system, replicate=1, warmup_pipeline=""), windows=1)
    assert info_2["warmup/reward_last"] != info_0["warmup/reward_last"]


def test_a_shared_warm_up_is_checked_before_any_simulation():
    with pytest.raises(ConfigError, match=r"`warmup_pipeline` must be one of \['baseline'\].*'main'"):
        _env(static_baseline_config(fast=True), warmup_pipeline="main")
    with pytest.raises(ConfigError, match=r"`warmup_pipeline` needs warm-up windows.*warmup=0"):
        _env(static_baseline_config(fast=True), warmup=0)
