"""The resource model: latency fitted to timings of the real serving code, predictions that follow the config,
a window's latency percentiles and FLOPs, and the deployment's cost terms."""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import torch

import envs
from agents.decision.configs import build_system, static_baseline, static_baseline_config
from agents.decision.resources import (
    STAGES,
    ResourceProfile,
    StageCost,
    flops_per_candidate,
    stage_units,
    window_costs,
)
from agents.evolution.autoperf import resource_knobs
from agents.evolution.deployment import Deployment
from envs.validation import ConfigError

TINY = envs.WorldConfig(num_items=1000, num_users=3000, num_topics=8, num_creators=50)


@pytest.fixture(scope="module")
def service() -> Deployment:
    torch.set_num_threads(1)
    service = Deployment.start(TINY, static_baseline(TINY), world_seed=0, sim_seed=0, concurrency=300, window=600)
    service.serve()
    return service


def test_flops_per_candidate_counts_the_rankers_linear_layers(service):
    ranker = service.system.pipelines[0].ranker
    linear = [m for m in ranker.model.modules() if isinstance(m, torch.nn.Linear)]
    assert linear and flops_per_candidate(ranker) == 2 * sum(m.in_features * m.out_features for m in linear)
    with pytest.raises(ConfigError, match="must have a torch `model`"):
        flops_per_candidate(object())


def test_the_latency_figures_come_from_timing_the_serving_code(service, monkeypatch):
    """Slow the re-ranker by 10 ms a batch and calibrate again: the fitted re-rank latency rises by about that much
    (timings of the code that serves, not constants)."""
    before = service.calibrate_resources(batch_sizes=(32, 128, 300), repeats=3)
    assert all(p[1] > 0 for s in STAGES for p in before.points[s]) and len(before.points["ranking"]) == 3
    reranker = service.system.pipelines[0].reranker
    act = reranker.act

    def slow(*args, **kwargs):
        time.sleep(0.010)
        return act(*args, **kwargs)

    monkeypatch.setattr(reranker, "act", slow)
    after = service.calibrate_resources(batch_sizes=(32, 128, 300), repeats=3)
    pipeline = service.system.pipelines[0]
    gain = after.batch_ms(pipeline, 128)["rerank"] - before.batch_ms(pipeline, 128)["rerank"]
    assert 6.0 < gain < 60.0, (before.stages["rerank"], after.stages["rerank"])


def test_predictions_follow_the_config_and_a_window_gets_its_percentiles(service):
    profile = service.calibrate_resources(batch_sizes=(32, 300), repeats=2)
    pipeline = service.system.pipelines[0]
    size = pipeline.fusion.config["size"]
    units, ms = stage_units(pipeline, 100, 10), profile.batch_ms(pipeline, 100)
    pipeline.fusion.configure({"size": 100})
    try:
        fewer, fewer_ms = stage_units(pipeline, 100, 10), profile.batch_ms(pipeline, 100)
        assert fewer["fusion"] * size == units["fusion"] * 100 and fewer["ranking"] * size == units["ranking"] * 100
        assert fewer_ms["ranking"] <= ms["ranking"] and fewer_ms["fusion"] <= ms["fusion"]
    finally:
        pipeline.fusion.configure({"size": size})
    assert profile.batch_ms(pipeline, 300)["ranking"] >= profile.batch_ms(pipeline, 50)["ranking"]
    _, terms = service.score(service.last_log)
    costs = {k.removeprefix("outer/cost/"): v for k, v in terms.items() if k.startswith("outer/cost/")}
    assert costs["latency_p99_ms"] >= costs["latency_p50_ms"] > 0 and costs["compute_ms_per_request"] > 0
    assert costs["flops_per_request"] == size * flops_per_candidate(pipeline.ranker)
    assert window_costs(profile, service.system.pipelines, service.last_log) == window_costs(
        profile, service.system.pipelines, service.last_log)  # a function of the profile and the log


def test_window_costs_by_hand():
    """Two pipelines' batches of one step and one of the next: each request waits for its batch."""

    class Log:
        requests = {"request": np.arange(6), "step": np.array([0, 0, 0, 0, 1, 1]),
                    "pipeline": np.array([0, 0, 0, 1, 0, 0])}

    class Part:
        def __init__(self, **config):
            self.config = config

    class Pipe:
        def __init__(self, size):
            self.recalls = [object(), object()]
            self.fusion, self.reranker = Part(size=size), Part(mmr_pool=size)
            self.ranker = type("R", (), {"model": torch.nn.Linear(3, 1, bias=False)})()

    flat = StageCost(1.0, 0.0)
    profile = ResourceProfile({"recall": StageCost(0.0, 0.5), "fusion": flat, "ranking": flat, "rerank": flat}, 10)
    out = window_costs(profile, [Pipe(4), Pipe(8)], Log())  # type: ignore[arg-type]
    # batches: (step 0, pipe 0) 3 requests -> 3 + 0.5*3*2 = 6 ms; (0, 1) 1 -> 4 ms; (1, 0) 2 -> 5 ms
    per_request = np.array([6, 6, 6, 4, 5, 5], float)
    assert out["latency_p50_ms"] == pytest.approx(np.percentile(per_request, 50))
    assert out["latency_p99_ms"] == pytest.approx(np.percentile(per_request, 99))
    assert out["compute_ms_per_request"] == pytest.approx((6 + 4 + 5) / 6)
    assert out["flops_per_request"] == pytest.approx((5 * 4 + 1 * 8) * 6 / 6)  # 2 x 3 weights per candidate


def test_the_service_times_its_own_stages_without_changing_anything(service):
    before = service.snapshot()
    ms = service.time_stages(64, repeats=1)
    assert set(ms) == set(STAGES) and all(v > 0 for v in ms.values())
    np.testing.assert_array_equal(service.serve().requests["clicks_exp"], before.serve().requests["clicks_exp"])


def test_a_profile_round_trips_through_json_and_a_bad_one_is_refused(service, tmp_path):
    profile = service.calibrate_resources(batch_sizes=(32, 64), repeats=1)
    profile.save(tmp_path / "profile.json")
    again = ResourceProfile.load(tmp_path / "profile.json")
    assert again.stages == profile.stages and again.slate_size == profile.slate_size
    with pytest.raises(ConfigError, match=re.escape("must have every stage ['recall', 'fusion', 'ranking', 'rerank'] "
                                                    "(missing ['rerank'])")):
        ResourceProfile.from_json('{"slate_size": 10, "stages": {"recall": {}, "fusion": {}, "ranking": {}}}')
    fresh = Deployment.start(TINY, static_baseline(TINY), world_seed=0, sim_seed=0, concurrency=300, window=300)
    _, terms = fresh.score(fresh.serve())
    assert not any(k.startswith("outer/cost/latency") for k in terms)  # no profile, no latency terms
    with pytest.raises(ConfigError, match="call calibrate_resources"):
        fresh.resource_metrics(fresh.last_log)


def _cascade(keep: int | None) -> Deployment:
    cfg = static_baseline_config()
    cfg.pipelines[0].prerank_keep = keep
    return Deployment.start(TINY, build_system(cfg, TINY), world_seed=0, sim_seed=0, concurrency=300, window=600)


def test_a_cascade_that_keeps_everything_serves_exactly_what_the_pipeline_alone_serves():
    torch.set_num_threads(1)
    plain, cascade = _cascade(None), _cascade(500)  # the fused set holds 500: the pre-ranker passes it all on
    assert cascade.system.pipelines[0].preranker is not None and "baseline/ranking/prerank" in cascade.agent_names()
    for _ in range(3):  # learning on: both rankers see the same impressions
        a, b = plain.serve(), cascade.serve()
        np.testing.assert_array_equal(a.impressions["item"], b.impressions["item"])
        np.testing.assert_array_equal(a.requests["clicks"], b.requests["clicks"])


def test_a_cascade_passes_keep_candidates_to_the_ranker_and_its_flops_follow(monkeypatch):
    torch.set_num_threads(1)
    service = _cascade(50)
    pipe = service.system.pipelines[0]
    widths = []
    act = type(pipe.ranker).act
    monkeypatch.setattr(pipe.ranker, "act", lambda batch, cands, catalog: widths.append(cands.items.shape[1])
                        or act(pipe.ranker, batch, cands, catalog))
    window = service.serve()
    assert set(widths) == {50} and (window.requests["candidates_scored"] <= 50).all()
    profile = ResourceProfile({s: StageCost(0.0, 1.0) for s in STAGES}, slate_size=10)
    expected = 500 * flops_per_candidate(pipe.preranker) + 50 * flops_per_candidate(pipe.ranker)
    assert window_costs(profile, service.system.pipelines, window)["flops_per_request"] == pytest.approx(expected)
    assert expected < 500 * flops_per_candidate(pipe.ranker) / 5  # a linear pre-ranker is far cheaper than the MLP
    assert "keep" in {k.key for k in resource_knobs(service)}  # AutoPerf evolves it
    with pytest.raises(ConfigError, match=r"`pipelines\[baseline\].prerank_keep` must be one of \[25, 50"):
        cfg = static_baseline_config()
        cfg.pipelines[0].prerank_keep = 7
        cfg.pipelines[0].__post_init__()


def test_a_window_split_with_a_concurrent_control_is_costed_on_the_pipelines_that_served_it():
    """The control's pipeline is appended to the running system only while the window is served; its requests are
    costed on the split system afterwards (an IndexError before), the same ranker serving both arms at the same
    fused candidate count: equal FLOPs per request."""
    from agents.evolution.env import EvolutionEnv

    env = EvolutionEnv(world=TINY, window=300, concurrency=100, warmup=1, control_share=0.5, resources=True)
    env.reset(seed=0)
    _, _, _, _, info = env.step(env.current_action())
    assert 0.2 < info["evolution/candidate_share"] < 0.8
    for key in ("latency_p50_ms", "compute_ms_per_request", "flops_per_request"):
        assert info[f"outer/cost/{key}"] > 0 and info[f"evolution/candidate/outer/cost/{key}"] > 0
    assert info["evolution/candidate/outer/cost/flops_per_request"] == info["outer/cost/flops_per_request"]
