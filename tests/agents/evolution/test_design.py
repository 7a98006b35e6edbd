"""The design language: schema, validation messages, repair, deduplication, the round trip to configs, and
that every valid design builds a system that serves."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

import envs
from agents.decision.configs import (
    ROUTES,
    PipelineConfig,
    SystemConfig,
    baseline_config,
    build_pipeline,
    build_system,
    cold_start_config,
    segment_routed_config,
)
from agents.decision.fusion import FUSION_SIZES
from agents.decision.system import Simulation, System
from agents.evolution.design import (
    DEFAULT_DESIGN,
    DESIGN_SCHEMA,
    HIDDEN_WIDTHS,
    MIN_SUPPLY,
    ROUTE_K,
    config_to_design,
    design_key,
    design_schema,
    design_to_config,
    pipeline_to_config,
    repair_design,
    validate_design,
)
from envs.validation import ConfigError

TINY = envs.WorldConfig(num_items=1000, num_users=3000, num_topics=8, num_creators=50)


def design(**changes) -> dict:
    """DEFAULT_DESIGN (the baseline pipeline) with some keys of its pipeline replaced."""
    doc = copy.deepcopy(DEFAULT_DESIGN)
    doc["pipelines"][0].update(copy.deepcopy(changes))
    return doc


def test_schema_is_draft_2020_12_and_the_baseline_is_a_valid_design():
    Draft202012Validator.check_schema(DESIGN_SCHEMA)
    assert DESIGN_SCHEMA["$schema"].endswith("2020-12/schema")
    assert validate_design(DEFAULT_DESIGN) == []
    assert DEFAULT_DESIGN["pipelines"][0]["routes"] == {
        "popularity": {"quota": 0.3}, "collaborative": {"quota": 0.2}, "content": {"quota": 0.3},
        "fresh": {"quota": 0.1}, "exploration": {"quota": 0.1}}
    # small enough for a 135M model's prompt
    assert len(json.dumps(DEFAULT_DESIGN, separators=(",", ":"))) < 450


def test_round_trip_between_configs_and_designs():
    for cfg in (baseline_config(), baseline_config("linear"), cold_start_config()):
        doc = config_to_design(cfg)
        assert validate_design(doc) == []
        back = design_to_config(doc, base=cfg)
        assert isinstance(back, PipelineConfig)
        assert back.routes == cfg.routes and back.ranker == cfg.ranker and back.fusion_size == cfg.fusion_size
        assert config_to_design(back) == doc
    routed = segment_routed_config()
    doc = config_to_design(routed)
    assert doc["routing"] == {"new": 1} and [p["name"] for p in doc["pipelines"]] == ["baseline", "cold_start"]
    back = design_to_config(doc, base=routed)
    assert isinstance(back, SystemConfig) and back.routing == {"new": "cold_start"}
    assert [p.routes for p in back.pipelines] == [p.routes for p in routed.pipelines]
    assert config_to_design(back) == doc


def test_parameters_outside_the_language_come_from_the_base_config():
    base = cold_start_config()  # popularity k 400, ranker lr 1e-2 ...
    base.routes[0].params["half_life"] = 4.0
    doc = config_to_design(base)
    doc["pipelines"][0]["routes"]["popularity"]["quota"] = 0.5
    cfg = design_to_config(doc, base=base)
    assert cfg.routes[0].params == {"half_life": 4.0, "k": 400} and cfg.routes[0].quota == 0.5
    assert cfg.ranker.params == {"lr": 1e-2, "epochs": 4, "batch_size": 256}
    assert design_to_config(doc).ranker.params == {}  # no base: the agents' defaults


def test_design_to_config_returns_a_system_config_when_asked_or_needed():
    assert isinstance(design_to_config(DEFAULT_DESIGN), PipelineConfig)
    assert isinstance(design_to_config(DEFAULT_DESIGN, system=True), SystemConfig)
    assert isinstance(design_to_config({**DEFAULT_DESIGN, "routing": {"new": 0}}), SystemConfig)


def test_a_config_outside_the_language_is_refused_by_name():
    cfg = baseline_config()
    cfg.ranker.hidden = 100
    with pytest.raises(ConfigError, match=r"`pipelines\[baseline\]\.ranker\.hidden` must be one of \[16, 32, 64, 128, 256\].*\(got 100\)"):
        config_to_design(cfg)


@pytest.mark.parametrize(
    "doc, message",
    [
        (design(routes={"poplarity": {"quota": 1.0}}),
         r"`pipelines\[0\]\.routes` has unknown keys \['poplarity'\] .*; did you mean 'popularity'\?"),
        (design(fusion_size=450), r"`pipelines\[0\]\.fusion_size` must be one of \[100, 200, 300, 500\] \(got 450\)"),
        (design(ranker={"arch": "mpl", "hidden": 64, "per_segment": False}),
         r"`pipelines\[0\]\.ranker\.arch` must be one of \['linear', 'mlp'\] \(got 'mpl'\); did you mean 'mlp'\?"),
        (design(routes={"popularity": {"quota": 1.5}}),
         r"`pipelines\[0\]\.routes\.popularity\.quota` must be in \[0\.0, 1\.0\] \(got 1\.5\)"),
        (design(routes={"fresh": {"quota": 1.0, "k": 400}}),
         r"`pipelines\[0\]\.routes\.fresh\.k` must be one of \[25, 50, 100, 200\] \(got 400\)"),
        (design(routes={}), r"`pipelines\[0\]\.routes` must have at least 1 keys \(got 0\)"),
        (design(heads={"w_click": 1.0, "w_like": 0.3}), r"`pipelines\[0\]\.heads` is missing the required key 'w_dwell'"),
        (design(ranker={"arch": "mlp", "hidden": 64, "per_segment": "yes"}),
         r"`pipelines\[0\]\.ranker\.per_segment` must be of type boolean \(got str 'yes'\)"),
        (design(routes={"popularity": {"quota": 0.0}, "content": {"quota": 0.0}}),
         r"`pipelines\[0\]\.routes` quotas must not all be 0"),
        (design(routes={"collaborative": {"quota": 1.0}}),
         rf"one route other than 'collaborative' must supply at least {MIN_SUPPLY} candidates .*at most 0\)"),
        (design(routes={"collaborative": {"quota": 0.99}, "fresh": {"quota": 0.01, "k": 25}}, fusion_size=500),
         rf"must supply at least {MIN_SUPPLY} candidates .*at most 5\)"),
        (design(routes={"popularity": {"quota": 0.1}, "fresh": {"quota": 0.1}, "collaborative": {"quota": 0.8}},
                fusion_size=100),  # 10 + 10 candidates that may overlap
         rf"must supply at least {MIN_SUPPLY} candidates .*at most 10\)"),
        ({"pipelines": []}, r"`pipelines` must have at least 1 items \(got 0\)"),
        ({**DEFAULT_DESIGN, "routing": {"new": 1}}, r"`routing\.new` must be a pipeline index in \[0, 0\] \(got 1\)"),
        ({**DEFAULT_DESIGN, "routing": {"newbies": 0}}, r"`routing` has unknown keys \['newbies'\]"),
        ({"pipelines": DEFAULT_DESIGN["pipelines"] * 2}, r"`pipelines` names must be unique"),
        ({**DEFAULT_DESIGN, "extra": 1}, r"`design` has unknown keys \['extra'\]"),
        ([1, 2], r"`design` must be of type object \(got list"),
    ],
)
def test_validation_names_the_key_the_allowed_values_and_the_value(doc, message):
    errors = validate_design(doc)
    assert any(__import__("re").search(message, e) for e in errors), errors
    with pytest.raises(ConfigError, match="invalid design"):
        design_to_config(doc)


def test_single_pipeline_schema_allows_one_pipeline_and_no_routing():
    one = design_schema(max_pipelines=1)
    assert "routing" not in one["properties"]
    two = {"pipelines": [DEFAULT_DESIGN["pipelines"][0], {**DEFAULT_DESIGN["pipelines"][0], "name": "b"}]}
    assert validate_design(two) == []
    assert any("at most 1 items" in e for e in validate_design(two, one))


def test_repair_clamps_renames_drops_and_notes_every_change():
    messy = {
        "pipelines": [{
            "name": "Cold Start!",
            "routes": [{"type": "poplarity", "quota": 1.7, "k": 300}, {"type": "teleport", "quota": 0.2},
                       {"type": "popularity", "quota": 0.1}, {"type": "fresh", "quota": "0.2"}],
            "fusion_size": 450,
            "ranker": {"arch": "MLP", "hidden": 100, "per_segment": "true"},
            "heads": {"w_clik": 2},
            "rerank": {"mmr_lambda": -1, "freshness_boost": 0, "risk_threshold": 0.5, "exposure_cap": 250},
            "colour": "blue",
        }],
        "routing": {"new": 3},
        "rationale": 42,
    }
    assert validate_design(messy)
    fixed, notes = repair_design(messy)
    assert validate_design(fixed) == [], fixed
    pipe = fixed["pipelines"][0]
    assert pipe["name"] == "cold_start"
    assert pipe["routes"] == {"popularity": {"quota": 1.0, "k": 200}, "fresh": {"quota": 0.2}}
    assert pipe["fusion_size"] == 500 and pipe["ranker"] == {"arch": "mlp", "hidden": 128, "per_segment": True}
    assert pipe["heads"] == {"w_click": 1.0, "w_like": 0.3, "w_dwell": 0.2}  # missing heads from the base
    assert pipe["rerank"]["mmr_lambda"] == 0.0 and pipe["rerank"]["exposure_cap"] == 300
    assert fixed["routing"] == {} and fixed["rationale"] == "42"
    text = "\n".join(notes)
    for expected in ("'poplarity' read as 'popularity'", "'teleport' is not one of", "repeated route type 'popularity'",
                     "1.7 clamped to 1.0", "300 set to the nearest allowed value 200", "450 set to the nearest",
                     "'MLP' read as 'mlp'", "'true' read as true", "key 'w_clik' read as 'w_click'",
                     "w_like`: missing, kept the current 0.3", "unknown keys ['colour'] dropped",
                     "-1 clamped to 0.0", "pipeline 1 does not exist", "'0.2' read as 0.2"):
        assert expected in text, (expected, notes)
    assert messy["pipelines"][0]["name"] == "Cold Start!"  # the input is not modified


def test_repair_fills_missing_parts_from_the_base_and_equalises_zero_quotas():
    base = config_to_design(cold_start_config())
    fixed, notes = repair_design({"pipelines": [{"name": "x", "routes": {"fresh": {"quota": 0}, "content": {"quota": 0}}}]},
                                 base=base)
    assert validate_design(fixed) == []
    pipe = fixed["pipelines"][0]
    assert pipe["fusion_size"] == 300 and pipe["routes"] == {"fresh": {"quota": 0.5}, "content": {"quota": 0.5}}
    assert any("all quotas 0" in n for n in notes)


@pytest.mark.parametrize("doc", ["prose, not a design", {"pipelines": [{"routes": [{"type": "teleport"}]}]},
                                 {"pipelines": "many"}])
def test_what_cannot_be_repaired_stays_invalid(doc):
    fixed, notes = repair_design(doc, base={})
    assert validate_design(fixed) and notes


def test_design_key_ignores_what_does_not_change_the_system():
    doc = copy.deepcopy(DEFAULT_DESIGN)
    same = copy.deepcopy(DEFAULT_DESIGN)
    same["rationale"] = "why not"
    same["pipelines"][0]["name"] = "renamed"
    same["pipelines"][0]["routes"] = {k: {"quota": v["quota"] * 2} for k, v in reversed(list(doc["pipelines"][0]["routes"].items()))}
    same["pipelines"][0]["routes"]["popularity"]["k"] = 200  # popularity's default k
    assert design_key(same) == design_key(doc)
    for change in ({"fusion_size": 300}, {"routes": {"popularity": {"quota": 1.0}}},
                   {"ranker": {"arch": "mlp", "hidden": 64, "per_segment": True}},
                   {"rerank": {**doc["pipelines"][0]["rerank"], "mmr_lambda": 0.2}}):
        assert design_key(design(**change)) != design_key(doc)


def serves(system: System, learn: bool = True, requests: int = 600) -> None:
    torch.set_num_threads(1)
    sim = Simulation(envs.World(TINY, seed=0), system, concurrency=200, seed=0)
    log = sim.window(requests, learn=learn)
    assert log.num_requests >= requests and log.impressions["item"].min() >= 0


@pytest.mark.parametrize(
    "doc",
    [
        DEFAULT_DESIGN,
        config_to_design(segment_routed_config()),
        design(routes={"exploration": {"quota": 1.0, "k": 25}}, fusion_size=100,
               ranker={"arch": "linear", "hidden": 16, "per_segment": True}),
        design(routes={"collaborative": {"quota": 0.9, "k": 200}, "fresh": {"quota": 0.1, "k": 25}}, fusion_size=200),
        design(rerank={"mmr_lambda": 1.0, "freshness_boost": 1.0, "risk_threshold": 0.0, "exposure_cap": 100},
               heads={"w_click": 0.0, "w_like": 0.0, "w_dwell": 0.0}),
    ],
    ids=["baseline", "segment_routed", "one_exploration_route", "mostly_collaborative", "extreme_rerank"],
)
def test_valid_designs_build_systems_that_serve_and_learn(doc):
    assert validate_design(doc) == []
    serves(build_system(design_to_config(doc, system=True), TINY))


def designs() -> st.SearchStrategy[dict]:
    """Arbitrary documents of the language (most of them valid)."""
    route = {kind: st.fixed_dictionaries({"quota": st.floats(0, 1)}, optional={"k": st.sampled_from(ROUTE_K[kind])})
             for kind in ROUTES}
    unit = st.floats(0, 1)
    pipeline = st.fixed_dictionaries({
        "name": st.sampled_from(["a", "b"]),
        "routes": st.fixed_dictionaries({}, optional=route),
        "fusion_size": st.sampled_from(FUSION_SIZES),
        "ranker": st.fixed_dictionaries({"arch": st.sampled_from(["linear", "mlp"]),
                                         "hidden": st.sampled_from(HIDDEN_WIDTHS), "per_segment": st.booleans()}),
        "heads": st.fixed_dictionaries({"w_click": unit, "w_like": unit, "w_dwell": unit}),
        "rerank": st.fixed_dictionaries({"mmr_lambda": unit, "freshness_boost": unit, "risk_threshold": unit,
                                         "exposure_cap": st.sampled_from([0, 100, 300, 1000])}),
    })
    return st.fixed_dictionaries({"pipelines": st.lists(pipeline, min_size=1, max_size=2, unique_by=lambda p: p["name"])},
                                 optional={"routing": st.dictionaries(st.sampled_from(["new", "casual", "heavy"]),
                                                                      st.integers(0, 1))})


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(designs())
def test_every_valid_design_builds_a_system_that_serves(doc):
    if validate_design(doc):  # invalid ones must fail loudly instead
        with pytest.raises(ConfigError):
            design_to_config(doc)
        return
    assert config_to_design(design_to_config(doc, system=True))["pipelines"] == doc["pipelines"]
    serves(build_system(design_to_config(doc, system=True), TINY), learn=False, requests=400)


def test_pipeline_to_config_reads_the_running_agents():
    cfg = cold_start_config()
    pipe = build_pipeline(cfg, TINY)
    pipe.reranker.configure({"mmr_lambda": 0.25})
    read = pipeline_to_config(pipe)
    assert [r.kind for r in read.routes] == [r.kind for r in cfg.routes]
    assert [r.params["k"] for r in read.routes] == [400, 100, 100]
    assert read.rerank["mmr_lambda"] == 0.25 and read.fusion_size == 300
    assert config_to_design(read)["pipelines"][0]["routes"]["popularity"] == {"quota": 0.7, "k": 400}
