"""The LLM designer: an LLM proposes pipeline structures in the design language; each is checked, A/B-tested, kept if it wins.

One step reads top to bottom (:func:`design_step`):

1. the running pipeline's design is read from its agents (:func:`~agents.evolution.design.pipeline_to_config`);
2. :meth:`LLMDesigner.propose` builds a prompt (the agent, a compact form of the schema, the current
   design, past designs with their effects and recent failures from the knowledge store, the
   constraints), asks the backend for a schema-constrained reply, parses it, repairs what can be
   repaired (numbers clamped, close names, unknown keys dropped; every change noted), validates it,
   rejects a design already tried (:func:`~agents.evolution.design.design_key`), and retries a
   bounded number of times, telling the model why the last reply was rejected;
3. the design is built into a candidate pipeline, warm-started from the running one's learned state
   where the structure allows (:func:`warm_start`), and A/B-tested against it with
   :func:`~agents.evolution.rollout.ab_rollout_pipeline`, which deploys it only if accepted (a system
   designer's two-pipeline design with segment routing is built into a whole system and tested against the
   running one with :func:`~agents.evolution.rollout.ab_test_systems`);
4. the knowledge store gets every attempt: failed ones as they happen (``valid`` false, the raw
   reply and the reason), the tested design with its rationale, route, and effect (``designs``), and
   the decision with its interval (``rollouts``).

In ``mode="edit"`` the model does not write a whole design but picks one edit (:data:`EDITS`: add or
drop a route, a quota, the ranker's width, towers or architecture, the fusion size, a head weight) in a
three-field schema; :func:`apply_edit` applies it to the current design, and the rest is the same. A
small model that changes one thing at a time is far easier to make progress with than one that
rewrites every field.

The route of a proposal says how it was obtained: ``constrained`` (first reply, schema-constrained,
valid as decoded), ``direct`` (the same from a backend that does not constrain), ``retried`` (valid as
decoded, after failed attempts), ``repaired`` (valid after repair); a failed attempt is ``failed``. A
failed attempt is never replaced silently: it stays in the store and in ``Proposal.attempts``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agents.decision.configs import ROUTES, PipelineConfig, SystemConfig, build_pipeline, build_system
from agents.decision.functional import ABDecision, ExperimentDesigner
from agents.decision.fusion import FUSION_SIZES
from agents.decision.ranking import TorchRanker
from agents.decision.system import Pipeline
from agents.evolution.deployment import WARM_UPDATES, DeploymentService, qualified_agents
from agents.evolution.design import (
    MIN_SUPPLY,
    SEGMENTS,
    config_to_design,
    design_key,
    design_schema,
    design_to_config,
    pipeline_to_config,
    repair_design,
    summarize_design,
    system_to_config,
    validate_design,
)
from agents.evolution.llm import REPLY_FAILURES, LLMBackend, LLMError, Reply, parse_json_reply, safe_text
from agents.evolution.rollout import ab_rollout_pipeline, ab_test_systems
from agents.infra.store import KnowledgeStore
from envs.log import InteractionLog
from envs.validation import ConfigError, check_choice, check_int, check_range

__all__ = ["EDITS", "MODES", "AgentEdits", "Attempt", "DesignStep", "LLMDesigner", "Proposal", "applicable_edits", "apply_edit",
           "agent_edits", "design_step", "edit_schema", "parse_edit", "schema_hint", "warm_start"]

MODES = ("design", "edit")  # design: the model writes a whole design; edit: it picks one edit, the designer applies it

log = logging.getLogger(__name__)

AGENT_DESCRIPTION = (
    "Agent: a recommendation pipeline. Each recall route returns k candidates; quotas split fusion_size "
    "candidates among the routes; a ranker (linear or mlp; per_segment: one tower per user segment) predicts "
    "click, like and dwell; heads weight them into one score; rerank: MMR diversity (mmr_lambda), "
    "freshness_boost, risk_threshold (riskier items blocked), exposure_cap per item."
)
GOAL = "Goal: more clicks per request without more policy violations."


# the edit language: one structural or parametric change per reply (mode="edit"), applied by the designer
EDITS = ("add_route", "drop_route", "set_quota", "ranker_hidden", "ranker_towers", "ranker_arch", "fusion_size",
         "head_like", "head_dwell")
HIDDEN_WIDTHS = (16, 32, 64, 128, 256)


def applicable_edits(current: Mapping[str, Any]) -> list[str]:
    """Every edit (``op:arg``) that changes the current single-pipeline design, in a fixed order."""
    pipe = current["pipelines"][0]
    routes, ranker = pipe["routes"], pipe["ranker"]
    edits = [f"add_route:{r}" for r in ROUTES if r not in routes]
    if len(routes) > 1:
        edits += [f"drop_route:{r}" for r in ROUTES if r in routes]
    edits += [f"set_quota:{r}" for r in ROUTES if r in routes]
    if ranker["arch"] == "mlp":  # a linear ranker has no hidden layer
        edits += [f"ranker_hidden:{w}" for w in HIDDEN_WIDTHS if w != ranker["hidden"]]
    edits.append(f"ranker_towers:{'off' if ranker['per_segment'] else 'on'}")
    edits.append(f"ranker_arch:{'linear' if ranker['arch'] == 'mlp' else 'mlp'}")
    edits += [f"fusion_size:{f}" for f in FUSION_SIZES if f != pipe["fusion_size"]]
    return edits + ["head_like:value", "head_dwell:value"]


def edit_schema(edits: Sequence[str], rationale_length: int = 100) -> dict[str, Any]:
    """JSON Schema of one edit: one of ``edits`` (``op:arg``), a value (for quotas and head weights) and why."""
    return {
        "type": "object",
        "properties": {
            "edit": {"enum": list(edits)},
            "value": {"type": "number", "minimum": 0, "maximum": 1},
            "rationale": {"type": "string", "maxLength": rationale_length},
        },
        "required": ["edit", "value", "rationale"],
        "additionalProperties": False,
    }


def _finite(key: str, value: Any) -> float:
    """``value`` as a finite float; ConfigError naming ``key`` for anything else (NaN, +-inf, a number beyond the
    float range, a list, ...): an edit's numbers come from a model."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        number = math.nan
    if not math.isfinite(number):
        got = repr(value) if isinstance(value, (float, str)) and len(str(value)) <= 40 else type(value).__name__
        raise ConfigError(f"`{key}` must be a finite number (got {got})")
    return number


def parse_edit(edit: Mapping[str, Any]) -> dict[str, Any]:
    """``{"edit": "op:arg", "value": v}`` -> the ``apply_edit`` form ``{"edit": op, "route": ..., "value": ...}``.

    ConfigError when ``edit`` is not a string or a number in it or in ``value`` is not finite."""
    text = edit.get("edit", "")
    if not isinstance(text, str):
        raise ConfigError(f"`edit` must be a string 'op:arg' (got {type(text).__name__})")
    op, _, arg = text.partition(":")
    value = _finite("value", edit.get("value", 0.0))
    if op in ("ranker_hidden", "fusion_size"):
        value = _finite(f"{op} argument", arg)
    elif op in ("ranker_towers", "ranker_arch"):
        value = 1.0 if arg in ("on", "mlp") else 0.0
    return {"edit": op, "route": arg, "value": value}


def apply_edit(current: Mapping[str, Any], edit: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """The current (single-pipeline) design with one edit applied, and a description; ConfigError if it does not apply.

    ``add_route``/``set_quota``: the route at quota ``value`` (a share, clipped to [0.05, 1]); ``drop_route``;
    ``ranker_hidden``: the nearest width of ``HIDDEN_WIDTHS``; ``ranker_towers``: segment towers on (value >= 0.5)
    or off; ``ranker_arch``: mlp (value >= 0.5) or linear; ``fusion_size``: the nearest allowed size;
    ``head_like``/``head_dwell``: that head's weight (clipped to [0, 1]).
    """
    op = check_choice("edit", str(edit.get("edit")), EDITS)
    route = str(edit.get("route"))
    value = _finite("edit value", edit.get("value", 0.0))
    doc = copy.deepcopy(dict(current))
    pipe = doc["pipelines"][0]
    routes = pipe["routes"]
    if op in ("add_route", "drop_route", "set_quota"):
        check_choice("edit route", route, ROUTES)
    if op == "add_route":
        if route in routes:
            raise ConfigError(f"add_route: route {route!r} is already in the design (routes {sorted(routes)})")
        routes[route] = {"quota": min(max(value, 0.05), 1.0)}
        return doc, f"add route {route} (quota {routes[route]['quota']:.2f})"
    if op == "drop_route":
        if route not in routes or len(routes) == 1:
            raise ConfigError(f"drop_route: route {route!r} must be one of the design's routes and not the last "
                              f"(routes {sorted(routes)})")
        del routes[route]
        return doc, f"drop route {route}"
    if op == "set_quota":
        if route not in routes:
            raise ConfigError(f"set_quota: route {route!r} is not in the design (routes {sorted(routes)})")
        routes[route]["quota"] = min(max(value, 0.05), 1.0)
        return doc, f"quota of {route} -> {routes[route]['quota']:.2f}"
    if op == "ranker_hidden":
        pipe["ranker"]["hidden"] = min(HIDDEN_WIDTHS, key=lambda w: abs(w - value))
        return doc, f"ranker width -> {pipe['ranker']['hidden']}"
    if op == "ranker_towers":
        pipe["ranker"]["per_segment"] = value >= 0.5
        return doc, f"segment towers {'on' if value >= 0.5 else 'off'}"
    if op == "ranker_arch":
        pipe["ranker"]["arch"] = "mlp" if value >= 0.5 else "linear"
        return doc, f"ranker -> {pipe['ranker']['arch']}"
    if op == "fusion_size":
        pipe["fusion_size"] = min(FUSION_SIZES, key=lambda f: abs(f - value))
        return doc, f"fusion size -> {pipe['fusion_size']}"
    head = {"head_like": "w_like", "head_dwell": "w_dwell"}[op]
    pipe["heads"][head] = min(max(value, 0.0), 1.0)
    return doc, f"{head} -> {pipe['heads'][head]:.2f}"


@dataclass
class Attempt:
    """One reply of the backend and what became of it."""

    index: int
    text: str
    error: str | None  # None: the attempt gave the proposal
    notes: list[str]  # repairs applied
    seconds: float
    seed: int | None


@dataclass
class Proposal:
    """A checked, new design and how it was obtained."""

    document: dict[str, Any]  # valid design (without the rationale)
    rationale: str
    route: str  # "constrained", "direct", "retried" or "repaired"
    key: str
    notes: list[str]
    attempts: list[Attempt]
    reply: Reply


def schema_hint(schema: Mapping[str, Any]) -> str:
    """A compact, human-readable form of a (flat) JSON Schema for prompts: optional keys end in '?'."""
    if "enum" in schema:
        return "|".join(json.dumps(v) for v in schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        subs = list(props.values())
        if len(subs) >= 3 and all(s.get("type") == "object" for s in subs) and len(
                {tuple(s.get("properties", {})) for s in subs}) == 1:  # a map keyed by name, e.g. routes
            merged = dict(subs[0])
            merged["properties"] = {}
            for key, first in subs[0].get("properties", {}).items():
                enums = [s["properties"][key].get("enum") for s in subs]
                if all(e is not None for e in enums):
                    merged["properties"][key] = {"enum": sorted({v for e in enums for v in e})}
                else:
                    merged["properties"][key] = first
            names = "|".join(props)
            return f"{{{names}: {schema_hint(merged)}, ...}}"
        parts = [f'"{k}"{"" if k in required else "?"}: {schema_hint(s)}' for k, s in props.items()]
        return "{" + ", ".join(parts) + "}"
    if kind == "array":
        return f"[{schema_hint(schema.get('items', {}))}, ...]"
    if kind in ("number", "integer"):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        prefix = "int " if kind == "integer" else ""
        return f"{prefix}{lo:g}..{hi:g}" if lo is not None and hi is not None else (prefix.strip() or "number")
    if kind == "boolean":
        return "true|false"
    if kind == "string":
        return f"text (at most {schema['maxLength']} chars)" if "maxLength" in schema else "text"
    return "value"


class LLMDesigner:
    """Proposes new pipeline designs with an LLM backend, checked against the design language and the past.

    ``store`` (with ``exp_id``, or a new experiment is started) supplies past designs and failures to the
    prompt and receives every attempt. ``max_retries`` bounds the retries after a failed attempt.
    ``max_pipelines`` 1 (a pipeline's design) or 2 (a system's: pipelines and segment routing; ``mode="design"``
    only). In edit mode the applicable edits are offered in a seeded random order (``shuffle``): a small model
    tends to pick the first option it is shown.

    ``outcomes`` counts the attempts of all proposals by outcome (``proposed``, ``rejected``: the reply failed a
    check, ``backend_error``: no reply); each failed one is also stored (``valid`` false, with its reason).

    Long-term memory: the prompt also lists up to ``earlier`` tested designs of the same agent from experiments
    that finished before this one registered (:meth:`~agents.infra.store.KnowledgeStore.earlier_experiments`),
    the best effects first, one short line each (0: none).
    """

    def __init__(
        self,
        backend: LLMBackend,
        store: KnowledgeStore | None = None,
        exp_id: int | None = None,
        agent: str = "designer/pipeline",
        max_retries: int = 3,
        max_pipelines: int = 1,
        segments: Sequence[str] = SEGMENTS,
        temperature: float = 0.7,
        max_tokens: int = 768,
        history: int = 4,
        earlier: int = 3,
        max_reply_chars: int = 20_000,
        rationale_length: int = 100,
        seed: int | None = 0,
        mode: str = "design",
        shuffle: bool = True,
    ) -> None:
        self.backend, self.store, self.agent = backend, store, agent
        self.mode = check_choice("mode", mode, MODES)
        self.max_retries = check_int("max_retries", max_retries, 0, 20)
        self.temperature = check_range("temperature", temperature, 0.0, 2.0)
        self.max_tokens = check_int("max_tokens", max_tokens, 64)
        self.history = check_int("history", history, 0, 20)
        self.earlier = check_int("earlier", earlier, 0, 20)
        self.max_reply_chars = check_int("max_reply_chars", max_reply_chars, 1000)
        self.max_pipelines = check_int("max_pipelines", max_pipelines, 1, 2)
        if self.mode == "edit" and max_pipelines > 1:
            raise ConfigError(f"`mode` 'edit' edits one pipeline: use max_pipelines=1 (got {max_pipelines}) or "
                              f"mode='design'")
        self.shuffle = bool(shuffle)
        self.schema = design_schema(segments, max_pipelines)
        self.rationale_length = rationale_length
        self.generation_schema = design_schema(segments, max_pipelines, require_rationale=True,
                                               rationale_length=rationale_length)
        self.rng = np.random.default_rng(seed)
        self._edit_seed = 0 if seed is None else int(seed)
        if store is not None and exp_id is None:
            exp_id = store.start_experiment("llm_designer", {"backend": backend.name, "agent": agent}, 0)
        self.exp_id = exp_id
        self.seen: set[str] = set()
        self.outcomes: Counter[str] = Counter()  # attempts by outcome: "proposed", "rejected", "backend_error"
        for d in self._past(valid=True):
            try:
                self.seen.add(design_key(d.document))
            except (KeyError, TypeError, ValueError, AttributeError):
                log.warning("design %d in the store is not a design document; ignored for deduplication", d.id)

    # ------------------------------------------------------------------ store
    def _past(self, valid: bool) -> list:
        if self.store is None:
            return []
        return self.store.designs(agent=self.agent, valid=valid, exp_id=self.exp_id)

    def _earlier(self) -> list[str]:
        """Lines for the prompt: the best-effect tested designs of this agent in earlier experiments (bounded)."""
        if self.store is None or self.exp_id is None or not self.earlier:
            return []
        sources = {e.id for e in self.store.earlier_experiments(self.exp_id)}
        tested = [d for d in self.store.designs(agent=self.agent, valid=True)
                  if d.experiment_id in sources and d.reward is not None]
        lines: list[str] = []
        for d in sorted(tested, key=lambda d: (-(d.reward or 0.0), d.id)):
            try:
                line = f"- {summarize_design(d.document)[:160]} -> {d.reward:+.4f}"
            except (KeyError, TypeError, ValueError, AttributeError):
                continue
            if line not in lines:
                lines.append(line)
            if len(lines) == self.earlier:
                break
        return lines

    def _store_failure(self, text: str, parsed: Any, rationale: str, error: str) -> None:
        if self.store is None:
            return
        doc: dict[str, Any] = {"raw": text[: self.max_reply_chars], "chars": len(text)}
        if parsed is not None:
            doc["parsed"] = parsed
        self.store.add_design(self.exp_id, self.agent, doc, rationale, "failed", False, error)

    def record(self, proposal: Proposal, reward: float | None = None, error: str | None = None) -> int | None:
        """Store a proposal that was tested (its reward: the A/B effect) or could not be (``error``)."""
        self.seen.add(proposal.key)
        if self.store is None:
            return None
        return self.store.add_design(self.exp_id, self.agent, proposal.document, proposal.rationale, proposal.route,
                                     True, error, reward)

    def schema_for(self, current: Mapping[str, Any]) -> dict[str, Any]:
        """What the model must reply: a whole design, or (edit mode) one of the edits that apply to ``current``
        and lead to a design not tried before."""
        if self.mode == "design":
            return self.generation_schema
        fresh = []
        for e in applicable_edits(current):
            try:
                doc, _ = apply_edit(current, parse_edit({"edit": e, "value": 0.5}))
                key = design_key(repair_design(doc, base=current, schema=self.schema)[0])
            except (ConfigError, TypeError, ValueError, KeyError):
                continue
            if key not in self.seen or e.endswith(":value") or e.startswith("set_quota"):
                fresh.append(e)
        edits = fresh or applicable_edits(current)
        if self.shuffle:  # a small model favours the first options: offer them in an order drawn from the seed
            order = np.random.default_rng([self._edit_seed, len(self.seen)]).permutation(len(edits))
            edits = [edits[i] for i in order]
        return edit_schema(edits, self.rationale_length)

    # ------------------------------------------------------------------ prompt
    def messages(self, current: Mapping[str, Any], feedback: str | None = None) -> list[dict[str, str]]:
        """The prompt: agent, schema, constraints, current design, past designs and failures, feedback."""
        lines = [
            AGENT_DESCRIPTION,
            GOAL,
            f"JSON format: {schema_hint(self.schema_for(current))}",
            f"Constraints: quotas are shares (normalised); one route other than collaborative must supply at "
            f"least {MIN_SUPPLY} candidates (k and quota share x fusion_size); a design tried before is rejected.",
            f"Current design: {json.dumps(current, separators=(',', ':'))}",
        ]
        tried = [d for d in self._past(valid=True) if d.reward is not None or d.error][-self.history:]
        if tried:
            lines.append("Tried before (effect on clicks per request):")
            for d in tried:
                outcome = f"{d.reward:+.4f}" if d.reward is not None else f"failed: {d.error[:80]}"
                try:
                    lines.append(f"- {summarize_design(d.document)} -> {outcome}")
                except (KeyError, TypeError, ValueError):
                    continue
        earlier = self._earlier()
        if earlier:
            lines.append("In earlier experiments (effect on clicks per request, best first):")
            lines.extend(earlier)
        failures = self._past(valid=False)[-2:]
        if failures:
            lines.append("Recent rejected replies: " + "; ".join((f.error or "")[:100] for f in failures))
        if feedback:
            lines.append(f"Your last reply was rejected: {feedback[:300]}")
        if self.mode == "edit":
            lines.append("`edit` is an operation:argument; `value` is the quota share of set_quota/add_route or "
                         "the weight of head_like/head_dwell (ignored otherwise).")
            lines.append("Propose one edit of the current design that may raise clicks. Reply with the JSON object only.")
        else:
            lines.append("Propose one new design, different from the current one. Reply with the JSON object only.")
        return [
            {"role": "system", "content": "You design recommender system pipelines. You answer with one JSON object."},
            {"role": "user", "content": "\n".join(lines)},
        ]

    # ------------------------------------------------------------------ checks
    def check(self, text: str, current: Mapping[str, Any], current_key: str | None
              ) -> tuple[dict[str, Any] | None, str, list[str], Any, str | None]:
        """(design, rationale, repair notes, parsed value, error) of one reply."""
        if len(text) > self.max_reply_chars:
            return None, "", [], None, f"reply too large ({len(text)} characters > {self.max_reply_chars})"
        parsed, error = parse_json_reply(text)
        if error:
            return None, "", [], None, error
        if not isinstance(parsed, dict):
            return None, "", [], parsed, f"the reply must be a JSON object (got {type(parsed).__name__})"
        doc = dict(parsed)
        given = doc.pop("rationale", "")  # parsed JSON: finite numbers, bounded depth, so json.dumps is safe
        rationale = safe_text(given if isinstance(given, str) else json.dumps(given))[:300]
        if self.mode == "edit":
            try:
                doc, what = apply_edit(current, parse_edit(doc))
            except (ConfigError, TypeError, ValueError, KeyError) as e:
                return None, rationale, [], parsed, f"the edit does not apply: {e}"
            rationale = f"{what}: {rationale}"[:300]
        repaired, notes = repair_design(doc, base=current, schema=self.schema)
        errors = validate_design(repaired, self.schema)
        if errors:
            return None, rationale, notes, parsed, "invalid design: " + "; ".join(errors)
        key = design_key(repaired)
        if key == current_key:
            return None, rationale, notes, parsed, "the same as the current design"
        if key in self.seen:
            return None, rationale, notes, parsed, f"a design tried before (key {key})"
        return repaired, rationale, notes, parsed, None

    def propose(self, current: Mapping[str, Any]) -> Proposal | None:
        """A new, valid design (see the module docstring), or None when every attempt failed."""
        current = dict(current)
        current_key = design_key(current) if not validate_design(current, self.schema) else None
        attempts: list[Attempt] = []
        feedback = None
        for i in range(1 + self.max_retries):
            seed = int(self.rng.integers(2**31))
            t = time.perf_counter()
            try:
                reply = self.backend.complete(self.messages(current, feedback), schema=self.schema_for(current),
                                              max_tokens=self.max_tokens, temperature=self.temperature, seed=seed)
            except LLMError as e:
                error = safe_text(f"backend error: {e}")
                attempts.append(Attempt(i, "", error, [], time.perf_counter() - t, seed))
                self.outcomes["backend_error"] += 1
                self._store_failure("", None, "", error)
                log.warning("designer attempt %d: %s", i, error)
                feedback = None
                continue
            try:
                doc, rationale, notes, parsed, error = self.check(reply.text, current, current_key)
            except REPLY_FAILURES as e:  # a reply the checks did not foresee: a rejection, never the end of a run
                log.warning("designer attempt %d: checking the reply raised", i, exc_info=True)
                doc, rationale, notes, parsed = None, "", [], None
                error = f"the reply could not be checked: {type(e).__name__}: {str(e)[:300]}"
            if error is not None:
                error = safe_text(error)  # it names keys of the reply, and goes to the store and the next prompt
            if error is None and reply.finish_reason == "length":
                notes = [*notes, "the reply was cut at max_tokens"]
            seconds = time.perf_counter() - t
            attempts.append(Attempt(i, reply.text, error, notes, seconds, seed))
            if error is not None:
                if reply.finish_reason == "length":
                    error += f" (reply cut at max_tokens={self.max_tokens})"
                attempts[-1].error = error
                self.outcomes["rejected"] += 1
                self._store_failure(reply.text, parsed, rationale, error)
                log.info("designer attempt %d rejected: %s", i, error)
                feedback = error
                continue
            if doc is None:  # check() returns a design whenever it returns no error
                raise RuntimeError("designer check returned neither a design nor an error")
            if notes:
                route = "repaired"
            elif i > 0:
                route = "retried"
            else:
                route = "constrained" if reply.constrained else "direct"
            self.outcomes["proposed"] += 1
            log.info("designer attempt %d gave a %s design: %s", i, route, summarize_design(doc))
            return Proposal(doc, rationale, route, design_key(doc), notes, attempts, reply)
        log.warning("designer: no valid new design after %d attempts", len(attempts))
        return None


# ------------------------------------------------------------------------------------------- one step




def _same_model(a: TorchRanker, b: TorchRanker) -> bool:
    """The same network shape (a linear ranker has no hidden layer: its width does not matter)."""
    return (a.arch, a.per_segment, a.in_dim) == (b.arch, b.per_segment, b.in_dim) and (
        a.arch == "linear" or a.hidden == b.hidden)


def warm_start(challenger: Pipeline, incumbent: Pipeline) -> list[str]:
    """Carry the incumbent's learned state into a freshly built candidate, where the structure allows.

    A new structure would otherwise start cold and lose the A/B test for that alone. Recall routes of a
    kind the incumbent has, the score fusion and the re-ranker are copies of the incumbent's (their
    learned statistics, calibration and flagged items) with the candidate's parameters; the ranker is a
    copy when its architecture matches, else it is trained on the incumbent's replay memory (the
    features do not depend on the pipeline) for as many gradient steps as the incumbent took, at most
    ``WARM_UPDATES``. Returns what was carried over.
    """
    notes = []
    running = {r.name: r for r in incumbent.recalls}
    for i, r in enumerate(challenger.recalls):
        if r.name in running:
            warm = copy.deepcopy(running[r.name])
            warm.configure(r.config)
            challenger.recalls[i] = warm
            notes.append(f"recall {r.name}: copied")
    for attr in ("scorer", "reranker"):
        fresh, warm = getattr(challenger, attr), copy.deepcopy(getattr(incumbent, attr))
        warm.name = fresh.name
        warm.configure(fresh.config)
        setattr(challenger, attr, warm)
        notes.append(f"{attr}: copied")
    new, old = challenger.ranker, incumbent.ranker
    if isinstance(old, TorchRanker) and _same_model(new, old):
        warm = copy.deepcopy(old)
        warm.name = new.name
        warm.configure(new.config)
        challenger.ranker = warm
        notes.append("ranker: copied")
    elif isinstance(old, TorchRanker) and isinstance(new, TorchRanker) and old.in_dim == new.in_dim:
        updates = min(old.updates, WARM_UPDATES)
        n = new.learn_from(old.memory(), min_updates=updates)
        if n:
            notes.append(f"ranker: trained on the incumbent's {n} remembered impressions ({new.updates} steps)")
    return notes



@dataclass
class AgentEdits:
    """A designer's proposal as edits of the running pipeline's agents, which the coordinator can test: ``changes``
    (qualified agent name -> the config keys that differ) and ``replace`` (qualified agent name -> a new agent of the
    same role: a ranker of another architecture, warm-started on the incumbent's memory). ``reason`` says why there
    are none: no valid proposal, a candidate that cannot be built, or one that adds or drops agents (a recall route),
    which is a new pipeline rather than a change of its agents."""

    proposal: Proposal | None
    changes: dict[str, dict[str, Any]] = field(default_factory=dict)
    replace: dict[str, Any] = field(default_factory=dict)
    reason: str = ""


def _slot(agent: Any) -> str:
    """An agent's place in a pipeline: the ranker (and a cascade's pre-ranker) by its role, whatever its
    architecture; every other agent by role and name (a recall route, the candidate fusion, the score fusion)."""
    return agent.role if isinstance(agent, TorchRanker) else f"{agent.role}/{agent.name.rsplit('/', 1)[-1]}"


def agent_edits(service: DeploymentService, designer: LLMDesigner, target: str | None = None, seed: int = 0
                ) -> AgentEdits:
    """Ask ``designer`` for its next design of pipeline ``target`` (default: the first) and express it as
    :class:`AgentEdits` of the running agents: the path by which the LLM designer submits to the coordinator
    (``agents.evolution.coordinator.Proposal``) instead of deploying. A design that cannot be expressed or built is
    recorded in the designer's store with the reason (and not proposed again); one that is expressed is recorded
    when its test is decided, by the coordinator."""
    names = [p.name for p in service.system.pipelines]
    target = names[0] if target is None else check_choice("target", target, names)
    incumbent = service.system.pipelines[names.index(target)]
    base = pipeline_to_config(incumbent)
    proposal = designer.propose(config_to_design(base))
    if proposal is None:
        return AgentEdits(None, reason="no valid proposal")
    try:
        cfg = design_to_config(proposal.document, base=base, schema=designer.schema, system=False, seed=seed)
        challenger = build_pipeline(dataclasses.replace(cfg, name=incumbent.name), service.world_cfg, seed=seed)
    except (ConfigError, RuntimeError) as e:
        reason = f"{type(e).__name__}: {e}"
        designer.record(proposal, None, reason)
        return AgentEdits(proposal, reason=reason)
    old = {_slot(a): a for a in incumbent.agents}
    new = {_slot(a): a for a in challenger.agents}
    if set(old) != set(new):
        reason = (f"adds {sorted(set(new) - set(old))} and drops {sorted(set(old) - set(new))}: a new pipeline, not "
                  "a change of its agents")
        designer.record(proposal, None, reason)
        return AgentEdits(proposal, reason=reason)
    qualified = {_slot(a): n for n, a in qualified_agents(service.system).items() if a in incumbent.agents}
    out = AgentEdits(proposal)
    for slot, a in old.items():
        b = new[slot]
        if type(a) is type(b) and not (isinstance(a, TorchRanker) and not _same_model(a, b)):
            diff = {k: v for k, v in b.config.items() if a.config.get(k) != v}
            if diff:
                out.changes[qualified[slot]] = diff
        else:  # another model: trained on what the running one remembered, under the running one's name
            if isinstance(a, TorchRanker) and isinstance(b, TorchRanker) and a.in_dim == b.in_dim:
                b.learn_from(a.memory(), min_updates=min(a.updates, WARM_UPDATES))
            b.name = a.name
            out.replace[qualified[slot]] = b
    if not out.changes and not out.replace:
        out.reason = "the same agents and configs as the running pipeline"
        designer.record(proposal, None, out.reason)
    return out


@dataclass
class DesignStep:
    """What one design step did: the proposal (None: every attempt failed), the A/B decision, the stored row."""

    step: int
    proposal: Proposal | None
    decision: ABDecision | None = None
    design_id: int | None = None
    error: str | None = None  # the candidate could not be built or served
    warm: list[str] = field(default_factory=list)  # what the candidate took over from the incumbent
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.decision is not None and self.decision.accepted


def design_step(
    service: DeploymentService,
    designer: LLMDesigner,
    step: int = 0,
    experiment: ExperimentDesigner | None = None,
    windows: int = 2,
    metric: str = "clicks_exp",
    guardrail_tolerance: float | None = 0.05,
    seed: int = 0,
    warm: bool = True,
    target: str | None = None,
    on_log: Callable[[InteractionLog], None] | None = None,
) -> DesignStep:
    """Propose a design, A/B-test it on live traffic, keep it only if accepted, and store it all.

    A one-pipeline designer (``max_pipelines=1``) redesigns the running pipeline ``target`` (default: the
    first) and the test splits that pipeline's traffic (:func:`~agents.evolution.rollout.ab_rollout_pipeline`).
    A system designer (``max_pipelines=2``) redesigns the whole system (its pipelines and the segment routing;
    the running system must be routed by segment) and the test splits all users between the two systems
    (:func:`~agents.evolution.rollout.ab_test_systems`); on acceptance the candidate system replaces the running one.
    ``warm``: each candidate pipeline starts from the learned state of the running pipeline of the same name (or
    the first) where the structure allows (:func:`warm_start`). ``on_log`` receives each A/B window's log.
    """
    check_int("step", step, 0)
    world = service.world_cfg
    names = [p.name for p in service.system.pipelines]
    whole = designer.max_pipelines > 1
    if whole:
        if target is not None:
            raise ConfigError(f"`target` names a pipeline to redesign; a system designer (max_pipelines="
                              f"{designer.max_pipelines}) redesigns the whole system (got target={target!r})")
        base: PipelineConfig | SystemConfig = system_to_config(service.system, seed)
    else:
        target = names[0] if target is None else check_choice("target", target, names)
        base = pipeline_to_config(service.system.pipelines[names.index(target)])
    current = config_to_design(base)
    t = time.perf_counter()
    proposal = designer.propose(current)
    out = DesignStep(step, proposal, seconds={"propose": time.perf_counter() - t})
    if proposal is None:
        return out
    t = time.perf_counter()
    try:
        cfg = design_to_config(proposal.document, base=base, schema=designer.schema, system=whole, seed=seed)
        if whole:
            challenger = build_system(cfg, world)
            running = {p.name: p for p in service.system.pipelines}
            if warm:
                for p in challenger.pipelines:
                    out.warm += [f"{p.name}: {n}" for n in warm_start(p, running.get(p.name, service.system.pipelines[0]))]
            decision = ab_test_systems(service, challenger, experiment, windows, metric, guardrail_tolerance,
                                       on_log=on_log)
            if decision.accepted:
                service.deploy_system(challenger)
        else:
            incumbent = service.system.pipelines[names.index(target)]
            cfg = dataclasses.replace(cfg, name=incumbent.name)  # agents keep the running pipeline's names
            challenger = build_pipeline(cfg, world, seed=seed)
            if warm:
                out.warm = warm_start(challenger, incumbent)
            decision = ab_rollout_pipeline(service, challenger, experiment, windows, metric, guardrail_tolerance,
                                           target=target, on_log=on_log)
    except (ConfigError, RuntimeError) as e:  # a design that cannot be built or cannot fill slates
        out.error = f"{type(e).__name__}: {e}"
        out.design_id = designer.record(proposal, None, out.error)
        log.warning("design step %d: the candidate failed: %s", step, out.error)
        return out
    out.seconds["ab_test"] = time.perf_counter() - t
    out.decision = decision
    out.design_id = designer.record(proposal, decision.effect)
    if designer.store is not None:
        designer.store.add_rollout(
            designer.exp_id, step, f"{designer.agent}/{'system' if whole else target}", proposal.document,
            "accepted" if decision.accepted else "rejected",
            effect=decision.effect, ci_low=decision.ci_low, ci_high=decision.ci_high, p_value=decision.p_value,
            n_incumbent=decision.n_incumbent, n_candidate=decision.n_candidate,
            reasons=[f"route: {proposal.route}", *decision.reasons],
        )
    log.info("design step %d: %s %+.4f [%.4f, %.4f] (%s)", step, "accepted" if decision.accepted else "rejected",
             decision.effect, decision.ci_low, decision.ci_high, summarize_design(proposal.document))
    return out
