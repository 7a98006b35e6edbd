"""An LLM as an evolution controller: each window it picks one edit of the best configuration so far.

:class:`LLMSearch` follows the controllers' interface (``propose(obs) -> config``, ``tell(config,
reward, obs)``), so it runs wherever Optuna or random search run: :func:`~agents.evolution.controllers.evolve`
on one agent's decision space, and, over :meth:`CompositionEnv.target_params
<agents.evolution.composition.CompositionEnv.target_params>`, as the compositional controller (which
routes, rankers and segment routing make up the system) of the alternation schedule.

One proposal reads top to bottom:

1. the first window serves the starting config (the decision space's defaults, or ``start``), to
   measure it; afterwards the base is the best config by mean reward over the windows it served;
2. the prompt carries the space (each parameter with its options), the base with its reward, the
   recent trials as ``edit -> reward`` and the goal; the reply is constrained to one of the edits
   (``name=value``) of the base that lead to a config not tried yet, plus a short rationale (the edits
   are offered in a seeded random order: a small model tends to pick the first option it is shown);
3. a reply that is not JSON (or JSON beyond the limits of :func:`~agents.evolution.llm.parse_json_reply`),
   names no offered edit, or comes from a failing backend is rejected with the reason, counted in
   :attr:`LLMSearch.outcomes` and retried (at most ``max_retries`` times), telling the model why;
4. if every attempt fails, the window serves the base again: route ``fallback``, counted in
   :attr:`LLMSearch.routes` and stored, never passed off as a proposal of the model.

Every proposal (config, edit, rationale, route, reward) and every failed attempt goes to the knowledge
store when one is given (``designs`` of agent ``agent``).
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.decision.params import Choice, ParamSpace
from agents.evolution.llm import REPLY_FAILURES, LLMBackend, LLMError, parse_json_reply, safe_text
from envs.validation import ConfigError, check_int, check_range

__all__ = ["LLMSearch", "SearchStep"]

log = logging.getLogger(__name__)


def _fmt(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass
class SearchStep:
    """One proposal: the config served, how it was obtained, and (after ``tell``) its reward."""

    config: dict[str, Any]
    edit: str | None  # None: the starting config or a fallback
    rationale: str
    route: str  # "start", "constrained", "direct", "retried", "fallback" or "exhausted"
    errors: list[str]
    seconds: float
    reward: float | None = None


class LLMSearch:
    """Greedy local search whose moves an LLM chooses (see the module docstring).

    ``params``: the decision space (choices; ranges are offered at ``levels`` evenly spaced values).
    ``description``: what the agent is and what its parameters mean, for the prompt.
    """

    name = "llm"

    def __init__(
        self,
        params: ParamSpace,
        backend: LLMBackend,
        description: str = "",
        goal: str = "Goal: a higher reward (clicks per request) without more policy violations.",
        start: Mapping[str, Any] | None = None,
        seed: int | None = 0,
        max_retries: int = 2,
        history: int = 6,
        levels: int = 5,
        temperature: float = 0.7,
        max_tokens: int = 96,
        rationale_length: int = 60,
        shuffle: bool = True,
        store: Any = None,
        exp_id: int | None = None,
        agent: str = "llm_search",
    ) -> None:
        self.params, self.backend, self.description, self.goal = params, backend, description, goal
        self.max_retries = check_int("max_retries", max_retries, 0, 20)
        self.history = check_int("history", history, 0, 50)
        self.levels = check_int("levels", levels, 2, 11)
        self.temperature = check_range("temperature", temperature, 0.0, 2.0)
        self.max_tokens = check_int("max_tokens", max_tokens, 32)
        self.rationale_length = check_int("rationale_length", rationale_length, 10, 500)
        self.shuffle = bool(shuffle)
        self.start = params.validate(dict(start or {}), agent="start")
        self.rng = np.random.default_rng(seed)
        self.store, self.agent = store, agent
        if store is not None and exp_id is None:
            exp_id = store.start_experiment("llm_search", {"backend": backend.name, "agent": agent}, 0)
        self.exp_id = exp_id
        self.steps: list[SearchStep] = []
        self.routes: Counter[str] = Counter()
        self.outcomes: Counter[str] = Counter()  # attempts by outcome: "proposed", "rejected", "backend_error"
        self._rewards: dict[str, list[float]] = {}  # config key -> rewards of the windows it served
        self._configs: dict[str, dict[str, Any]] = {}
        self._pending: dict[int, SearchStep] = {}

    # ------------------------------------------------------------------ the space
    @staticmethod
    def key(config: Mapping[str, Any]) -> str:
        return json.dumps({k: config[k] for k in sorted(config)}, sort_keys=True, default=str)

    def options(self, name: str) -> list[Any]:
        p = self.params.by_name[name]
        if isinstance(p, Choice):
            return list(p.options)
        return [round(float(v), 4) for v in np.linspace(p.low, p.high, self.levels)]

    def edits(self, base: Mapping[str, Any]) -> list[str]:
        """Every ``name=value`` edit of ``base`` that leads to a config not served yet, in a fixed order."""
        out = []
        for p in self.params.params:
            for value in self.options(p.name):
                if value == base[p.name] or (isinstance(value, float) and abs(value - float(base[p.name])) < 1e-9):
                    continue
                if self.key({**base, p.name: value}) not in self._rewards:
                    out.append(f"{p.name}={_fmt(value)}")
        return out

    def apply(self, base: Mapping[str, Any], edit: str) -> dict[str, Any]:
        name, _, text = edit.partition("=")
        value = next(v for v in self.options(name) if _fmt(v) == text)
        return self.params.validate({**base, name: value}, agent=self.agent)

    def best(self) -> tuple[dict[str, Any], float | None]:
        """The config with the highest mean reward so far (the start before any reward), and that mean."""
        if not self._rewards:
            return dict(self.start), None
        k = max(self._rewards, key=lambda k: float(np.mean(self._rewards[k])))
        return dict(self._configs[k]), float(np.mean(self._rewards[k]))

    # ------------------------------------------------------------------ prompt
    def messages(self, base: Mapping[str, Any], reward: float | None, edits: list[str],
                 feedback: str | None) -> list[dict[str, str]]:
        space = "; ".join(f"{p.name}: {'|'.join(_fmt(v) for v in self.options(p.name))}" for p in self.params.params)
        lines = [self.description, self.goal, f"Parameters and their values: {space}",
                 f"Current best: {json.dumps(base, separators=(',', ':'), default=str)}"
                 + (f" (reward {reward:.4f})" if reward is not None else "")]
        tried = [s for s in self.steps if s.edit is not None and s.reward is not None][-self.history:]
        if tried:
            lines.append("Tried before (edit -> reward): " + "; ".join(f"{s.edit} -> {s.reward:.4f}" for s in tried))
        if feedback:
            lines.append(f"Your last reply was rejected: {feedback[:200]}")
        lines.append('Pick one edit ("name=value") of the current best that may raise the reward. '
                     "Reply with the JSON object only.")
        return [{"role": "system", "content": "You tune recommender systems. You answer with one JSON object."},
                {"role": "user", "content": "\n".join(x for x in lines if x)}]

    def schema(self, edits: list[str]) -> dict[str, Any]:
        return {"type": "object",
                "properties": {"edit": {"enum": edits},
                               "rationale": {"type": "string", "maxLength": self.rationale_length}},
                "required": ["edit", "rationale"], "additionalProperties": False}

    # ------------------------------------------------------------------ controller interface
    def propose(self, obs: np.ndarray | None = None) -> dict[str, Any]:
        t = time.perf_counter()
        base, reward = self.best()
        if not self._rewards and not self._pending:
            return self._issue(SearchStep(base, None, "", "start", [], 0.0))
        edits = self.edits(base)
        if not edits:  # every neighbour of the best was served: serve the best again
            return self._issue(SearchStep(base, None, "", "exhausted", [], time.perf_counter() - t))
        if self.shuffle:  # a small model favours the first options: offer them in an order drawn from the seed
            edits = [edits[i] for i in self.rng.permutation(len(edits))]
        errors: list[str] = []
        feedback = None
        for attempt in range(1 + self.max_retries):
            seed = int(self.rng.integers(2**31))
            try:
                reply = self.backend.complete(self.messages(base, reward, edits, feedback), schema=self.schema(edits),
                                              max_tokens=self.max_tokens, temperature=self.temperature, seed=seed)
            except LLMError as e:
                error, text = f"backend error: {e}", ""
                self.outcomes["backend_error"] += 1
            else:
                text = reply.text
                try:
                    config, edit, rationale, error = self.check(text, base, edits)
                except REPLY_FAILURES as e:  # a reply the checks did not foresee: a rejection, never the end of a run
                    log.warning("llm search attempt %d: checking the reply raised", attempt, exc_info=True)
                    config, edit, rationale = None, None, ""
                    error = f"the reply could not be checked: {type(e).__name__}: {str(e)[:300]}"
                if error is None and config is not None and edit is not None:
                    route = "retried" if attempt else ("constrained" if reply.constrained else "direct")
                    self.outcomes["proposed"] += 1
                    return self._issue(SearchStep(config, edit, rationale, route, errors, time.perf_counter() - t))
                self.outcomes["rejected"] += 1
            error = safe_text(error or "no edit")  # it may quote the reply; it goes to the store and the next prompt
            errors.append(error)
            feedback = error
            log.info("llm search attempt %d rejected: %s", attempt, error)
            if self.store is not None:
                self.store.add_design(self.exp_id, self.agent, {"raw": text[:2000]}, "", "failed", False, error)
        log.warning("llm search: no valid edit after %d attempts; serving the best config again", len(errors))
        return self._issue(SearchStep(base, None, "", "fallback", errors, time.perf_counter() - t))

    def check(self, text: str, base: Mapping[str, Any], edits: list[str]
              ) -> tuple[dict[str, Any] | None, str | None, str, str | None]:
        """(config, edit, rationale, None) of a reply that picks one of ``edits``, else (None, None, "", why)."""
        parsed, error = parse_json_reply(text)
        if error is not None:
            return None, None, "", error
        if not isinstance(parsed, dict):
            return None, None, "", f"the reply must be a JSON object (got {type(parsed).__name__})"
        edit = parsed.get("edit")
        if not isinstance(edit, str) or edit not in edits:
            got = safe_text(edit[:60]) if isinstance(edit, str) else type(edit).__name__
            return None, None, "", f"`edit` must be one of the offered edits (got {got!r})"
        try:
            config = self.apply(base, edit)
        except ConfigError as e:  # an offered edit the space's own checks refuse
            return None, None, "", f"the edit {edit!r} does not apply: {e}"
        given = parsed.get("rationale", "")  # parsed JSON: finite numbers, bounded depth, so json.dumps is safe
        rationale = safe_text(given if isinstance(given, str) else json.dumps(given))[: self.rationale_length]
        return config, edit, rationale, None

    def _issue(self, step: SearchStep) -> dict[str, Any]:
        self.routes[step.route] += 1
        self.steps.append(step)
        config = dict(step.config)
        self._pending[id(config)] = step
        return config

    def tell(self, config: dict[str, Any], reward: float | list[float], obs: np.ndarray | None = None) -> None:
        step = self._pending.pop(id(config), None)
        if step is None:
            raise ValueError("`tell` must receive a config returned by this controller's `propose` (got an unknown one)")
        step.reward = float(np.mean(reward))
        k = self.key(step.config)
        self._rewards.setdefault(k, []).append(step.reward)
        self._configs[k] = dict(step.config)
        if self.store is not None:
            self.store.add_design(self.exp_id, self.agent, {"config": step.config, "edit": step.edit},
                                  step.rationale, step.route, True, None, step.reward)
