"""The LLM design experiment's plumbing (a scripted test double stands in for the model here; the real
model's run is `python -m experiments.llm_design`, see README) and its structural-change accounting."""

from __future__ import annotations

import copy
import json

import pandas as pd

from agents.decision.configs import baseline_config
from agents.evolution.design import DEFAULT_DESIGN, config_to_design
from agents.evolution.llm import ScriptedBackend
from agents.infra.store import KnowledgeStore
from experiments.llm_design import DesignExperimentConfig, run_design, structural_changes


def design(**changes) -> dict:
    doc = copy.deepcopy(config_to_design(baseline_config()))
    doc["pipelines"][0].update(copy.deepcopy(changes))
    return doc


def test_structural_changes_are_told_apart_from_parameter_changes():
    base = design()
    routes = {k: v for k, v in base["pipelines"][0]["routes"].items() if k != "exploration"}
    after = design(routes=routes, ranker={"arch": "linear", "hidden": 64, "per_segment": True},
                   rerank={**base["pipelines"][0]["rerank"], "mmr_lambda": 0.2})
    structural, parametric = structural_changes(base, after)
    assert structural == ["route -exploration", "ranker.arch mlp -> linear", "ranker.per_segment False -> True"]
    assert parametric == ["rerank.mmr_lambda 0.0 -> 0.2"]
    assert structural_changes(base, base) == ([], [])


def test_run_design_writes_every_step_and_summarises_what_was_accepted(tmp_path):
    doc = copy.deepcopy(DEFAULT_DESIGN)
    doc["pipelines"][0]["ranker"] = {**doc["pipelines"][0]["ranker"], "per_segment": True}
    replies = [json.dumps({**doc, "rationale": "towers per segment"}), "not json at all", "{"]
    cfg = DesignExperimentConfig(out=str(tmp_path), budget=2, warmup=1, window=400, ab_windows=1, start="baseline", mode="design")
    summary = run_design(cfg, backend=ScriptedBackend(replies))
    frame = pd.read_csv(tmp_path / "designs.csv")
    assert list(frame["step"]) == [0, 1] and summary["steps"] == 2
    assert frame.loc[0, "structural"] == "ranker.per_segment False -> True" and frame.loc[0, "proposed"]
    assert not frame.loc[1, "proposed"]  # garbage on every try: no proposal, counted, and the run went on
    assert summary["proposals"] == 1 and summary["tested"] == 1
    assert summary["accepted_structural"] == len([a for a in summary["accepted"] if a["structural"]])
    assert json.loads((tmp_path / "summary.json").read_text())["backend"] == "scripted"
    with KnowledgeStore(summary["store"]) as store:  # every reply is recorded in the shared store, the garbage too
        designs = store.designs(exp_id=summary["experiment_id"])
    assert len(designs) >= 3 and sum(d.valid for d in designs) == 1
