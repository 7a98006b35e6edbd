"""AutoTrain's paper loop: method cards -> LLM-parsed model designs -> offline comparison -> online twins -> the store.

A *method card* is a plain-text description of a ranking method in the style of a paper's method section
(:func:`method_cards`: the cards shipped in ``agents/evolution/cards/``: Wide & Deep, DCN-V2, DeepFM, MMoE, and
DIN, which the design language cannot express). :func:`parse_card` asks an LLM backend (the bundled offline
SmolLM2 by default, any OpenAI-compatible endpoint by config) to translate a card into a design under
:data:`PARSE_SCHEMA` with constrained decoding: a :class:`~agents.decision.models.ModelDesign` (architecture,
width, depth, cross layers, FM factors, experts) plus the heads' loss weights, or ``"arch": "unsupported"``
when the method lies outside the language. The reply is data: decoded by the bounded JSON reader, validated
against the schema and the design's own checks; whatever fails is a :class:`ParsedCard` with ``valid=False`` and
the reason, and is never built. Nothing the model writes is executed.

:class:`AutoTrain` screens cards: each valid design is trained on the training windows of logged data with the
same :class:`~agents.evolution.offline.TrainRecipe` budget as the incumbent (the heads' weights the card gave)
and compared offline on the held-out windows (:func:`~agents.evolution.offline.compare`); :meth:`AutoTrain.online`
deploys incumbent and candidate, both as trained offline, on twins of the running deployment (identical traffic)
and measures the online gain in clicks per request; :meth:`AutoTrain.record` writes card, parsed design, offline
and online results into the knowledge store (``designs`` table, agent ``autotrain``); the
:class:`~agents.evolution.offline.OfflineOnlineLedger` says how well offline gains predicted online ones.
:func:`fidelity` scores a parse against the cards' answer key (``cards/answers.json``), which the model never sees.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from jsonschema import Draft202012Validator

from agents.decision.models import MODEL_ARCHITECTURES, MODEL_DESIGN_SCHEMA, ModelDesign
from agents.decision.ranking import TorchRanker
from agents.evolution.deployment import DeploymentService
from agents.evolution.llm import REPLY_FAILURES, LLMBackend, LLMError, Reply, parse_json_reply, safe_text
from agents.evolution.offline import (
    RECIPE_SPACE,
    LoggedData,
    OfflineComparison,
    OfflineOnlineLedger,
    TrainRecipe,
    compare,
    fit,
    offline_metrics,
)
from agents.evolution.twins import evaluate
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError, check_choice, check_int

__all__ = ["CARD_DIR", "PARSE_SCHEMA", "AutoTrain", "CardResult", "RecipeSearch", "MethodCard", "ParsedCard", "card_answers",
           "fidelity", "method_cards", "parse_card", "parse_messages"]

log = logging.getLogger(__name__)

CARD_DIR = Path(__file__).with_name("cards")
UNSUPPORTED = "unsupported"
MODEL_KEYS = ("arch", "hidden", "depth", "cross_layers", "fm_dim", "deep", "experts")
PARSE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [*MODEL_KEYS, "w_like", "w_dwell"],
    "properties": {  # the model design's own fields (one more arch: "unsupported") and the heads' loss weights
        **MODEL_DESIGN_SCHEMA["properties"],
        "arch": {"enum": [*MODEL_ARCHITECTURES, UNSUPPORTED]},
        "w_like": {"type": "number", "minimum": 0, "maximum": 2},
        "w_dwell": {"type": "number", "minimum": 0, "maximum": 1},
    },
}
_VALIDATOR = Draft202012Validator(PARSE_SCHEMA)

SYSTEM_PROMPT = (
    "You translate the method section of a recommender-systems paper into a ranking model design, as JSON.\n"
    "Fields:\n"
    "- arch: wide_deep (a linear part plus a deep network, summed), dcn (a cross network with explicit feature "
    "crossing layers beside a deep network), fm (a factorization machine: linear term plus pairwise interactions "
    "of latent vectors; with deep=true it is DeepFM), mmoe (shared experts with one softmax gate per task), mlp (a "
    "plain feed-forward network), linear (logistic regression), unsupported (the method needs something none of "
    "these can express, e.g. attention over behaviour sequences);\n"
    "- hidden: units of the first hidden layer; depth: number of hidden layers; cross_layers: cross layers (dcn); "
    "fm_dim: latent vector size (fm); deep: whether an fm also has a deep network; experts: number of experts "
    "(mmoe);\n"
    "- w_like and w_dwell: the loss weights of the like and dwell tasks relative to the click task.\n"
    "Use the numbers the text states; where it states none, keep hidden 64, depth 2, cross_layers 2, fm_dim 8, "
    "deep false, experts 3, w_like 0.5, w_dwell 0.1."
)


@dataclass(frozen=True)
class MethodCard:
    """A method card: its ``name`` (the file's stem) and ``text``."""

    name: str
    text: str


def method_cards(directory: str | Path | None = None) -> list[MethodCard]:
    """The cards (``*.md``) of ``directory`` (default the shipped ones), sorted by name."""
    root = CARD_DIR if directory is None else Path(directory)
    if not root.is_dir():
        raise ConfigError(f"`cards` must be a directory of *.md method cards (got {root})")
    cards = [MethodCard(p.stem, p.read_text(encoding="utf-8")) for p in sorted(root.glob("*.md"))]
    if not cards:
        raise ConfigError(f"no method cards (*.md) in {root}")
    return cards


def card_answers(directory: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """The answer key of the shipped cards (what a faithful parse gives); for scoring parses only."""
    root = CARD_DIR if directory is None else Path(directory)
    data = json.loads((root / "answers.json").read_text(encoding="utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def parse_messages(card: MethodCard, earlier: Sequence[str] = ()) -> list[dict[str, str]]:
    """The chat messages that ask for a card's design; ``earlier``: lines on how this card's designs did in earlier
    experiments (already bounded by the caller)."""
    past = ("\n\nIn earlier experiments this card was read as:\n" + "\n".join(earlier)) if earlier else ""
    return [{"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"Method card `{card.name}`:\n\n{card.text.strip()}{past}\n\nThe design as JSON:"}]


@dataclass
class ParsedCard:
    """What became of a card: the ``document`` the model wrote (None when unreadable), the ``design`` and the
    heads' ``recipe`` weights built from it when ``valid``, else ``error`` (why it was not built)."""

    card: str
    valid: bool
    document: dict[str, Any] | None = None
    design: ModelDesign | None = None
    weights: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    route: str = "constrained"
    seconds: float = 0.0
    reply_text: str = ""


def _check_document(doc: Any) -> tuple[ModelDesign | None, dict[str, float], str | None]:
    """Build a design from an untrusted document, or say why not (never raises on any value)."""
    if not isinstance(doc, dict):
        return None, {}, f"the reply must be a JSON object (got {type(doc).__name__})"
    errors = sorted(_VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        where = "/".join(str(p) for p in errors[0].path) or "(top)"
        return None, {}, f"the design does not match the schema at {where}: {safe_text(errors[0].message)[:200]}"
    if doc["arch"] == UNSUPPORTED:
        return None, {}, "the model found the method outside the design language (arch: unsupported)"
    try:
        design = ModelDesign(**{k: doc[k] for k in MODEL_KEYS})
        weights = {"w_like": float(doc["w_like"]), "w_dwell": float(doc["w_dwell"])}
        TrainRecipe(**weights)
    except REPLY_FAILURES as exc:  # ConfigError and any shape the schema did not foresee
        return None, {}, f"the design is invalid: {safe_text(str(exc))[:200]}"
    return design, weights, None


def parse_card(card: MethodCard, backend: LLMBackend, *, seed: int = 0, temperature: float = 0.0,
               max_tokens: int = 200, earlier: Sequence[str] = ()) -> ParsedCard:
    """Ask ``backend`` for ``card``'s design (constrained to :data:`PARSE_SCHEMA`) and check what comes back."""
    t = time.perf_counter()
    try:
        reply: Reply = backend.complete(parse_messages(card, earlier), schema=PARSE_SCHEMA, max_tokens=max_tokens,
                                        temperature=temperature, seed=seed)
    except LLMError as exc:
        return ParsedCard(card.name, False, error=f"the backend failed: {safe_text(str(exc))[:200]}", route="failed",
                          seconds=time.perf_counter() - t)
    doc, why = parse_json_reply(reply.text)
    route = "constrained" if reply.constrained else "free"
    if why is not None:
        return ParsedCard(card.name, False, error=f"unreadable reply: {why}", route=route,
                          seconds=time.perf_counter() - t, reply_text=safe_text(reply.text)[:2000])
    design, weights, error = _check_document(doc)
    return ParsedCard(card.name, error is None, doc if isinstance(doc, dict) else None, design, weights, error,
                      route, time.perf_counter() - t, safe_text(reply.text)[:2000])


def fidelity(parsed: ParsedCard, answer: Mapping[str, Any]) -> float:
    """The share of the answer key's fields the parse got right (``arch`` first: 0 when it is wrong)."""
    doc = parsed.document or {}
    if doc.get("arch") != answer.get("arch"):
        return 0.0
    keys = [k for k in answer if k != "arch"]
    if not keys:
        return 1.0
    right = sum(1 for k in keys if isinstance(doc.get(k), (int, float)) and not isinstance(doc.get(k), bool)
                and math.isclose(float(doc[k]), float(answer[k]), rel_tol=1e-6) or doc.get(k) is answer[k])
    return (1 + right) / (1 + len(keys))


@dataclass
class CardResult:
    """A card's path through AutoTrain: its parse, the offline comparison and, if tested, the online gain."""

    parsed: ParsedCard
    offline: OfflineComparison | None = None
    online_gain: float | None = None
    online: dict[str, float] = field(default_factory=dict)

    @property
    def offline_gain(self) -> float | None:
        return None if self.offline is None else self.offline.auc_gain


@dataclass
class RecipeSearch:
    """A search of the training recipe (:data:`~agents.evolution.offline.RECIPE_SPACE`) for one design, offline: every
    trial's recipe and held-out AUC (the first: the recipe it started from), and the best."""

    design: ModelDesign
    trials: list[tuple[TrainRecipe, float]]
    fixed: tuple[str, ...]

    @property
    def start(self) -> tuple[TrainRecipe, float]:
        return self.trials[0]

    @property
    def best(self) -> tuple[TrainRecipe, float]:
        return max(self.trials, key=lambda t: t[1])

    @property
    def gain(self) -> float:
        """Held-out AUC of the best recipe minus the starting one's."""
        return self.best[1] - self.start[1]


class AutoTrain:
    """Screen method cards against an incumbent design: parse, train offline with the same budget, compare,
    test the winners online on twins, record everything. ``min_gain``: the held-out AUC gain a candidate needs to
    be sent online. ``earlier``: how many results of each card from experiments that finished before this one
    registered go into its parse prompt (the design it was read as, its offline and online gains; 0: none)."""

    name = "autotrain"

    def __init__(self, backend: LLMBackend, incumbent: ModelDesign | None = None, recipe: TrainRecipe | None = None,
                 *, store: KnowledgeStore | None = None, exp_id: int | None = None, seed: int = 0, k: int = 10,
                 min_gain: float = 0.0, earlier: int = 2) -> None:
        if (store is None) != (exp_id is None):
            raise ConfigError("give both `store` and `exp_id` (the experiment the records belong to), or neither")
        self.backend, self.incumbent = backend, incumbent or ModelDesign(arch="mlp")
        self.recipe = recipe or TrainRecipe()
        self.store, self.exp_id = store, exp_id
        self.seed, self.k, self.min_gain = check_int("seed", seed, 0), check_int("k", k, 1), float(min_gain)
        self.earlier = check_int("earlier", earlier, 0, 10)
        self.ledger = OfflineOnlineLedger()
        self.results: list[CardResult] = []
        self.parsed: list[ParsedCard] = []

    def earlier_results(self, card: str) -> list[str]:
        """Prompt lines (at most ``earlier``, the best online gain first): what this card's designs earned in
        experiments that finished before this one registered."""
        if self.store is None or self.exp_id is None or not self.earlier:
            return []
        sources = {e.id for e in self.store.earlier_experiments(self.exp_id)}
        done = [d for d in self.store.designs(agent=self.name, valid=True)
                if d.experiment_id in sources and isinstance(d.document, dict) and d.document.get("card") == card
                and (d.document.get("offline") or d.reward is not None)]
        lines: list[str] = []
        for d in sorted(done, key=lambda d: (d.reward is None, -(d.reward or 0.0), d.id)):
            offline = (d.document.get("offline") or {}).get("gain")
            line = (f"- {json.dumps(d.document.get('design'), separators=(',', ':'))[:160]}: offline AUC gain "
                    f"{'n/a' if offline is None else f'{offline:+.4f}'}, online "
                    f"{'not tested' if d.reward is None else f'{d.reward:+.4f} clicks/request'}")
            if line not in lines:
                lines.append(line)
            if len(lines) == self.earlier:
                break
        return lines

    def parse_all(self, cards: Sequence[MethodCard]) -> list[ParsedCard]:
        """Parse every card once (kept in :attr:`parsed`; each parse recorded in the store when there is one)."""
        self.parsed = [parse_card(card, self.backend, seed=self.seed, earlier=self.earlier_results(card.name))
                       for card in cards]
        if self.store is not None and self.exp_id is not None:
            for p in self.parsed:
                self.store.add_design(self.exp_id, self.name, {"card": p.card, "document": p.document, "design":
                                      p.design.as_dict() if p.design else None, "weights": p.weights,
                                      "seconds_to_parse": p.seconds}, f"method card {p.card}", p.route, p.valid,
                                      p.error, None)
        return self.parsed

    def screen(self, cards: Sequence[MethodCard], train: LoggedData, valid: LoggedData) -> list[CardResult]:
        """Parse every card and compare each valid design with the incumbent offline (same data, same budget)."""
        out = []
        for card in cards:
            parsed = parse_card(card, self.backend, seed=self.seed)
            result = CardResult(parsed)
            if parsed.valid and parsed.design is not None:
                recipe = TrainRecipe(**{**self.recipe.__dict__, **parsed.weights})
                result.offline = compare(self.incumbent, parsed.design, train, valid, self.recipe, recipe,
                                         seed=self.seed, k=self.k)
            else:
                log.info("card %s not built: %s", card.name, parsed.error)
            out.append(result)
        self.results += out
        return out

    def tune_recipe(self, design: ModelDesign, train: LoggedData, valid: LoggedData, trials: int = 8,
                    fixed: Sequence[str] = ("updates",)) -> RecipeSearch:
        """Search the training recipe of ``design`` offline: Optuna's TPE sampler (seeded) over
        :data:`~agents.evolution.offline.RECIPE_SPACE`, starting from :attr:`recipe` (the first trial) with the keys of
        ``fixed`` held at its values (default the budget, ``updates``: every recipe trains as long), each trial the
        design trained on ``train`` and scored by held-out AUC on ``valid``. Recorded in the store (agent
        ``autotrain/recipe``) when there is one."""
        check_int("trials", trials, 1)
        for key in fixed:
            check_choice("fixed", key, list(RECIPE_SPACE.by_name))
        start = self.recipe.__dict__
        segments = int(max(train.segment.max(), valid.segment.max())) + 1
        found: list[tuple[TrainRecipe, float]] = []

        def objective(trial: optuna.Trial) -> float:
            values = {}
            for p in RECIPE_SPACE.params:
                if p.name in fixed:
                    values[p.name] = start[p.name]
                elif hasattr(p, "options"):
                    values[p.name] = trial.suggest_categorical(p.name, list(p.options))
                else:
                    values[p.name] = trial.suggest_float(p.name, p.low, p.high)
            recipe = TrainRecipe(**values)
            score = offline_metrics(fit(design, train, recipe, self.seed, segments), valid, self.k)["auc"]
            found.append((recipe, float(score)))
            return float(score)

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=self.seed))
        study.enqueue_trial({k: v for k, v in start.items() if k not in fixed})
        study.optimize(objective, n_trials=trials)
        search = RecipeSearch(design, found, tuple(fixed))
        if self.store is not None and self.exp_id is not None:
            best, auc = search.best
            self.store.add_design(self.exp_id, f"{self.name}/recipe", {
                "design": design.as_dict(), "best": best.__dict__, "trials": [[r.__dict__, a] for r, a in found],
                "fixed": list(fixed)}, f"recipe search: held-out AUC {search.start[1]:.4f} -> {auc:.4f}", "optuna",
                True, None, search.gain)
        return search

    def winners(self, results: Sequence[CardResult] | None = None) -> list[CardResult]:
        """The screened cards whose offline AUC gain exceeds ``min_gain``."""
        pool = self.results if results is None else results
        return [r for r in pool if r.offline is not None and r.offline.auc_gain > self.min_gain]

    def online(self, service: DeploymentService, result: CardResult, train: LoggedData, *, windows: int = 2,
               pipeline: int = 0, learn: bool = True) -> float:
        """The candidate's online gain over the incumbent, both trained offline on ``train`` with the same budget
        and deployed into copies of the running system's ``pipeline`` ranker, on twins of ``service`` (identical
        traffic, ``windows`` windows, learning on): clicks per request (expected), candidate - incumbent. The
        features must be the rankers' own layout (the base groups)."""
        parsed = result.parsed
        if parsed.design is None:
            raise ConfigError(f"card `{parsed.card}` has no valid design to test online ({parsed.error})")
        running: TorchRanker = service.system.pipelines[pipeline].ranker
        if train.x.shape[1] != running.in_dim:
            raise ConfigError(f"online tests need the rankers' own feature layout ({running.in_dim} columns; got "
                              f"{train.x.shape[1]}: {list(train.slices)})")
        segments, routes = running.num_segments, running.num_routes
        systems = []
        for design, weights in ((self.incumbent, {}), (parsed.design, parsed.weights)):
            recipe = TrainRecipe(**{**self.recipe.__dict__, **weights})
            ranker = fit(design, train, recipe, self.seed, segments, routes)
            system = copy.deepcopy(service.system)
            system.pipelines[pipeline].ranker = ranker
            ranker.name = running.name
            systems.append(system)
        values = evaluate(service, systems, windows=windows, learn=learn)
        result.online = {"incumbent": values[0].value, "candidate": values[1].value}
        result.online_gain = values[1].value - values[0].value
        if result.offline is not None:
            self.ledger.add(parsed.card, result.offline.auc_gain, result.online_gain)
        return result.online_gain

    def record(self, results: Sequence[CardResult] | None = None) -> list[int]:
        """Write each card's parse, design, offline and online results to the knowledge store; returns row ids."""
        if self.store is None or self.exp_id is None:
            raise ConfigError("`record` needs a knowledge store (AutoTrain(store=..., exp_id=...))")
        ids = []
        for r in self.results if results is None else results:
            p = r.parsed
            doc = {"card": p.card, "document": p.document, "design": p.design.as_dict() if p.design else None,
                   "weights": p.weights, "offline": None if r.offline is None else
                   {"incumbent": r.offline.incumbent, "candidate": r.offline.candidate, "gain": r.offline.gain},
                   "online": r.online or None, "seconds_to_parse": p.seconds}
            ids.append(self.store.add_design(self.exp_id, self.name, doc, f"method card {p.card}", p.route, p.valid,
                                             p.error, r.online_gain))
        return ids
