"""LLM backends: the constrained decoder on a toy vocabulary, the HTTP server and client, and the real bundled
SmolLM2 model (slow: loaded once per module, first load ~30 s without the converted copy in the cache)."""

from __future__ import annotations

import json
import threading
from fractions import Fraction
from http.server import BaseHTTPRequestHandler, HTTPServer

import httpx
import numpy as np
import pytest
import torch
from jsonschema import Draft202012Validator

from agents.evolution.design import DEFAULT_DESIGN, DESIGN_SCHEMA, design_schema, validate_design
from agents.evolution.designer import LLMDesigner
from agents.evolution.llm import (
    ConstrainedDecoder,
    LLMBackend,
    LLMError,
    OpenAIBackend,
    ScriptedBackend,
    SmolLM2Backend,
    TokenVocab,
    _number_feasible,
    make_backend,
)
from agents.evolution.llm_server import serve
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError

# ------------------------------------------------------------------- the decoder on a toy vocabulary

MERGES = ['{"', '":', ' "', '",', '"}', '},', ' {"', 'popular', 'ity', 'true', 'false', 'null', '00', 'quota', ', "',
          'pipelines', 'routes', ' [', '[{"', 'mlp', 'linear', 'fresh', 'content']


def toy_vocab() -> TokenVocab:
    """Token 0 is the end of text; then the printable ASCII characters and a few merges."""
    texts = [None] + [chr(c) for c in range(32, 127)] + MERGES
    index = {t: i for i, t in enumerate(texts) if t}
    longest = max(map(len, index))

    def encode(s: str) -> list[int]:
        out, i = [], 0
        while i < len(s):
            for n in range(min(longest, len(s) - i), 0, -1):
                if s[i:i + n] in index:
                    out.append(index[s[i:i + n]])
                    i += n
                    break
        return out

    return TokenVocab(texts, encode, [0])


class RandomSession:
    """A 'model' whose next-token logits are random: whatever it picks, the decoder must keep the schema."""

    def __init__(self, vocab_size: int, seed: int, scale: float = 3.0) -> None:
        self.ids: list[int] = []
        self.size, self.scale = vocab_size, scale
        self.generator = torch.Generator().manual_seed(seed)
        self.calls = 0

    def push(self, ids) -> None:
        self.ids.extend(ids)

    def next_logits(self) -> torch.Tensor:
        self.calls += 1
        return torch.randn(self.size, generator=self.generator) * self.scale


OTHER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$defs": {"point": {"type": "object", "required": ["x"], "properties": {"x": {"type": "integer", "minimum": -7, "maximum": 12}}}},
    "type": "object",
    "required": ["points", "label", "flag", "nothing", "fixed", "level"],
    "properties": {
        "points": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 2, "maxItems": 3},
        "label": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,7}$", "maxLength": 8},
        "note": {"type": "string", "minLength": 2, "maxLength": 5},
        "flag": {"type": "boolean"},
        "nothing": {"type": "null"},
        "fixed": {"const": "v1"},
        "level": {"type": "number", "minimum": 0.25, "maximum": 2.5},
        "size": {"enum": [1, 10, 100, "many"]},
    },
}


@pytest.mark.parametrize("schema", [DESIGN_SCHEMA, design_schema(max_pipelines=1, require_rationale=True), OTHER_SCHEMA],
                         ids=["design", "design_single", "other"])
def test_constrained_decoding_always_follows_the_schema(schema):
    vocab = toy_vocab()
    validator = Draft202012Validator(schema)
    for seed in range(25):
        session = RandomSession(vocab.size, seed)
        decoder = ConstrainedDecoder(vocab, decimals=3)
        text, finish = decoder.run(session, schema, torch.Generator().manual_seed(seed), temperature=1.0,
                                   max_tokens=4000)
        assert finish == "stop"
        doc = json.loads(text)
        assert validator.is_valid(doc), (text, [e.message for e in validator.iter_errors(doc)])
        assert vocab.text_of(session.ids) == text  # the model saw exactly the text returned
        assert decoder.forward_passes == session.calls < len(session.ids)  # forced tokens cost no forward pass


def test_constrained_decoding_stops_at_max_tokens_with_the_text_so_far():
    vocab = toy_vocab()
    text, finish = ConstrainedDecoder(vocab).run(RandomSession(vocab.size, 0), DESIGN_SCHEMA,
                                                 torch.Generator().manual_seed(0), 1.0, max_tokens=30)
    assert finish == "length" and text.startswith('{"pipelines": [{"name": "')
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


@pytest.mark.parametrize("schema, message", [
    ({"anyOf": [{"type": "string"}, {"type": "null"}]}, "does not support `anyOf`"),
    ({"type": ["string", "null"]}, "needs `type` one of"),
    ({"type": "object", "properties": {}, "required": ["a"]}, r"`required` names keys without a schema"),
    ({"$ref": "#/$defs/missing"}, "does not resolve"),
    ({"type": "integer", "minimum": 3, "maximum": 2}, "no integer fits"),
])
def test_unsupported_schemas_are_refused_by_name(schema, message):
    vocab = toy_vocab()
    with pytest.raises(ConfigError, match=message):
        ConstrainedDecoder(vocab).run(RandomSession(vocab.size, 0), schema, torch.Generator(), 1.0, 100)


@pytest.mark.parametrize("prefix, feasible", [
    ("", True), ("0", True), ("0.", True), ("0.25", True), ("1", True), ("1.0", True), ("1.05", False),
    ("2", False), ("01", False), ("-", False), (".5", False), ("0.1234", False), ("1.", True),
])
def test_number_prefixes_are_kept_inside_the_range(prefix, feasible):
    assert _number_feasible(prefix, Fraction(0), Fraction(1), False, 3, 16) is feasible


def test_integer_prefixes_with_negative_bounds():
    lo, hi = Fraction(-7), Fraction(12)
    assert _number_feasible("-", lo, hi, True, 0, 16) and _number_feasible("-7", lo, hi, True, 0, 16)
    assert not _number_feasible("-8", lo, hi, True, 0, 16) and not _number_feasible("13", lo, hi, True, 0, 16)
    assert _number_feasible("1", lo, hi, True, 0, 16) and not _number_feasible("1.", lo, hi, True, 0, 16)


# --------------------------------------------------------------------------- registry, test double


def test_make_backend_suggests_the_close_name():
    with pytest.raises(ConfigError, match=r"`llm backend` must be one of \['smollm2', 'openai'\] \(got 'smollm'\); did you mean 'smollm2'\?"):
        make_backend("smollm")
    assert "scripted" not in __import__("agents.evolution.llm", fromlist=["BACKENDS"]).BACKENDS  # never a default
    backend = make_backend("openai", base_url="http://127.0.0.1:9/v1", model="m")
    assert isinstance(backend, LLMBackend) and isinstance(ScriptedBackend([]), LLMBackend)


def test_backends_check_their_arguments():
    with pytest.raises(ConfigError, match=r"`base_url` must be an http\(s\) URL"):
        OpenAIBackend("127.0.0.1:8765", "m")
    with pytest.raises(ConfigError, match=r"`messages\[0\]\.role` must be one of"):
        ScriptedBackend(["{}"]).complete([{"role": "robot", "content": "hi"}])
    with pytest.raises(LLMError, match="exhausted"):
        ScriptedBackend([]).complete([{"role": "user", "content": "hi"}])


# ------------------------------------------------------------------------ HTTP server and client


MESSAGES = [{"role": "user", "content": "Propose a design."}]


def test_server_and_openai_client_round_trip_with_a_scripted_backend():
    backend = ScriptedBackend(['{"a": 1}', "plain text", LLMError("model on fire")])
    with serve(backend) as server:
        client = OpenAIBackend(server.url, "script", api_key_env="")
        reply = client.complete(MESSAGES, schema={"type": "object"}, max_tokens=50, temperature=0.0, seed=3)
        assert reply.text == '{"a": 1}' and reply.backend == "openai" and reply.constrained
        assert backend.calls[-1]["schema"] == {"type": "object"} and backend.calls[-1]["seed"] == 3
        unstructured = OpenAIBackend(server.url, "script", structured=False)
        assert unstructured.complete(MESSAGES, schema={"type": "object"}).text == "plain text"
        assert backend.calls[-1]["schema"] is None
        with pytest.raises(LLMError, match="HTTP 500.*model on fire"):
            client.complete(MESSAGES)
        models = httpx.get(f"{server.url}/models").json()
        assert models["data"][0]["id"] == "scripted"
        bad = httpx.post(f"{server.url}/chat/completions", json={"messages": MESSAGES, "response_format": {"type": "xml"}})
        assert bad.status_code == 400 and "response_format.type" in bad.json()["error"]["message"]
        bad = httpx.post(f"{server.url}/chat/completions", json={"messages": "hi"})
        assert bad.status_code == 400 and "`messages`" in bad.json()["error"]["message"]
        assert httpx.get(f"{server.url}/nothing").status_code == 404
    with pytest.raises(LLMError, match="ConnectError"):
        OpenAIBackend(server.url, "script", timeout=2).complete(MESSAGES)


def test_openai_client_sends_the_key_of_the_named_variable_and_the_json_schema(monkeypatch):
    seen = {}

    class Echo(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            seen["auth"] = self.headers.get("Authorization")
            seen["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            data = json.dumps({"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}],
                               "usage": {"prompt_tokens": 7, "completion_tokens": 1}}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = HTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=server.handle_request, daemon=True)
    thread.start()
    monkeypatch.setenv("MY_TEST_KEY", "sk-test")
    client = OpenAIBackend(f"http://127.0.0.1:{server.server_port}/v1/", "gpt-x", api_key_env="MY_TEST_KEY")
    reply = client.complete(MESSAGES, schema=DESIGN_SCHEMA, max_tokens=99)
    thread.join(5)
    server.server_close()
    assert seen["auth"] == "Bearer sk-test"
    assert seen["body"]["response_format"]["json_schema"]["schema"] == DESIGN_SCHEMA
    assert seen["body"]["model"] == "gpt-x" and seen["body"]["max_tokens"] == 99
    assert reply.prompt_tokens == 7 and reply.text == "{}"


# --------------------------------------------------------------------------- the real bundled model


@pytest.fixture(scope="module")
def smollm2() -> SmolLM2Backend:
    torch.set_num_threads(1)
    return SmolLM2Backend(seed=0).load()


@pytest.mark.slow
def test_smollm2_designs_a_schema_valid_pipeline(smollm2, tmp_path):
    with KnowledgeStore(tmp_path / "store.db") as store:
        designer = LLMDesigner(smollm2, store, max_retries=3, seed=1)
        assert len(smollm2.prompt_ids(designer.messages(DEFAULT_DESIGN))) < 700  # a few hundred tokens
        proposal = designer.propose(DEFAULT_DESIGN)
        assert proposal is not None, [a.error for a in designer.store.designs()]
        assert validate_design(proposal.document, designer.schema) == []
        assert proposal.reply.constrained and proposal.reply.backend == "smollm2"
        assert proposal.route in ("constrained", "retried", "repaired")
        generated = Draft202012Validator(designer.generation_schema)
        for attempt in proposal.attempts:  # every raw reply follows the schema: decoding is constrained
            assert generated.is_valid(json.loads(attempt.text)), attempt.text
        failed = store.designs(valid=False)
        assert len(failed) == len(proposal.attempts) - 1  # each failed attempt is in the store


@pytest.mark.slow
def test_smollm2_free_generation_is_the_model_talking(smollm2, monkeypatch):
    monkeypatch.setattr(smollm2, "use_cache", False)  # no kept replies: the model answers every time
    a = smollm2.complete([{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0.0)
    b = smollm2.complete([{"role": "user", "content": "Name a colour."}], max_tokens=8, temperature=0.0)
    c = smollm2.complete([{"role": "user", "content": "Write a number in Python."}], max_tokens=8, temperature=0.0)
    assert a.text.strip() and a.text == b.text != c.text  # greedy: deterministic, and prompt-dependent
    assert 0 < a.completion_tokens <= 8 and not a.constrained and a.meta["loaded_from"] in ("gguf", "cache")


@pytest.mark.slow
def test_a_greedy_reply_is_kept_and_answered_again_without_the_model(smollm2, monkeypatch, tmp_path):
    monkeypatch.setattr(smollm2, "replies_dir", tmp_path)
    schema = {"type": "object", "properties": {"colour": {"type": "string", "maxLength": 12}}, "required": ["colour"]}
    ask = [{"role": "user", "content": "Name a colour as JSON."}]
    first = smollm2.complete(ask, schema=schema, max_tokens=24, temperature=0.0)
    assert first.meta["loaded_from"] in ("gguf", "cache") and len(list(tmp_path.iterdir())) == 1  # computed, kept
    again = smollm2.complete(ask, schema=schema, max_tokens=24, temperature=0.0)
    fresh = SmolLM2Backend(replies_dir=tmp_path)  # another run: the model is not even loaded
    third = fresh.complete(ask, schema=schema, max_tokens=24, temperature=0.0)
    assert fresh.model is None and again.meta["loaded_from"] == third.meta["loaded_from"] == "replies"
    assert first.text == again.text == third.text and json.loads(third.text)["colour"]
    assert third.meta["forward_passes"] == first.meta["forward_passes"] and third.completion_tokens == first.completion_tokens
    other = smollm2.complete(ask, schema=schema, max_tokens=23, temperature=0.0)  # another request: computed
    sampled = smollm2.complete(ask, schema=schema, max_tokens=24, temperature=0.7, seed=1)  # sampled: never kept
    assert other.meta["loaded_from"] != "replies" and sampled.meta["loaded_from"] != "replies"
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.slow
def test_openai_backend_over_http_serves_the_real_model(smollm2):
    schema = design_schema(max_pipelines=1, require_rationale=True, rationale_length=40)
    with serve(smollm2) as server:
        assert httpx.get(f"{server.url}/models").json()["data"][0]["id"] == smollm2.model_name
        client = OpenAIBackend(server.url, smollm2.model_name, api_key_env="")
        reply = client.complete(LLMDesigner(smollm2).messages(DEFAULT_DESIGN), schema=schema, seed=5)
    assert reply.finish_reason == "stop" and reply.model == smollm2.model_name and reply.completion_tokens > 50
    assert Draft202012Validator(schema).is_valid(json.loads(reply.text)), reply.text


@pytest.mark.slow
def test_the_cached_copy_has_exactly_the_loaded_weights(smollm2):
    again = SmolLM2Backend(cache_dir=smollm2.cache_dir).load()
    assert again.loaded_from == "cache" and (again.converted_dir / "model.safetensors").is_file()
    first, second = smollm2.model.state_dict(), again.model.state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert np.array_equal(again.prompt_ids(MESSAGES), smollm2.prompt_ids(MESSAGES))


@pytest.mark.slow
def test_smollm2_rewires_the_system_inside_the_alternation_schedule(smollm2, tmp_path):
    # the real model as the compositional controller: its edits are served, told their reward, and stored
    import envs
    from agents.evolution.composition import DESCRIPTION, CompositionEnv
    from agents.evolution.controllers import RandomSearch
    from agents.evolution.llm_search import LLMSearch
    from agents.evolution.schedule import SaturationTest, ShiftTest, alternate

    world = envs.WorldConfig(num_items=1000, num_users=3000, num_topics=8, num_creators=50)
    env = CompositionEnv(world, window=300, concurrency=100)
    searches = []

    def llm(e):
        searches.append(LLMSearch(e.target_params(), smollm2, DESCRIPTION, start=e.to_config(e.composition), seed=3,
                                  store=store, exp_id=exp, agent="llm/composition"))
        return searches[-1]

    with KnowledgeStore(tmp_path / "store.db") as store:
        exp = store.start_experiment("alternation", {}, 0)
        history = alternate(env, "main/rerank/mmr", lambda p: RandomSearch(p, seed=0), llm, windows=8, seed=0,
                            saturation=SaturationTest(patience=1, min_gain=10.0, min_windows=2),  # switch after 2 (+ the first
                            # sentinel and a 2-window gate: 8 windows leave the LLM 2-3)
                            shift=ShiftTest(check_every=100), store=store, exp_id=exp)
        assert [phase for _, phase, _ in history.switches][:2] == ["individual", "compositional"]
        (search,) = searches
        edits = [s for s in search.steps if s.edit is not None]
        assert edits and all(s.route in ("constrained", "retried") for s in edits)
        rows = [r for r in history.rows if r["phase"] == "compositional"]
        assert [r["composition"] for r in rows] == [env.from_config(s.config).key() for s in search.steps]
        for s in edits:  # one edit of the best wiring so far, of a parameter of the composition space
            name, _, value = s.edit.partition("=")
            assert name in env.target_params().by_name and str(s.config[name]) in (value, str(float(value)))
        stored = store.designs(agent="llm/composition", valid=True)
        assert [d.reward for d in stored] == [s.reward for s in search.steps]
