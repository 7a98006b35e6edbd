"""AutoTrain's paper loop: method cards parsed into designs (checked, never executed), offline screening, online
twins, the knowledge store; the bundled model on the shipped cards (slow)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from agents.decision.models import ModelDesign
from agents.evolution.autotrain import (
    PARSE_SCHEMA,
    AutoTrain,
    MethodCard,
    card_answers,
    fidelity,
    method_cards,
    parse_card,
)
from agents.evolution.llm import LLMError, ScriptedBackend
from agents.evolution.offline import TrainRecipe, logged_data, time_split
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError

CARD = MethodCard("toy", "A cross network of three layers beside a deep network.")


def _doc(**over):
    doc = {"arch": "dcn", "hidden": 64, "depth": 2, "cross_layers": 3, "fm_dim": 8, "deep": False, "experts": 3,
           "w_like": 0.5, "w_dwell": 0.1}
    return json.dumps({**doc, **over})


@pytest.fixture(scope="module")
def logged(logged_small):
    return logged_small


def test_the_shipped_cards_and_their_answer_key():
    cards = {c.name: c for c in method_cards()}
    assert set(cards) == {"wide_and_deep", "dcn", "deepfm", "mmoe", "din"} and all(len(c.text) > 400 for c in cards.values())
    answers = card_answers()
    assert set(answers) == set(cards) and answers["din"] == {"arch": "unsupported"}
    assert all("answers" not in c.text and '"arch"' not in c.text for c in cards.values())  # the key is not in the cards
    with pytest.raises(ConfigError, match="must be a directory of"):
        method_cards("/nonexistent/cards")


def test_bad_designs_from_the_model_are_rejected_with_a_reason_and_never_run(tmp_path):
    marker = tmp_path / "executed"
    replies = [
        _doc(),  # valid
        _doc(arch="unsupported"),
        _doc(arch="transformer"),  # not in the schema's enum
        _doc(depth=9),  # beyond the schema's maximum
        "Sure! Here is the design: arch = dcn",  # no JSON
        f"__import__('os').system('touch {marker}')",  # code is text here, never run
        '{"arch": "dcn", "hidden": 64, "extra": {"nested": [[[[1]]]]}}',
        LLMError("endpoint down"),
    ]
    backend = ScriptedBackend(replies)
    parsed = [parse_card(CARD, backend) for _ in replies]
    assert parsed[0].valid and parsed[0].design == ModelDesign(arch="dcn", cross_layers=3)
    assert parsed[0].weights == {"w_like": 0.5, "w_dwell": 0.1} and parsed[0].error is None
    reasons = [p.error for p in parsed[1:]]
    assert reasons[0] == "the model found the method outside the design language (arch: unsupported)"
    assert reasons[1].startswith("the design does not match the schema at arch: 'transformer' is not one of")
    assert reasons[2].startswith("the design does not match the schema at depth: 9 is greater than the maximum of 4")
    assert reasons[3].startswith("unreadable reply: no JSON object in the reply")
    assert reasons[4].startswith("unreadable reply:")
    assert reasons[5].startswith("the design does not match the schema")
    assert reasons[6] == "the backend failed: endpoint down" and parsed[-1].route == "failed"
    assert not any(p.valid for p in parsed[1:]) and all(p.design is None for p in parsed[1:])
    assert not marker.exists()
    assert backend.calls[0]["schema"] is PARSE_SCHEMA and "Method card `toy`" in backend.calls[0]["messages"][1]["content"]


def test_fidelity_scores_a_parse_against_the_answer_key():
    backend = ScriptedBackend([_doc(arch="fm", deep=True, fm_dim=16, hidden=64, w_like=0.3), _doc(arch="mlp")])
    answer = card_answers()["deepfm"]
    right, wrong = parse_card(CARD, backend), parse_card(CARD, backend)
    assert fidelity(right, answer) == pytest.approx(1.0) and fidelity(wrong, answer) == 0.0


def test_screen_online_and_record(logged, tmp_path):
    svc, log = logged
    train, valid = time_split(logged_data(log))
    backend = ScriptedBackend([_doc(arch="wide_deep"), _doc(arch="transformer")])
    with KnowledgeStore(tmp_path / "store.db") as store:
        exp = store.start_experiment("autotrain-test", {}, seed=0)
        at = AutoTrain(backend, ModelDesign(arch="mlp"), TrainRecipe(updates=100), store=store, exp_id=exp)
        results = at.screen([CARD, MethodCard("bad", "?")], train, valid)
        ok, bad = results
        assert ok.offline is not None and bad.offline is None and not bad.parsed.valid
        assert ok.offline.train_rows == len(train) and set(ok.offline.gain) == {"auc", "log_loss", "ndcg@10",
                                                                                "calibration", "ece"}
        before = svc.now
        gain = at.online(svc, ok, train, windows=1)
        assert math.isfinite(gain) and gain == pytest.approx(ok.online["candidate"] - ok.online["incumbent"])
        assert svc.now == before  # the twins served; the deployment did not move
        assert at.ledger.rows[0]["name"] == "toy" and at.ledger.rows[0]["online_gain"] == gain
        with pytest.raises(ConfigError, match=r"card `bad` has no valid design to test online"):
            at.online(svc, bad, train)
        ids = at.record()
        rows = store.designs(agent="autotrain")
        assert [r.id for r in rows] == ids and [r.valid for r in rows] == [True, False]
        assert rows[0].document["design"]["arch"] == "wide_deep" and rows[0].reward == pytest.approx(gain)
        assert rows[0].document["offline"]["gain"]["auc"] == pytest.approx(ok.offline.auc_gain)
        assert rows[1].error.startswith("the design does not match the schema") and rows[1].document["design"] is None


def test_recording_is_not_copied_into_twins(logged):
    svc, log = logged
    assert len(log) % 10 == 0 and len(log) >= 4 * 1000 * 10 and list(log.windows) == [0, 1, 2, 3]  # whole steps
    rec = svc.start_recording()
    twin = svc.fork()
    twin.serve()
    assert twin._sim.recorder is None and rec._parts == []  # the twin served; nothing reached the recording
    with pytest.raises(ConfigError, match="needs a recording started"):
        twin.stop_recording()
    with pytest.raises(ValueError, match="the recorder holds no impressions"):
        svc.stop_recording()
    assert svc._sim.recorder is None


@pytest.mark.slow
def test_the_bundled_model_parses_the_shipped_cards_into_designs_that_train(logged):
    """Card -> design -> model -> offline result with the real offline model (SmolLM2-135M, constrained decoding,
    temperature 0). The 135M model is weak: the test asserts the loop, not its judgement (measured 2026-12-01: 4
    of 5 archs right, deepfm read as linear; bench/autotrain.py reports the rates)."""
    from agents.evolution.llm import SmolLM2Backend

    _, log = logged
    train, valid = time_split(logged_data(log))
    at = AutoTrain(SmolLM2Backend(seed=0).load(), ModelDesign(arch="mlp"), TrainRecipe(updates=100))
    results = at.screen(method_cards(), train, valid)
    assert len(results) == 5 and all(r.parsed.route == "constrained" for r in results)
    built = [r for r in results if r.parsed.valid]
    assert len(built) >= 3  # every reply is schema-valid by construction; "unsupported" is the one way to refuse
    for r in built:
        assert r.parsed.design is not None and np.isfinite(list(r.offline.candidate.values())).all()
    for r in results:
        assert r.parsed.valid or r.parsed.error


def test_the_parse_prompt_carries_the_cards_results_from_earlier_experiments(tmp_path):
    (dcn,) = [c for c in method_cards() if c.name == "dcn"]
    with KnowledgeStore(tmp_path / "store.db") as store:
        past = store.start_experiment("past", {}, 0)
        design = {"arch": "dcn", "hidden": [64, 32], "cross_layers": 2}
        for gain, online in [(-0.004, None), (0.012, 0.031)]:
            store.add_design(past, "autotrain", {"card": "dcn", "design": design, "offline": {"gain": gain}},
                             "method card dcn", "constrained", True, None, online)
        store.add_design(past, "autotrain", {"card": "mmoe", "design": {"arch": "mmoe"}, "offline": {"gain": 0.5}},
                         "method card mmoe", "constrained", True, None, 0.9)  # another card: not in dcn's prompt
        store.finish_experiment(past)
        backend = ScriptedBackend([_doc()])
        at = AutoTrain(backend, store=store, exp_id=store.start_experiment("now", {}, 0), earlier=1)
        at.parse_all([dcn])
    prompt = backend.calls[0]["messages"][-1]["content"]
    assert "In earlier experiments this card was read as:" in prompt
    (line,) = [x for x in prompt.splitlines() if x.startswith("- {")]  # one (earlier=1): the best online gain
    assert '"arch":"dcn"' in line and "offline AUC gain +0.0120, online +0.0310 clicks/request" in line
    assert "mmoe" not in prompt.split("In earlier experiments")[1]


@pytest.mark.slow
def test_the_recipe_search_finds_a_better_recipe_offline(logged, tmp_path):
    """AutoTrain's recipe is a decision space it searches: from a poor start (lr 1e-3, heavy weight decay, the like and
    dwell heads outweighing the click head), 8 TPE trials at the same budget find a recipe whose held-out AUC beats the
    start's, each retrained from 3 initialisations, by more than 3 standard errors; every trial is stored."""
    from agents.decision.models import ModelDesign
    from agents.evolution.offline import fit, offline_metrics

    _, log = logged
    train, valid = time_split(logged_data(log))
    poor = TrainRecipe(lr=1e-3, weight_decay=1e-2, updates=300, w_like=2.0, w_dwell=1.0)
    design = ModelDesign(arch="mlp")
    with KnowledgeStore(tmp_path / "store.db") as store:
        agent = AutoTrain(ScriptedBackend([]), recipe=poor, store=store, exp_id=store.start_experiment("recipe", {}, seed=0))
        search = agent.tune_recipe(design, train, valid, trials=8)
        stored = store.designs(agent="autotrain/recipe")
    assert len(search.trials) == 8 and search.start[0] == poor
    assert all(r.updates == 300 for r, _ in search.trials)  # the budget held
    segments = int(max(train.segment.max(), valid.segment.max())) + 1

    def aucs(recipe: TrainRecipe) -> np.ndarray:  # the same recipe from 3 initialisations: its own spread
        return np.array([offline_metrics(fit(design, train, recipe, seed, segments), valid)["auc"] for seed in (0, 1, 2)])

    start, best = aucs(poor), aucs(search.best[0])
    se = np.sqrt(start.var(ddof=1) / 3 + best.var(ddof=1) / 3)
    assert best.mean() - start.mean() > 3 * se and search.gain > 0
    assert len(stored) == 1 and len(stored[0].document["trials"]) == 8 and stored[0].reward == pytest.approx(search.gain)
