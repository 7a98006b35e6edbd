"""Fuzzing every door a model's reply comes in by: one bad reply never ends a run.

Replies and HTTP bodies are mutated from valid ones by a seeded generator (and, for the design language, by
hypothesis): truncated JSON, prose around JSON and prose alone, nesting up to 100,000 levels, integers of up
to 10,000 digits, 1e999, NaN and Infinity, lone surrogates (escaped and raw), and a wrong type at every level
of the document or of the response envelope, ``usage`` included. They are fed to
:func:`~agents.evolution.llm.parse_json_reply`, the design repair and validation, the designer loop,
:class:`~agents.evolution.llm_search.LLMSearch` and :class:`~agents.evolution.llm.OpenAIBackend` (the bodies
are served by a local HTTP server on 127.0.0.1). No exception may escape; each bad reply must be a counted
rejection with a non-empty reason, both in the loop's bookkeeping and in the knowledge store; valid replies
must still be accepted.

The designer and LLMSearch get the fuzzed replies from a scripted test double (:class:`Fuzzed`): this is a
test of their plumbing (what happens to a reply), not of a model, so no model is loaded in this file.
"""

from __future__ import annotations

import copy
import http.client
import json
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.decision.params import Choice, ParamSpace, Range
from agents.evolution.design import DEFAULT_DESIGN, design_key, repair_design, validate_design
from agents.evolution.designer import LLMDesigner, apply_edit, parse_edit
from agents.evolution.llm import (
    MAX_JSON_DEPTH,
    LLMError,
    OpenAIBackend,
    Reply,
    ScriptedBackend,
    parse_json_reply,
)
from agents.evolution.llm_search import LLMSearch
from agents.evolution.llm_server import serve
from agents.infra.store import KnowledgeStore

MARK = "@@FUZZ@@"  # a placeholder string, replaced by raw JSON text after json.dumps
PROSE = ["I think you should add more exploration to the pipeline.", "Sure! Let me think step by step.",
         "", "   \n\t", "null", "```json\n```", "The answer is 42.", "{", "[", "}", "]]]", "\"unterminated",
         "Error: context length exceeded", "<|im_end|>", "\x00\x01\x02", "\ud800 lone", "{'single': 'quotes'}"]
WRONG = [None, True, False, 0, -1, 2.5, -0.0, 1e308, -1e308, 10**300, "", "text", "0.3", "true", "popularity",
         [], {}, [1, "a"], {"x": 1}, [[[]]], {"quota": "high"}, "\ud800", "\udfff\ud800"]
MUST_FAIL = {"truncated", "deep", "huge_int", "huge_float", "nan", "prose_only"}  # never JSON a reply may hold
CLASSES = ("valid", "prose", "truncated", "prose_only", "deep", "huge_int", "huge_float", "nan", "surrogate",
           "raw_surrogate", "wrong_type", "garbage")


# ------------------------------------------------------------------------------------------ the mutations


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every place in a JSON value down to 8 levels, the root included."""
    yield prefix
    if len(prefix) >= 8:
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from paths(v, (*prefix, i))


def replaced(doc: Any, path: tuple[Any, ...], new: Any) -> Any:
    """``doc`` with the value at ``path`` replaced (containers along the path copied; the rest shared)."""
    if not path:
        return new
    out = copy.copy(doc)
    out[path[0]] = replaced(doc[path[0]], path[1:], new)
    return out


def deep_text(rng: np.random.Generator) -> str:
    depth = int(rng.choice([MAX_JSON_DEPTH + 1, 200, 1000, 5000, 100_000]))
    kind = int(rng.integers(4))
    if kind == 0:
        return "[" * depth  # unclosed, as a runaway model writes it
    if kind == 1:
        return "[" * depth + "]" * depth
    if kind == 2:
        return '{"a":' * depth + "1" + "}" * depth
    half = depth // 2 + 1
    return '[{"x":' * half + "0" + "}]" * half


def raw_token(kind: str, rng: np.random.Generator) -> str:
    """Raw JSON text of one value of a mutation class."""
    if kind == "huge_int":
        digits = int(rng.choice([41, 400, 4301, 10_000]))
        return ("-" if rng.random() < 0.3 else "") + "9" * digits
    if kind == "huge_float":
        return str(rng.choice(["1e999", "-1e999", "1e400", "1" + "0" * 400 + ".5", "2E+308"]))
    if kind == "nan":
        return str(rng.choice(["NaN", "Infinity", "-Infinity"]))
    if kind == "deep":
        return deep_text(rng)
    if kind == "surrogate":
        return str(rng.choice(['"\\ud800"', '"x\\udfffy"', '"\\udc00\\ud800"', '"\\ud83d"']))
    if kind == "raw_surrogate":  # the character itself, as a broken decoder would hand it over
        return '"' + str(rng.choice(["\ud800", "a\udfff", "\udc80\udc80"])) + '"'
    raise ValueError(f"unknown raw token kind {kind!r}")


def mutate(kind: str, valid: Any, rng: np.random.Generator) -> str:
    """One reply of class ``kind`` made from the valid JSON value ``valid``."""
    text = json.dumps(valid)
    if kind == "valid":
        return text
    if kind == "prose":
        return f"Sure! Here is my proposal:\n```json\n{text}\n```\nHope this helps."
    if kind == "truncated":
        return text[: int(rng.integers(0, len(text)))]
    if kind == "prose_only":
        return str(rng.choice([p for p in PROSE if "{" not in p and "[" not in p]))
    if kind == "garbage":
        return "".join(map(chr, rng.integers(0x20, 0x7F, int(rng.integers(0, 60)))))
    where = list(paths(valid))
    path = where[int(rng.integers(len(where)))]
    if kind == "wrong_type":
        return json.dumps(replaced(valid, path, WRONG[int(rng.integers(len(WRONG)))]))
    if kind in ("surrogate", "raw_surrogate") and rng.random() < 0.3 and isinstance(valid, dict):
        key = raw_token(kind, rng)  # a key, not a value
        return "{" + key + ": 1, " + text[1:]
    if kind in ("deep", "huge_int", "huge_float", "nan", "surrogate", "raw_surrogate"):
        return json.dumps(replaced(valid, path, MARK)).replace(json.dumps(MARK), raw_token(kind, rng), 1)
    raise ValueError(f"unknown mutation class {kind!r}")


def design_reply(i: int) -> dict[str, Any]:
    """The i-th of distinct valid new design replies (w_like = 0.001 ... 0.999 but the current 0.3; i < 998)."""
    doc = copy.deepcopy(DEFAULT_DESIGN)
    thousandths = i % 998 + 1
    doc["pipelines"][0]["heads"]["w_like"] = (thousandths + (thousandths >= 300)) / 1000
    return {**doc, "rationale": f"try w_like {doc['pipelines'][0]['heads']['w_like']}"}


def draw_classes(n: int, rng: np.random.Generator, valid_share: float = 0.2) -> list[str]:
    bad = [c for c in CLASSES if c != "valid"]
    return ["valid" if rng.random() < valid_share else bad[int(rng.integers(len(bad)))] for _ in range(n)]


class Fuzzed:
    """TEST DOUBLE (a plumbing test: no model): replays replies, each a text or a function of the offered schema
    (so a valid edit can name one of the edits offered at that call), and records what it served."""

    name = "fuzzed"

    def __init__(self, items: Sequence[tuple[str, str | Callable[[Mapping[str, Any]], str]]]) -> None:
        self.items = deque(items)
        self.served: list[tuple[str, str]] = []
        self.exhausted = 0  # calls after the last reply (the last proposal's retries): backend errors

    def complete(self, messages: Sequence[Mapping[str, str]], schema: Mapping[str, Any] | None = None,
                 max_tokens: int = 768, temperature: float = 0.7, seed: int | None = None) -> Reply:
        assert all(isinstance(m["content"], str) for m in messages)
        for m in messages:  # a prompt that quotes a reply must still be sendable as UTF-8
            m["content"].encode("utf-8")
        if not self.items:
            self.exhausted += 1
            raise LLMError("fuzzed backend exhausted")
        kind, item = self.items.popleft()
        text = item if isinstance(item, str) else item(schema or {})
        self.served.append((kind, text))
        return Reply(text, self.name, "fuzz")


@pytest.fixture
def store(tmp_path):
    with KnowledgeStore(tmp_path / "store.db") as s:
        yield s


# ------------------------------------------------------------------------------------- parse_json_reply


def test_parse_json_reply_never_raises_and_refuses_what_a_reply_may_not_hold():
    rng = np.random.default_rng(0)
    counts: Counter[str] = Counter()
    for i, kind in enumerate(draw_classes(1200, rng, valid_share=0.1)):
        base = design_reply(i) if i % 2 else {"edit": "add_route:content", "value": 0.5, "rationale": "more"}
        text = mutate(kind, base, rng)
        value, error = parse_json_reply(text)
        assert (value is None and isinstance(error, str) and error) or error is None, (kind, error)
        if kind in MUST_FAIL:
            assert error is not None, (kind, text[:200])
        if kind in ("valid", "prose"):
            assert error is None and value == base
        counts["rejected" if error else "parsed"] += 1
    assert counts["rejected"] >= 600 and counts["parsed"] >= 150, counts
    # each limit by itself, with its reason
    assert "nested deeper than 64" in parse_json_reply("[" * 100_000)[1]
    assert parse_json_reply("[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH)[1] is None
    assert "integer of 10000 digits" in parse_json_reply('{"a": ' + "9" * 10_000 + "}")[1]
    assert "outside the float range" in parse_json_reply('{"a": 1e999}')[1]
    assert "NaN is not a JSON number" in parse_json_reply('{"a": NaN}')[1]
    assert "-Infinity is not a JSON number" in parse_json_reply('{"a": -Infinity}')[1]
    assert parse_json_reply('{"a": "\\ud800"}') == ({"a": "\ud800"}, None)  # a string: kept, made safe where stored
    assert "must be text" in parse_json_reply(None)[1]  # type: ignore[arg-type]
    assert parse_json_reply('x {"a": [1, 2.5, "s", null, true]} y') == ({"a": [1, 2.5, "s", None, True]}, None)


# ----------------------------------------------------------------------------- design repair and validation

SPECIAL = [float("nan"), float("inf"), -float("inf"), "\ud800", b"bytes", {1, 2}, (1, 2), object()]


class HugeInt(int):
    """``10**digits`` (sign from parity), with a short repr: hypothesis prints what it draws, and Python refuses
    the repr of an int past 4,300 digits. The code under test sees an int."""

    def __new__(cls, digits: int) -> HugeInt:
        return super().__new__(cls, (-1) ** digits * 10**digits)

    def __repr__(self) -> str:
        return f"<int of {self.bit_length()} bits>"


def nested(depth: int) -> list[Any]:
    """A list nested ``depth`` levels, built without recursion."""
    out: list[Any] = []
    for _ in range(depth - 1):
        out = [out]
    return out


python_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(10**400), 10**400), st.floats(allow_nan=True),
              st.text(max_size=8), st.sampled_from(SPECIAL), st.sampled_from([65, 300, 3000]).map(nested),
              st.sampled_from([400, 5000]).map(HugeInt)),
    lambda children: st.one_of(st.lists(children, max_size=3),
                               st.dictionaries(st.one_of(st.text(max_size=6), st.sampled_from(["quota", "k", 7])),
                                               children, max_size=3)),
    max_leaves=8,
)


@st.composite
def mutated_designs(draw: st.DrawFn) -> Any:
    """DEFAULT_DESIGN (with a second pipeline sometimes) with a value at some place replaced."""
    doc = copy.deepcopy(DEFAULT_DESIGN)
    if draw(st.booleans()):
        doc["pipelines"].append({**copy.deepcopy(doc["pipelines"][0]), "name": "other"})
        doc["routing"] = {"new": 1}
    where = list(paths(doc))
    for _ in range(draw(st.integers(1, 3))):
        doc = replaced(doc, where[draw(st.integers(0, len(where) - 1))], draw(python_values))
        where = list(paths(doc)) if isinstance(doc, (dict, list)) else [()]
    return doc


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_designs())
def test_design_repair_and_validation_never_raise_on_any_value(doc):
    repaired, notes = repair_design(doc, base=DEFAULT_DESIGN)
    assert all(isinstance(n, str) and n for n in notes)
    errors = validate_design(repaired)
    assert all(isinstance(e, str) and e for e in errors)
    if not errors:
        assert len(design_key(repaired)) == 16  # a valid design is usable downstream
    assert all(isinstance(e, str) and e for e in validate_design(doc))


def test_the_design_language_names_what_is_not_json_data():
    doc = copy.deepcopy(DEFAULT_DESIGN)
    cases = {
        "`pipelines[0].heads.w_like` must be a finite number (got nan)": float("nan"),
        "`pipelines[0].heads.w_like` must be a finite number (got an integer of": 10**5000,
        "`pipelines[0].heads.w_like[0][0]": nested(100_000),
        "`pipelines[0].heads` keys must be strings": None,
    }
    for message, value in cases.items():
        bad = replaced(doc, ("pipelines", 0, "heads", "w_like"), value)
        if value is None:
            bad["pipelines"][0]["heads"][3] = 1.0
        assert any(message in e for e in validate_design(bad)), (message, validate_design(bad))
        repair_design(bad, base=DEFAULT_DESIGN)  # never raises
    repaired, notes = repair_design(replaced(doc, ("pipelines", 0, "fusion_size"), 10**400), base=DEFAULT_DESIGN)
    assert repaired["pipelines"][0]["fusion_size"] == 500 and any("<int of 1329 bits>" in n for n in notes)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, "1e999", "nan", [0.5], None])
def test_an_edit_with_a_number_that_is_not_finite_is_a_config_error_not_an_overflow(value):
    with pytest.raises(ValueError, match="finite number"):
        apply_edit(DEFAULT_DESIGN, {"edit": "set_quota", "route": "popularity", "value": value})
    with pytest.raises(ValueError, match="finite number"):
        parse_edit({"edit": "set_quota:popularity", "value": value})
    with pytest.raises(ValueError, match="must be a string"):
        parse_edit({"edit": ["set_quota"], "value": 0.5})
    with pytest.raises(ValueError, match="finite number"):
        parse_edit({"edit": "fusion_size:1e999", "value": 0.5})


# --------------------------------------------------------------------------------------- the designer loop


def run_designer(store: KnowledgeStore, items: list[tuple[str, Any]], mode: str, chunk: int = 60
                 ) -> tuple[list[tuple[str, str]], list[Any], Counter[str], list[Any]]:
    """Feed ``items`` to designers (a new experiment every ``chunk`` replies), proposing from DEFAULT_DESIGN and
    recording each proposal as tested; (served, proposals, outcomes, failed rows)."""
    served: list[tuple[str, str]] = []
    proposals: list[Any] = []
    outcomes: Counter[str] = Counter()
    rows: list[Any] = []
    exhausted = 0
    for start in range(0, len(items), chunk):
        backend = Fuzzed(items[start:start + chunk])
        exp_id = store.start_experiment(f"fuzz-{mode}-{start}", {"mode": mode}, 0)
        designer = LLMDesigner(backend, store, exp_id=exp_id, mode=mode, max_retries=3,  # type: ignore[arg-type]
                               max_reply_chars=300_000, seed=start)
        while backend.items:
            proposal = designer.propose(DEFAULT_DESIGN)
            if proposal is not None:
                proposals.append(proposal)
                designer.record(proposal, reward=0.0)
        served += backend.served
        outcomes += designer.outcomes
        rows += store.designs(valid=False, exp_id=exp_id)
        exhausted += backend.exhausted
    assert outcomes["backend_error"] == exhausted  # the only backend errors: calls after the last reply
    return served, proposals, outcomes, rows


def check_designer_books(served, proposals, outcomes, rows, max_chars=300_000):
    """Every reply served is a proposal or a counted rejection stored with its reason and its raw text."""
    assert outcomes["proposed"] == len(proposals)
    assert outcomes["rejected"] + outcomes["backend_error"] == len(rows)
    assert len(served) == outcomes["proposed"] + outcomes["rejected"]
    assert all(r.error and r.route == "failed" and not r.valid for r in rows)
    accepted = Counter(p.reply.text for p in proposals)
    rejected = Counter(r.document["raw"] for r in rows if not r.error.startswith("backend error"))
    assert rejected + accepted == Counter(text[:max_chars] for _, text in served)
    for kind, text in served:
        if kind in MUST_FAIL:
            assert text not in accepted, (kind, text[:200])
    return accepted


def test_the_designer_counts_and_stores_every_bad_reply_and_takes_every_valid_one(store):
    rng = np.random.default_rng(1)
    items = []
    for i, kind in enumerate(draw_classes(240, rng, valid_share=0.25)):
        valid = design_reply(i)
        items.append((kind, mutate(kind, valid, rng)))
    served, proposals, outcomes, rows = run_designer(store, items, "design")
    assert len(served) == 240
    accepted = check_designer_books(served, proposals, outcomes, rows)
    for kind, text in served:
        if kind in ("valid", "prose"):
            assert text in accepted, (kind, text[:200])
    assert outcomes["rejected"] >= 100 and outcomes["proposed"] >= 60, outcomes
    reasons = " ".join(r.error for r in rows)
    for reason in ("nested deeper than 64", "digits", "outside the float range", "is not a JSON number",
                   "not valid JSON", "no JSON object"):
        assert reason in reasons, reason
    assert "could not be checked" not in reasons  # every failure was foreseen by a check, none by the safety net
    # a lone surrogate in a rationale (accepted or rejected reply) is stored escaped, as \\udXXX
    rationales = [r.rationale for r in store.designs()]
    assert all(r.encode("utf-8") for r in rationales if r)
    assert any("\\ud800" in r or "\\udfff" in r or "\\udc80" in r for r in rationales)


def test_the_designer_in_edit_mode_survives_fuzzed_edits(store):
    rng = np.random.default_rng(2)

    def edit_reply(kind: str) -> Callable[[Mapping[str, Any]], str]:
        def make(schema: Mapping[str, Any]) -> str:
            enum = schema["properties"]["edit"]["enum"]
            offered = [e for e in enum if not e.startswith(("set_quota", "head_"))] or enum
            valid = {"edit": offered[int(rng.integers(len(offered)))], "value": 0.5, "rationale": "one change"}
            return mutate(kind, valid, rng)
        return make

    items = [(kind, edit_reply(kind)) for kind in draw_classes(150, rng, valid_share=0.25)]
    items += [("wrong_type", '{"edit": "set_quota:popularity", "value": 1e308, "rationale": "x"}'),
              ("huge_int", '{"edit": "set_quota:popularity", "value": ' + "9" * 400 + ', "rationale": "x"}'),
              ("wrong_type", '{"edit": "fusion_size:1e999", "value": 0.5, "rationale": "x"}'),
              ("wrong_type", '{"edit": "ranker_hidden:nan", "value": 0.5, "rationale": "\ud800"}'),
              ("wrong_type", '{"edit": {"op": "add_route"}, "value": [0.5], "rationale": {"why": [1, 2]}}')]
    served, proposals, outcomes, rows = run_designer(store, items, "edit")
    assert len(served) == len(items)
    check_designer_books(served, proposals, outcomes, rows)
    assert outcomes["rejected"] >= 80 and outcomes["proposed"] >= 10, outcomes
    reasons = " ".join(r.error for r in rows)
    assert "finite number" in reasons and "could not be checked" not in reasons


# ---------------------------------------------------------------------------------------------- LLMSearch

SPACE = ParamSpace([Choice("ranker", ("linear", "mlp"), "linear"), Choice("quota", (0.0, 0.1, 0.3), 0.1),
                    Range("boost", 0.0, 1.0, 0.0), Range("mix", 0.0, 1.0, 0.5)])


def test_llm_search_counts_and_stores_every_bad_reply_and_falls_back(store):
    rng = np.random.default_rng(3)

    def edit_reply(kind: str) -> Callable[[Mapping[str, Any]], str]:
        def make(schema: Mapping[str, Any]) -> str:
            offered = schema["properties"]["edit"]["enum"]
            return mutate(kind, {"edit": offered[int(rng.integers(len(offered)))], "rationale": "why"}, rng)
        return make

    kinds = draw_classes(300, rng, valid_share=0.2)
    backend = Fuzzed([(k, edit_reply(k)) for k in kinds])
    search = LLMSearch(SPACE, backend, store=store, levels=11, max_retries=2)  # type: ignore[arg-type]
    while backend.items:
        config = search.propose()
        if search.steps[-1].route == "exhausted":
            break
        search.tell(config, float(len(search.steps)))  # each newest config is the best: the base keeps moving
    served = backend.served
    assert len(served) >= 250, (search.routes, search.outcomes, len(backend.items))
    rejected = search.outcomes["rejected"]
    assert search.outcomes["backend_error"] == 0
    assert len(served) == rejected + search.outcomes["proposed"]
    assert sum(len(s.errors) for s in search.steps) == rejected and all(e for s in search.steps for e in s.errors)
    failed = store.designs(agent="llm_search", valid=False)
    assert len(failed) == rejected and all(r.error and r.route == "failed" for r in failed)
    raw = Counter(r.document["raw"] for r in failed)
    must_fail = Counter(text[:2000] for kind, text in served if kind in MUST_FAIL)
    assert not must_fail - raw  # every one of them is a stored rejection
    valid = {text for kind, text in served if kind in ("valid", "prose")}
    assert not valid & set(raw) and search.outcomes["proposed"] >= len(valid)
    assert search.routes["fallback"] >= 1 and rejected >= 150, (search.routes, search.outcomes)
    for r in store.designs(agent="llm_search", valid=True):  # every served config and its rationale were stored
        r.rationale.encode("utf-8")
    assert "could not be checked" not in " ".join(r.error for r in failed)


# ------------------------------------------------------------------------------- the OpenAI-compatible backend


ENVELOPE = {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "{}"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}}


class Bodies(BaseHTTPRequestHandler):
    """Answers each POST with the next queued (status, body bytes)."""

    queue: deque[tuple[int, bytes]] = deque()

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        status, data = self.queue.popleft() if self.queue else (503, b"queue empty")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def body_server(monkeypatch):
    # httpx.post builds a client (and a TLS context, ~70 ms) per call; one shared client keeps this file fast
    # and leaves the backend's code path as it is
    client = httpx.Client()
    monkeypatch.setattr(httpx, "post", client.post)
    Bodies.queue = deque()
    server = HTTPServer(("127.0.0.1", 0), Bodies)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)
    client.close()


def fuzzed_bodies(n: int, rng: np.random.Generator) -> list[tuple[str, int, bytes]]:
    """(class, status, body): good envelopes around fuzzed content, envelopes with a wrong value at some place
    (``usage`` among them), and bodies that are not a usable envelope at all."""
    out = []
    for i in range(n):
        roll = rng.random()
        if roll < 0.25:
            kind = draw_classes(1, rng, valid_share=0.2)[0]
            content = mutate(kind, design_reply(i), rng)
            body = replaced(ENVELOPE, ("choices", 0, "message", "content"), content)
            out.append(("content", 200, json.dumps(body).encode("utf-8", "surrogatepass")))
        elif roll < 0.55:  # usage: any value at any place in it
            where = [p for p in paths(ENVELOPE) if p[:1] == ("usage",)]
            path = where[int(rng.integers(len(where)))]
            kind = str(rng.choice(["wrong_type", "huge_int", "huge_float", "nan", "surrogate"]))
            if kind == "wrong_type":
                text = json.dumps(replaced(ENVELOPE, path, WRONG[int(rng.integers(len(WRONG)))]))
            else:
                text = json.dumps(replaced(ENVELOPE, path, MARK)).replace(json.dumps(MARK), raw_token(kind, rng))
            out.append(("usage", 200, text.encode()))
        elif roll < 0.85:  # any other place of the envelope
            where = [p for p in paths(ENVELOPE) if p[:1] != ("usage",)]
            kind = str(rng.choice(["wrong_type", "huge_int", "huge_float", "nan", "surrogate", "deep"]))
            text = mutate(kind, ENVELOPE, rng) if kind != "wrong_type" else json.dumps(
                replaced(ENVELOPE, where[int(rng.integers(len(where)))], WRONG[int(rng.integers(len(WRONG)))]))
            out.append(("envelope", 200, text.encode("utf-8", "surrogatepass")))
        else:  # not an envelope
            text = json.dumps(ENVELOPE)
            choice = int(rng.integers(7))
            body = [text[: int(rng.integers(len(text)))].encode(), deep_text(rng).encode(), b"", b"<html>502</html>",
                    b"\xed\xa0\x80\xff\xfe", b"[" + text.encode() + b"]", text.encode() + b" trailing"][choice]
            status = 200 if rng.random() < 0.85 else int(rng.choice([400, 429, 500, 502]))
            out.append(("broken", status, body))
    return out


def test_the_openai_backend_turns_any_response_into_a_reply_or_an_llm_error(body_server, store):
    rng = np.random.default_rng(4)
    bodies = fuzzed_bodies(360, rng)
    Bodies.queue.extend((status, body) for _, status, body in bodies)
    client = OpenAIBackend(f"http://127.0.0.1:{body_server.server_port}/v1", "m", api_key_env="", timeout=10)
    counts: Counter[str] = Counter()
    messages = [{"role": "user", "content": "Propose a design. Last reply rejected: \ud800"}]
    for kind, _status, body in bodies:
        try:
            reply = client.complete(messages, max_tokens=64)
        except LLMError as e:
            assert str(e), kind
            counts[f"{kind}/error"] += 1
            assert kind not in ("content", "usage"), (kind, str(e)[:300])  # their envelope is good
            continue
        assert kind != "broken", body[:100]
        counts[f"{kind}/reply"] += 1
        assert isinstance(reply.text, str) and isinstance(reply.finish_reason, str)
        for tokens in (reply.prompt_tokens, reply.completion_tokens):
            assert isinstance(tokens, int) and not isinstance(tokens, bool) and 0 <= tokens <= 10**9
        if kind == "content":
            assert reply.text == json.loads(body.decode("utf-8", "surrogatepass"))["choices"][0]["message"]["content"]
        if reply.meta.get("usage_ignored"):
            counts["usage_ignored"] += 1
    assert counts["content/reply"] >= 60 and counts["broken/error"] >= 40 and counts["envelope/error"] >= 40
    assert counts["usage/reply"] >= 60 and counts["usage_ignored"] >= 40, counts  # a bad usage never fails a reply
    assert not Bodies.queue

    # the designer over HTTP: a malformed response is a counted, stored backend error, and the loop goes on
    more = fuzzed_bodies(60, rng)
    Bodies.queue.extend((status, body) for _, status, body in more)
    designer = LLMDesigner(OpenAIBackend(f"http://127.0.0.1:{body_server.server_port}/v1", "m", api_key_env=""),
                           store, max_retries=0)  # one body per proposal: the loop stops with the queue
    while Bodies.queue:
        designer.propose(DEFAULT_DESIGN)
    out = designer.outcomes
    assert out["proposed"] + out["rejected"] + out["backend_error"] == len(more)
    failed = store.designs(valid=False, exp_id=designer.exp_id)
    assert len(failed) == out["rejected"] + out["backend_error"] and all(r.error for r in failed)
    assert sum(r.error.startswith("backend error") for r in failed) == out["backend_error"] >= 10, out


def test_the_server_answers_malformed_requests_with_400():
    with serve(ScriptedBackend(['{"ok": true}'])) as server:
        host, port = server.server_address[:2]
        for body, length in [(b"[" * 100_000, None), (b'{"messages": [], "temperature": NaN}', None),
                             (b'{"seed": ' + b"9" * 10_000 + b"}", None), (b"\xed\xa0\x80", None),
                             (b"{}", "-5"), (b"{}", "many")]:
            conn = http.client.HTTPConnection(host, port, timeout=10)
            conn.putrequest("POST", "/v1/chat/completions")
            conn.putheader("Content-Length", length or str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            assert response.status == 400, (body[:40], response.status)
            assert "error" in json.loads(response.read())
            conn.close()
        client = OpenAIBackend(server.url, "scripted", api_key_env="")
        assert client.complete([{"role": "user", "content": "hi"}]).text == '{"ok": true}'  # still serving


# ------------------------------------------------------------------------------------------- the store


def test_the_store_keeps_any_failed_reply_it_is_given(store):
    exp = store.start_experiment("fuzz-store", {}, 0)
    deep = nested(100_000)
    row_id = store.add_design(exp, "designer", {"raw": "[" * 10, "parsed": deep, "n": 10**5000, "x": float("nan")},
                              "rationale \ud800 \udfff", "failed", False, "error \ud800")
    (row,) = [r for r in store.designs(exp_id=exp) if r.id == row_id]
    assert row.rationale == "rationale \\ud800 \\udfff" and row.error == "error \\ud800"
    assert row.document["n"] is None and row.document["x"] is None
    depth, node = 0, row.document["parsed"]
    while isinstance(node, list):
        depth, node = depth + 1, node[0]
    assert node.startswith("<truncated: nested deeper than") and depth == 99
    with pytest.raises(ValueError, match="at most 100 levels"):
        store.start_experiment("too-deep", {"config": nested(500)}, 0)  # an input is refused, not truncated
