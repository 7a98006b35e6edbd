"""LLMSearch's plumbing with a scripted test double: the start, the offered edits, greedy moves from the best,
rejected replies and their retries, the fallback accounting and the store. (The real model: test_llm.py.)"""

from __future__ import annotations

import json

import pytest

from agents.decision.params import Choice, ParamSpace, Range
from agents.evolution.llm import LLMError, ScriptedBackend
from agents.evolution.llm_search import LLMSearch
from agents.infra.store import KnowledgeStore

SPACE = ParamSpace([Choice("ranker", ("linear", "mlp"), "linear"), Choice("quota", (0.0, 0.1, 0.3), 0.1),
                    Range("boost", 0.0, 1.0, 0.0)])


def edit(name: str, rationale: str = "why not") -> str:
    return json.dumps({"edit": name, "rationale": rationale})


@pytest.fixture
def store(tmp_path):
    with KnowledgeStore(tmp_path / "store.db") as s:
        yield s


def test_it_measures_the_start_then_moves_from_the_best_config(store):
    backend = ScriptedBackend([edit("ranker=mlp"), edit("quota=0.3"), edit("boost=0.5")])
    search = LLMSearch(SPACE, backend, store=store, levels=3, shuffle=False)
    first = search.propose()
    assert first == {"ranker": "linear", "quota": 0.1, "boost": 0.0} and backend.calls == []  # no call for the start
    search.tell(first, 0.2)
    second = search.propose()
    offered = backend.calls[0]["schema"]["properties"]["edit"]["enum"]
    assert offered == ["ranker=mlp", "quota=0", "quota=0.3", "boost=0.5", "boost=1"]  # boost at 3 levels, start excluded
    assert second == {"ranker": "mlp", "quota": 0.1, "boost": 0.0}
    search.tell(second, 0.5)  # better: the next edit starts from it
    third = search.propose()
    assert third == {"ranker": "mlp", "quota": 0.3, "boost": 0.0}
    assert "ranker=linear" not in backend.calls[1]["schema"]["properties"]["edit"]["enum"]  # served already
    shuffled = LLMSearch(SPACE, ScriptedBackend([edit("quota=0")]), levels=3, seed=1)
    shuffled.tell(shuffled.propose(), 0.0)
    shuffled.propose()
    enum = shuffled.backend.calls[0]["schema"]["properties"]["edit"]["enum"]
    assert sorted(enum) == sorted(offered) and enum != offered
    prompt = backend.calls[1]["messages"][1]["content"]
    assert '"ranker":"mlp"' in prompt and "(reward 0.5000)" in prompt and "ranker=mlp -> 0.5000" in prompt
    search.tell(third, 0.1)  # worse: the base stays mlp/0.1
    search.propose()
    assert search.steps[-1].config == {"ranker": "mlp", "quota": 0.1, "boost": 0.5}
    assert search.best() == ({"ranker": "mlp", "quota": 0.1, "boost": 0.0}, 0.5)
    assert dict(search.routes) == {"start": 1, "direct": 3}
    rows = store.designs(agent="llm_search")
    assert [(r.route, r.reward) for r in rows] == [("start", 0.2), ("direct", 0.5), ("direct", 0.1)]
    assert rows[1].document == {"config": second, "edit": "ranker=mlp"} and rows[1].rationale == "why not"


def test_bad_replies_are_retried_with_the_reason_and_a_total_failure_serves_the_best_as_a_fallback(store):
    replies = ["add more exploration please", edit("ranker=transformer"), edit("quota=0.3"),  # 2 bad, then good
               "[1, 2]", LLMError("server down"), '{"edit": "quota=', ]  # all three attempts of the next step fail
    search = LLMSearch(SPACE, ScriptedBackend(replies), store=store, max_retries=2)
    search.tell(search.propose(), 0.3)
    config = search.propose()
    assert config["quota"] == 0.3 and search.steps[-1].route == "retried"
    assert [e.split(" (")[0] for e in search.steps[-1].errors] == [
        "no JSON object in the reply", "`edit` must be one of the offered edits"]
    feedback = search.backend.calls[2]["messages"][1]["content"]
    assert "Your last reply was rejected: `edit` must be one of the offered edits (got 'ranker=transformer')" in feedback
    search.tell(config, 0.1)
    fallback = search.propose()
    assert fallback == {"ranker": "linear", "quota": 0.1, "boost": 0.0}  # the best so far, served again
    step = search.steps[-1]
    assert step.route == "fallback" and step.edit is None and len(step.errors) == 3
    assert "backend error: server down" in step.errors[1] and "not valid JSON" in step.errors[2]
    assert search.routes["fallback"] == 1 and search.routes["retried"] == 1
    failed = store.designs(agent="llm_search", valid=False)
    assert len(failed) == 5 and failed[0].document == {"raw": "add more exploration please"}


def test_tell_rejects_a_config_it_did_not_propose_and_options_are_validated():
    search = LLMSearch(SPACE, ScriptedBackend([]))
    with pytest.raises(ValueError, match="returned by this controller's `propose`"):
        search.tell({"ranker": "mlp", "quota": 0.1, "boost": 0.0}, 1.0)
    with pytest.raises(Exception, match=r"`levels` must be .*11.*got 1"):
        LLMSearch(SPACE, ScriptedBackend([]), levels=1)
    with pytest.raises(Exception, match="quota"):
        LLMSearch(SPACE, ScriptedBackend([]), start={"quota": 0.7})


def test_when_every_neighbour_was_served_it_serves_the_best_again():
    space = ParamSpace([Choice("x", (0, 1), 0)])
    search = LLMSearch(space, ScriptedBackend([edit("x=1")]))
    search.tell(search.propose(), 1.0)
    search.tell(search.propose(), 0.0)
    assert search.propose() == {"x": 0} and search.steps[-1].route == "exhausted"
