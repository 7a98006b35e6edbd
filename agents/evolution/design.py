"""The JSON design language of pipeline structure: its JSON Schema, validation, repair, and the round trip to configs.

A design document describes what the numeric tuners cannot change: which recall routes a pipeline
has (a route type is a key of ``routes``, so each is used at most once) and their quota shares (and
optionally each route's ``k``, among the values that route allows), the fusion size, the ranker's
architecture (``arch``, ``hidden`` width, ``per_segment`` towers), the multi-task head weights and
the re-rank stage parameters; with two pipelines, ``routing`` sends user segments to a pipeline by
its index. Example::

    {"pipelines": [{"name": "baseline",
                    "routes": {"popularity": {"quota": 0.5, "k": 200}, "content": {"quota": 0.5}},
                    "fusion_size": 500,
                    "ranker": {"arch": "mlp", "hidden": 64, "per_segment": false},
                    "heads": {"w_click": 1.0, "w_like": 0.3, "w_dwell": 0.2},
                    "rerank": {"mmr_lambda": 0.0, "freshness_boost": 0.0, "risk_threshold": 0.5, "exposure_cap": 0}}],
     "rationale": "two routes"}

The schema (JSON Schema draft 2020-12) is built from the agents' own decision spaces, so it stays in
sync with them, and is kept small and flat enough for a 135M model under constrained decoding.
:func:`validate_design` adds the rules a schema cannot say (quotas not all 0, one route that supplies
enough candidates to fill a slate, unique pipeline names, routing to an existing pipeline).
Parameters the language does not express (e.g. a route's ``half_life``, the ranker's learning rate)
are inherited from a ``base`` config in :func:`design_to_config`. :func:`repair_design` fixes what
can be fixed (numbers clamped, close names, unknown keys dropped, routes given as a list turned into
the map with repeats dropped) and notes each change; :func:`design_key` is a canonical hash for
deduplication.

Documents come from a model and are untrusted: validation and repair never raise on any value. A
document that is not JSON data (nesting deeper than :data:`MAX_DEPTH`, NaN, +-inf, an integer beyond
the float range, a non-string key, a set or object) is invalid with the reason, and repair treats such
a value as unusable.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import numbers
import re
import reprlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from jsonschema import Draft202012Validator

from agents.decision.configs import ROUTES, PipelineConfig, RankerConfig, RouteConfig, SystemConfig, baseline_config
from agents.decision.functional import SegmentRouter
from agents.decision.fusion import FUSION_SIZES, MultiTaskFusion
from agents.decision.params import ParamSpace, Range
from agents.decision.ranking import ARCHITECTURES
from agents.decision.recall import RECALL_ROUTES
from agents.decision.rerank import Reranker
from agents.decision.system import Pipeline, System
from envs.config import default_segments
from envs.validation import ConfigError

__all__ = [
    "DEFAULT_DESIGN",
    "DESIGN_SCHEMA",
    "HIDDEN_WIDTHS",
    "MAX_DEPTH",
    "MIN_SUPPLY",
    "config_to_design",
    "design_key",
    "design_schema",
    "design_to_config",
    "pipeline_to_config",
    "repair_design",
    "summarize_design",
    "system_to_config",
    "validate_design",
]

HIDDEN_WIDTHS = (16, 32, 64, 128, 256)  # ranker widths the language offers
HEAD_KEYS = ("w_click", "w_like", "w_dwell")
RERANK_KEYS = ("mmr_lambda", "freshness_boost", "risk_threshold", "exposure_cap")
ROUTE_K = {kind: tuple(RECALL_ROUTES[kind].params.by_name["k"].options) for kind in ROUTES}
NAME_PATTERN = r"^[a-z][a-z0-9_]{0,31}$"
RATIONALE_LENGTH = 200
# Candidates that one route other than 'collaborative' (empty for users without clicks) must supply
# (min(k, quota share x fusion size)): two slates of 10. A route's own candidates are distinct, and
# fusion keeps the first route's candidates whole, so a slate always fills.
MIN_SUPPLY = 20
SEGMENTS = tuple(default_segments())
SCHEMA_URI = "https://json-schema.org/draft/2020-12/schema"
MAX_DEPTH = 64  # nesting levels a document may have (a design needs 5)


# ---------------------------------------------------------------------------------------- schema


def _param_schema(space: ParamSpace, keys: Sequence[str]) -> dict[str, Any]:
    """An object of some parameters of an agent's decision space: Range -> number in bounds, Choice -> enum."""
    props: dict[str, Any] = {}
    for key in keys:
        p = space.by_name[key]
        if isinstance(p, Range):
            props[key] = {"type": "number", "minimum": p.low, "maximum": p.high}
        elif all(isinstance(o, bool) for o in p.options):
            props[key] = {"type": "boolean"}
        else:
            props[key] = {"enum": list(p.options)}
    return {"type": "object", "additionalProperties": False, "required": list(keys), "properties": props}


def design_schema(
    segments: Sequence[str] = SEGMENTS,
    max_pipelines: int = 2,
    require_rationale: bool = False,
    rationale_length: int = RATIONALE_LENGTH,
) -> dict[str, Any]:
    """The JSON Schema of design documents; ``max_pipelines`` 1 drops ``routing`` (a single pipeline)."""
    if max_pipelines not in (1, 2):
        raise ConfigError(f"`max_pipelines` must be one of [1, 2] (got {max_pipelines})")
    routes = {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            kind: {
                "type": "object",
                "additionalProperties": False,
                "required": ["quota"],
                "properties": {
                    "quota": {"type": "number", "minimum": 0.0, "maximum": 1.0},
                    "k": {"enum": list(ROUTE_K[kind])},
                },
            }
            for kind in ROUTES
        },
    }
    pipeline = {
        "type": "object",
        "additionalProperties": False,
        "required": ["name", "routes", "fusion_size", "ranker", "heads", "rerank"],
        "properties": {
            "name": {"type": "string", "pattern": NAME_PATTERN, "maxLength": 32},
            "routes": routes,
            "fusion_size": {"enum": list(FUSION_SIZES)},
            "ranker": {
                "type": "object",
                "additionalProperties": False,
                "required": ["arch", "hidden", "per_segment"],
                "properties": {
                    "arch": {"enum": list(ARCHITECTURES)},
                    "hidden": {"enum": list(HIDDEN_WIDTHS)},
                    "per_segment": {"type": "boolean"},
                },
            },
            "heads": _param_schema(MultiTaskFusion.params, HEAD_KEYS),
            "rerank": _param_schema(Reranker.params, RERANK_KEYS),
        },
    }
    props: dict[str, Any] = {
        "pipelines": {"type": "array", "items": pipeline, "minItems": 1, "maxItems": max_pipelines},
    }
    if max_pipelines > 1:
        props["routing"] = {
            "type": "object",
            "additionalProperties": False,
            "properties": {s: {"type": "integer", "minimum": 0, "maximum": max_pipelines - 1} for s in segments},
        }
    props["rationale"] = {"type": "string", "maxLength": rationale_length}
    return {
        "$schema": SCHEMA_URI,
        "title": "agentic-rs pipeline design",
        "type": "object",
        "additionalProperties": False,
        "required": ["pipelines", "rationale"] if require_rationale else ["pipelines"],
        "properties": props,
    }


DESIGN_SCHEMA = design_schema()
Draft202012Validator.check_schema(DESIGN_SCHEMA)


# ------------------------------------------------------------------------------------ validation


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "design"


class _SafeRepr(reprlib.Repr):
    """``reprlib`` limits, and no full ``repr`` of a huge integer (Python refuses those past 4,300 digits)."""

    def repr_int(self, x: int, level: int) -> str:
        if abs(x) > 10**30:
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_got = _SafeRepr().repr  # a short, safe description of any value, for messages


def _as_text(value: Any) -> str | None:
    """A scalar as the text a model may have meant (``3`` -> ``"3"``); None for containers, huge ints, objects."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) or (isinstance(value, int) and abs(value) <= 10**30):
        return str(value)
    return None


def _not_json(doc: Any, limit: int = 5) -> list[str]:
    """What keeps ``doc`` from being the JSON data a design is (at most ``limit`` problems, each naming its key):
    nesting deeper than MAX_DEPTH, NaN or +-inf, an integer beyond the float range, a non-string key, a
    value of another type. Iterative, so any depth is safe to check."""
    problems: list[str] = []
    stack: list[tuple[Any, str, int]] = [(doc, "design", 0)]
    while stack and len(problems) < limit:
        value, path, depth = stack.pop()
        if isinstance(value, (Mapping, list)):
            if depth >= MAX_DEPTH:
                problems.append(f"`{path}` nests deeper than {MAX_DEPTH} levels")
                continue
            if isinstance(value, list):
                stack.extend((v, f"{path}[{i}]", depth + 1) for i, v in reversed(list(enumerate(value))))
                continue
            for k, v in reversed(list(value.items())):
                if not isinstance(k, str):
                    problems.append(f"`{path}` keys must be strings (got {type(k).__name__} {_got(k)})")
                    continue
                stack.append((v, k if path == "design" else f"{path}.{k[:40]}", depth + 1))
        elif value is None or isinstance(value, (str, bool)):
            continue
        elif isinstance(value, numbers.Integral):  # numpy integers too
            if abs(int(value)) > sys.float_info.max:
                problems.append(f"`{path}` must be a finite number (got an integer of {int(value).bit_length()} "
                                f"bits, beyond the float range)")
        elif isinstance(value, numbers.Real):
            if not math.isfinite(value):
                problems.append(f"`{path}` must be a finite number (got {value})")
        else:
            problems.append(f"`{path}` must be JSON data: an object, list, string, number, boolean or null "
                            f"(got {type(value).__name__})")
    return problems


def _schema_message(err: Any) -> str:
    """A jsonschema error as 'key, allowed values, value given' (with a did-you-mean for names)."""
    key, value, kind = _path(err.absolute_path), err.instance, err.validator
    if kind == "enum":
        allowed = list(err.validator_value)
        close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1) if isinstance(value, str) else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"`{key}` must be one of {allowed} (got {_got(value)}){hint}"
    if kind in ("minimum", "maximum"):
        lo, hi = err.schema.get("minimum"), err.schema.get("maximum")
        return f"`{key}` must be in [{lo}, {hi}] (got {_got(value)})"
    if kind == "type":
        return f"`{key}` must be of type {err.validator_value} (got {type(value).__name__} {_got(value)})"
    if kind == "additionalProperties":
        allowed = list(err.schema.get("properties", {}))
        extra = [k for k in value if k not in allowed]
        close = [c for k in extra for c in difflib.get_close_matches(k, allowed, n=1)]
        hint = f"; did you mean {close[0]!r}?" if close else ""
        return f"`{key}` has unknown keys {extra} (allowed: {allowed}){hint}"
    if kind == "required":
        missing = err.message.split(" is a required property")[0]
        return f"`{key}` is missing the required key {missing}"
    if kind == "minProperties":
        return f"`{key}` must have at least {err.validator_value} keys (got {len(value)})"
    if kind in ("minItems", "maxItems"):
        bound = "at least" if kind == "minItems" else "at most"
        return f"`{key}` must have {bound} {err.validator_value} items (got {len(value)})"
    if kind == "maxLength":
        return f"`{key}` must be at most {err.validator_value} characters (got {len(value)})"
    if kind == "pattern":
        return f"`{key}` must match {err.validator_value} (got {_got(value)})"
    return f"`{key}`: {err.message}"


def _k_of(kind: str, route: Mapping[str, Any]) -> int:
    return int(route.get("k", RECALL_ROUTES[kind].params.by_name["k"].default))


def _supply(pipe: Mapping[str, Any]) -> int:
    """The most candidates one route other than 'collaborative' supplies to fusion (see :data:`MIN_SUPPLY`)."""
    routes = pipe["routes"]
    total = sum(r["quota"] for r in routes.values())
    if total <= 0:
        return 0
    return max((min(_k_of(kind, r), math.floor(r["quota"] / total * pipe["fusion_size"]))
                for kind, r in routes.items() if kind != "collaborative"), default=0)


def _semantic_errors(doc: Mapping[str, Any]) -> list[str]:
    errors = []
    pipes = doc["pipelines"]
    names = [p["name"] for p in pipes]
    if len(set(names)) != len(names):
        errors.append(f"`pipelines` names must be unique (got {names})")
    for i, pipe in enumerate(pipes):
        p = f"pipelines[{i}]"
        quotas = {kind: r["quota"] for kind, r in pipe["routes"].items()}
        if sum(quotas.values()) <= 0:
            errors.append(f"`{p}.routes` quotas must not all be 0 (got {quotas})")
        elif (s := _supply(pipe)) < MIN_SUPPLY:
            errors.append(f"`{p}.routes`: one route other than 'collaborative' must supply at least {MIN_SUPPLY} "
                          f"candidates (min(k, quota share x fusion_size): at most {s}); raise its quota, k or "
                          f"fusion_size")
    for segment, index in doc.get("routing", {}).items():
        if index >= len(pipes):
            errors.append(f"`routing.{segment}` must be a pipeline index in [0, {len(pipes) - 1}] (got {index})")
    return errors


def validate_design(doc: Any, schema: Mapping[str, Any] = DESIGN_SCHEMA) -> list[str]:
    """Every problem of a design document, each naming the key, the allowed values and the value; [] if valid.

    Never raises: a document that is not JSON data (see :func:`_not_json`) gets those problems only."""
    problems = _not_json(doc)
    if problems:
        return problems
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(doc), key=lambda e: (list(map(str, e.absolute_path)), e.validator))
    if errors:
        return [_schema_message(e) for e in errors]
    return _semantic_errors(doc)


# ---------------------------------------------------------------------------------------- repair


def _number(value: Any) -> float | None:
    """A finite number from a number or a numeric string; None otherwise."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int):
        return float(value) if abs(value) <= sys.float_info.max else None  # float() of a larger int overflows
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            v = float(value.strip())
        except ValueError:
            return None
        return v if math.isfinite(v) else None
    return None


def _nearest(value: float, options: Sequence[Any]) -> Any:
    return min(options, key=lambda o: (abs(float(o) - value), float(o)))


class _Repair:
    """Schema-driven repair of one document; ``notes`` says what was changed and why."""

    def __init__(self, notes: list[str]) -> None:
        self.notes = notes

    def value(self, value: Any, schema: Mapping[str, Any], base: Any, path: str) -> tuple[Any, bool]:
        """(repaired value, ok); not ok means the value cannot be repaired (the caller drops or replaces it)."""
        if "enum" in schema:
            return self.enum(value, list(schema["enum"]), path)
        kind = schema.get("type")
        if kind == "object":
            return self.obj(value, schema, base, path)
        if kind == "array":
            return self.array(value, schema, base, path)
        if kind in ("number", "integer"):
            v = _number(value)
            if v is None:
                self.notes.append(f"`{path}`: {_got(value)} is not a number")
                return value, False
            lo, hi = schema.get("minimum", -math.inf), schema.get("maximum", math.inf)
            clamped = min(max(v, lo), hi)
            if kind == "integer":
                clamped = int(round(clamped))
            if clamped != v:
                self.notes.append(f"`{path}`: {_got(value)} clamped to {clamped} (range [{lo}, {hi}])")
            elif not isinstance(value, (int, float)) or isinstance(value, bool):
                self.notes.append(f"`{path}`: {_got(value)} read as {clamped}")
            return (clamped if kind == "integer" or isinstance(clamped, float) else float(clamped)), True
        if kind == "boolean":
            if isinstance(value, bool):
                return value, True
            text = (_as_text(value) or "").strip().lower()
            if text in ("true", "1", "yes", "1.0"):
                self.notes.append(f"`{path}`: {_got(value)} read as true")
                return True, True
            if text in ("false", "0", "no", "0.0"):
                self.notes.append(f"`{path}`: {_got(value)} read as false")
                return False, True
            self.notes.append(f"`{path}`: {_got(value)} is not a boolean")
            return value, False
        if kind == "string":
            text = "" if value is None else _as_text(value)
            if text is None:
                self.notes.append(f"`{path}`: {_got(value)} is not a string")
                return value, False
            if text is not value:
                self.notes.append(f"`{path}`: {_got(value)} read as a string")
            if "pattern" in schema and not re.fullmatch(schema["pattern"], text):
                fixed = re.sub(r"[^a-z0-9_]+", "_", text.strip().lower()).strip("_")
                fixed = fixed if fixed[:1].isalpha() else f"p_{fixed}".rstrip("_")
                fixed = fixed[: schema.get("maxLength", len(fixed))]
                if not re.fullmatch(schema["pattern"], fixed):
                    self.notes.append(f"`{path}`: {_got(value)} does not match {schema['pattern']}")
                    return value, False
                self.notes.append(f"`{path}`: {_got(value)} renamed {fixed!r}")
                text = fixed
            if len(text) > schema.get("maxLength", math.inf):
                text = text[: schema["maxLength"]]
                self.notes.append(f"`{path}`: truncated to {schema['maxLength']} characters")
            return text, True
        return value, True

    def enum(self, value: Any, options: list[Any], path: str) -> tuple[Any, bool]:
        if value in options and not isinstance(value, bool):
            return value, True
        if all(isinstance(o, str) for o in options):
            close = difflib.get_close_matches((_as_text(value) or "").strip().lower(), options, n=1, cutoff=0.75)
            if close:
                self.notes.append(f"`{path}`: {_got(value)} read as {close[0]!r} (allowed: {options})")
                return close[0], True
            self.notes.append(f"`{path}`: {_got(value)} is not one of {options}")
            return value, False
        v = _number(value)
        if v is None:
            self.notes.append(f"`{path}`: {_got(value)} is not one of {options}")
            return value, False
        near = _nearest(v, options)
        self.notes.append(f"`{path}`: {_got(value)} set to the nearest allowed value {near} (allowed: {options})")
        return near, True

    def obj(self, value: Any, schema: Mapping[str, Any], base: Any, path: str) -> tuple[Any, bool]:
        if not isinstance(value, Mapping):
            self.notes.append(f"`{path}`: {_got(value)} is not an object")
            return value, False
        props, required = schema.get("properties", {}), schema.get("required", [])
        out: dict[str, Any] = {}
        value = dict(value)
        for key in [k for k in value if k not in props]:
            close = difflib.get_close_matches(key.strip().lower() if isinstance(key, str) else "",
                                              [p for p in props if p not in value], n=1, cutoff=0.75)
            if close:
                self.notes.append(f"`{path}`: key {key!r} read as {close[0]!r}")
                value[close[0]] = value.pop(key)
        extra = [k for k in value if k not in props]
        if extra:
            self.notes.append(f"`{path}`: unknown keys {_got(extra)} dropped (allowed: {list(props)})")
        for key, sub in props.items():
            sub_path = f"{path}.{key}" if path != "design" else key
            sub_base = base.get(key) if isinstance(base, Mapping) else None
            if key in value:
                v, ok = self.value(value[key], sub, sub_base, sub_path)
                if ok:
                    out[key] = v
                    continue
            if key in required:
                if sub_base is None:
                    if key not in value:
                        self.notes.append(f"`{sub_path}`: missing")
                    return value, False
                self.notes.append(f"`{sub_path}`: {'missing' if key not in value else 'unusable'}, "
                                  f"kept the current {_got(sub_base)}")
                out[key] = copy.deepcopy(sub_base)
            elif key in value:
                self.notes.append(f"`{sub_path}`: unusable value dropped")
        if len(out) < schema.get("minProperties", 0):
            self.notes.append(f"`{path}`: fewer than {schema['minProperties']} usable keys")
            return out, False
        return out, True

    def array(self, value: Any, schema: Mapping[str, Any], base: Any, path: str) -> tuple[Any, bool]:
        if isinstance(value, Mapping):
            self.notes.append(f"`{path}`: a single object read as a list of one")
            value = [value]
        if not isinstance(value, list):
            self.notes.append(f"`{path}`: {_got(value)} is not a list")
            return value, False
        out = []
        base_items = base if isinstance(base, list) else []
        for i, item in enumerate(value):
            item_base = _match(item, base_items, i)
            v, ok = self.value(item, schema["items"], item_base, f"{path}[{i}]")
            if ok:
                out.append(v)
            else:
                self.notes.append(f"`{path}[{i}]`: dropped")
        hi = schema.get("maxItems")
        if hi is not None and len(out) > hi:
            self.notes.append(f"`{path}`: {len(out)} items cut to the first {hi}")
            out = out[:hi]
        return out, len(out) >= schema.get("minItems", 0)


def _match(item: Any, base_items: list[Any], index: int) -> Any:
    """The base item to fill a list item's missing parts from: the same ``name``, else the same index."""
    if isinstance(item, Mapping) and "name" in item:
        same = [b for b in base_items if isinstance(b, Mapping) and b.get("name") == item["name"]]
        if same:
            return same[0]
    return base_items[index] if index < len(base_items) else (base_items[0] if base_items else None)


def _routes_as_map(doc: Any, notes: list[str]) -> Any:
    """Routes given as a list ``[{"type": ..., "quota": ..., "k": ...}]`` -> the language's map, repeats dropped."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("pipelines"), list):
        return doc
    doc = dict(doc)
    doc["pipelines"] = list(doc["pipelines"])
    for i, pipe in enumerate(doc["pipelines"]):
        if not isinstance(pipe, Mapping) or not isinstance(pipe.get("routes"), list):
            continue
        routes: dict[str, Any] = {}
        for j, r in enumerate(pipe["routes"]):
            where = f"pipelines[{i}].routes[{j}]"
            if not isinstance(r, Mapping) or not isinstance(r.get("type"), str):
                notes.append(f"`{where}`: {_got(r)} has no route type, dropped")
                continue
            kind = r["type"]
            if kind not in ROUTES:
                close = difflib.get_close_matches(kind.strip().lower(), ROUTES, n=1, cutoff=0.75)
                if not close:
                    notes.append(f"`{where}.type`: {kind!r} is not one of {list(ROUTES)}, route dropped")
                    continue
                notes.append(f"`{where}.type`: {kind!r} read as {close[0]!r}")
                kind = close[0]
            if kind in routes:
                notes.append(f"`{where}`: repeated route type {kind!r} dropped")
                continue
            routes[kind] = {k: v for k, v in r.items() if k != "type"}
        notes.append(f"`pipelines[{i}].routes`: a list read as a map by route type")
        doc["pipelines"][i] = {**pipe, "routes": routes}
    return doc


def repair_design(
    doc: Any, base: Mapping[str, Any] | None = None, schema: Mapping[str, Any] = DESIGN_SCHEMA
) -> tuple[Any, list[str]]:
    """A repaired copy of ``doc`` and notes on each change: numbers clamped into range, enums set to the
    nearest allowed value (or the close name), unknown keys dropped, missing parts taken from ``base``
    (default :data:`DEFAULT_DESIGN`), repeated route types dropped, routing to a missing pipeline dropped.

    What cannot be repaired is left as it is, so :func:`validate_design` reports it.
    """
    notes: list[str] = []
    base = DEFAULT_DESIGN if base is None else base
    repaired, ok = _Repair(notes).value(_routes_as_map(doc, notes), schema, base, "design")
    if not ok or not isinstance(repaired, dict):
        return doc, notes
    pipes = repaired.get("pipelines", [])
    for i, pipe in enumerate(pipes):
        routes = pipe["routes"]
        if routes and sum(r["quota"] for r in routes.values()) <= 0:
            notes.append(f"`pipelines[{i}].routes`: all quotas 0, set to equal shares")
            pipe["routes"] = {kind: {**r, "quota": round(1.0 / len(routes), 3)} for kind, r in routes.items()}
    names = [p.get("name") for p in pipes]
    for i, name in enumerate(names):
        if name in names[:i]:
            new = f"{name}_{i}"[:32]
            notes.append(f"`pipelines[{i}].name`: repeated name {name!r} renamed {new!r}")
            pipes[i]["name"] = names[i] = new
    for segment, index in list(repaired.get("routing", {}).items()):
        if index >= len(pipes):
            notes.append(f"`routing.{segment}`: pipeline {index} does not exist (only {len(pipes)}), rule dropped")
            del repaired["routing"][segment]
    return repaired, notes


# ------------------------------------------------------------------------------- configs <-> designs


def config_to_design(cfg: PipelineConfig | SystemConfig) -> dict[str, Any]:
    """The design document of a config (route parameters other than ``k`` and ranker training parameters
    are not part of the language; :func:`design_to_config` takes them from a base config)."""
    pipes = [cfg] if isinstance(cfg, PipelineConfig) else list(cfg.pipelines)
    out = []
    for p in pipes:
        if p.ranker.hidden not in HIDDEN_WIDTHS:
            raise ConfigError(f"`pipelines[{p.name}].ranker.hidden` must be one of {list(HIDDEN_WIDTHS)} to be "
                              f"expressed as a design (got {p.ranker.hidden})")
        scorer = MultiTaskFusion.params.validate(dict(p.scorer), agent=f"{p.name}.scorer")
        rerank = Reranker.params.validate(dict(p.rerank), agent=f"{p.name}.rerank")
        routes: dict[str, Any] = {}
        for r in p.routes:
            routes[r.kind] = {"quota": float(r.quota)}
            if "k" in r.params:
                routes[r.kind]["k"] = int(r.params["k"])
        out.append({
            "name": p.name,
            "routes": routes,
            "fusion_size": int(p.fusion_size),
            "ranker": {"arch": p.ranker.arch, "hidden": int(p.ranker.hidden), "per_segment": bool(p.ranker.per_segment)},
            "heads": {k: float(scorer[k]) for k in HEAD_KEYS},
            "rerank": {k: (int(rerank[k]) if k == "exposure_cap" else float(rerank[k])) for k in RERANK_KEYS},
        })
    doc: dict[str, Any] = {"pipelines": out}
    if isinstance(cfg, SystemConfig) and cfg.routing:
        names = [p.name for p in pipes]
        doc["routing"] = {segment: names.index(name) for segment, name in cfg.routing.items()}
    return doc


def _base_pipeline(base: PipelineConfig | SystemConfig | None, name: str, index: int) -> PipelineConfig | None:
    if base is None or isinstance(base, PipelineConfig):
        return base
    by_name = {p.name: p for p in base.pipelines}
    return by_name.get(name) or (base.pipelines[index] if index < len(base.pipelines) else base.pipelines[0])


def design_to_config(
    doc: Mapping[str, Any],
    base: PipelineConfig | SystemConfig | None = None,
    system: bool | None = None,
    seed: int = 0,
    schema: Mapping[str, Any] = DESIGN_SCHEMA,
) -> PipelineConfig | SystemConfig:
    """The config of a valid design: a PipelineConfig for one pipeline without routing, else a SystemConfig
    (``system=True`` always gives a SystemConfig). Parameters outside the language come from ``base``.

    Raises ConfigError listing every problem if the document is not valid.
    """
    errors = validate_design(doc, schema)
    if errors:
        raise ConfigError("invalid design: " + "; ".join(errors))
    pipes = []
    for i, d in enumerate(doc["pipelines"]):
        b = _base_pipeline(base, d["name"], i)
        base_routes = {r.kind: r.params for r in b.routes} if b is not None else {}
        routes = []
        for kind, r in d["routes"].items():
            params = {k: v for k, v in base_routes.get(kind, {}).items() if k != "k"}
            if "k" in r:
                params["k"] = r["k"]
            routes.append(RouteConfig(kind, float(r["quota"]), params))
        rk = d["ranker"]
        ranker = RankerConfig(rk["arch"], int(rk["hidden"]), bool(rk["per_segment"]),
                              dict(b.ranker.params) if b is not None else {})
        scorer = {**(b.scorer if b is not None else {}), **{k: float(d["heads"][k]) for k in HEAD_KEYS}}
        rerank = {**(b.rerank if b is not None else {}),
                  **{k: (int(v) if k == "exposure_cap" else float(v)) for k, v in d["rerank"].items()}}
        pipes.append(PipelineConfig(d["name"], routes, int(d["fusion_size"]), ranker, scorer, rerank))
    routing = {segment: pipes[index].name for segment, index in doc.get("routing", {}).items()}
    if system or len(pipes) > 1 or routing:
        return SystemConfig(pipes, routing, seed)
    return pipes[0]


def pipeline_to_config(pipeline: Pipeline) -> PipelineConfig:
    """The config of a running pipeline, read from its agents' current configs (the learned state is not in it)."""
    fusion = pipeline.fusion.config
    routes = [RouteConfig(r.name, float(fusion[f"quota_{r.name}"]), dict(r.config)) for r in pipeline.recalls]
    rk = pipeline.ranker
    return PipelineConfig(
        pipeline.name, routes, int(fusion["size"]), RankerConfig(rk.arch, int(rk.hidden), bool(rk.per_segment), dict(rk.config)),
        dict(pipeline.scorer.config), dict(pipeline.reranker.config),
    )


def system_to_config(system: System, seed: int = 0) -> SystemConfig:
    """The config of a running system: its pipelines' configs and, for a :class:`SegmentRouter`, its routing."""
    if not isinstance(system.router, SegmentRouter):
        raise ConfigError(f"system_to_config needs a system routed by segment (got router "
                          f"{type(system.router).__name__})")
    names = [p.name for p in system.pipelines]
    routing = {s: system.router.config[f"route_{s}"] for s in system.router.segment_names}
    routing = {s: name for s, name in routing.items() if name != names[0]}  # unlisted segments go to the first
    return SystemConfig([pipeline_to_config(p) for p in system.pipelines], routing, seed)


# ---------------------------------------------------------------------------------- keys, summaries


def _canonical(doc: Mapping[str, Any]) -> dict[str, Any]:
    """What makes two designs the same system: rationale and names ignored, routes as sorted quota shares
    with ``k`` defaulted, numbers rounded to 3 decimals."""
    pipes = []
    for p in doc["pipelines"]:
        total = sum(float(r["quota"]) for r in p["routes"].values()) or 1.0
        routes = sorted((kind, round(float(r["quota"]) / total, 3), _k_of(kind, r)) for kind, r in p["routes"].items())
        pipes.append({
            "routes": routes,
            "fusion_size": int(p["fusion_size"]),
            "ranker": [p["ranker"]["arch"], int(p["ranker"]["hidden"]), bool(p["ranker"]["per_segment"])],
            "heads": [round(float(p["heads"][k]), 3) for k in HEAD_KEYS],
            "rerank": [round(float(p["rerank"][k]), 3) for k in RERANK_KEYS],
        })
    routing = {s: int(i) for s, i in doc.get("routing", {}).items() if int(i) != 0}  # unlisted = pipeline 0
    return {"pipelines": pipes, "routing": routing}


def design_key(doc: Mapping[str, Any]) -> str:
    """A canonical hash of a valid design (see :func:`_canonical`), for deduplication."""
    text = json.dumps(_canonical(doc), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def summarize_design(doc: Mapping[str, Any]) -> str:
    """One short line per design (for prompts and logs)."""
    parts = []
    for p in doc["pipelines"]:
        routes = ",".join(f"{kind}:{float(r['quota']):g}" + (f"/k{r['k']}" if "k" in r else "")
                          for kind, r in p["routes"].items())
        rk, h, rr = p["ranker"], p["heads"], p["rerank"]
        parts.append(
            f"{p['name']}: routes {routes}; fusion {p['fusion_size']}; ranker {rk['arch']}/{rk['hidden']}"
            f"{'/per_segment' if rk['per_segment'] else ''}; heads {h['w_click']:g}/{h['w_like']:g}/{h['w_dwell']:g}; "
            f"rerank mmr {rr['mmr_lambda']:g} fresh {rr['freshness_boost']:g} risk {rr['risk_threshold']:g} "
            f"cap {rr['exposure_cap']}"
        )
    if doc.get("routing"):
        parts.append("routing " + ",".join(f"{s}->{i}" for s, i in doc["routing"].items()))
    return " | ".join(parts)


DEFAULT_DESIGN: dict[str, Any] = config_to_design(baseline_config())
