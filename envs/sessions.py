"""Concurrent user sessions served slates from candidate sets: the engine shared by the slate envs.

``n`` slots each hold one user in a session. Each step every active slot's user sees a slate chosen
among its candidates; the world responds; sessions end on the user's exit or at ``max_session_steps``.
The single-user env runs one slot, the vector env ``num_envs`` slots, with no per-user Python loop.
Observations come in two modes (:data:`OBS_MODES`): ``"dense"`` copies each candidate's feature row into the
observation; ``"ids"`` hands out candidate item ids only, to be looked up in the catalog's feature table.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gymnasium import spaces

from envs.config import WorldConfig
from envs.items import FEATURE_BOUND, ITEM_FEATURES
from envs.reward import ResponseReward
from envs.validation import ConfigError, check_choice, check_int
from envs.world import Response, SessionEnd, World

__all__ = ["OBS_MODES", "ObservationLayout", "SessionBatch", "StepResult", "check_obs_mode", "observation_space", "read_only"]

IDLE, OPEN, CLOSED = 0, 1, 2  # slot states
# "dense": obs["candidates"] (C, F) item features per user; "ids": obs["candidate_ids"] (C,) item ids, features
# served once per env by a read-only view of the catalog's feature table (``catalog_features``)
OBS_MODES = ("dense", "ids")


@dataclass(frozen=True)
class ObservationLayout:
    """Where each observable feature sits in ``obs["user"]`` and in the last axis of ``obs["candidates"]``."""

    num_segments: int
    embedding_dim: int

    @classmethod
    def of(cls, cfg: WorldConfig) -> ObservationLayout:
        return cls(len(cfg.segments), cfg.embedding_dim)

    # obs["user"]: segment one-hot | log1p(history) / 7 | profile (D) | session steps / 100 | session CTR
    @property
    def user_segment(self) -> slice:
        return slice(0, self.num_segments)

    @property
    def user_history(self) -> int:
        return self.num_segments

    @property
    def user_profile(self) -> slice:
        return slice(self.num_segments + 1, self.num_segments + 1 + self.embedding_dim)

    @property
    def user_session_steps(self) -> int:
        return self.num_segments + 1 + self.embedding_dim

    @property
    def user_session_ctr(self) -> int:
        return self.num_segments + 2 + self.embedding_dim

    # obs["candidates"][..., f]: embedding (D) | quality | freshness | popularity | risk
    @property
    def item_embedding(self) -> slice:
        return slice(0, self.embedding_dim)

    def item(self, name: str) -> int:
        """Column of an item feature by name (one of ``envs.items.ITEM_FEATURES``)."""
        return self.embedding_dim + ITEM_FEATURES.index(name)


def check_obs_mode(obs_mode: str) -> str:
    """``obs_mode`` as one of :data:`OBS_MODES`, or a ConfigError naming the key, the allowed values and the value."""
    return check_choice("obs_mode", obs_mode, OBS_MODES)


def observation_space(cfg: WorldConfig, num_candidates: int, obs_mode: str = "dense") -> spaces.Dict:
    """Fixed-shape observation: the user's observable features, and the candidates' features (``"dense"``) or
    their item ids (``"ids"``: a policy gathers their rows from the env's read-only ``catalog_features``)."""
    obs_mode = check_obs_mode(obs_mode)
    user_dim = len(cfg.segments) + cfg.embedding_dim + 3
    b = FEATURE_BOUND
    user = spaces.Box(-b, b, shape=(user_dim,), dtype=np.float32)
    if obs_mode == "ids":
        ids = spaces.Box(0, cfg.num_items - 1, shape=(num_candidates,), dtype=np.int64)
        return spaces.Dict({"user": user, "candidate_ids": ids})
    item_dim = cfg.embedding_dim + len(ITEM_FEATURES)
    return spaces.Dict({"user": user, "candidates": spaces.Box(-b, b, shape=(num_candidates, item_dim), dtype=np.float32)})


def read_only(features: np.ndarray) -> np.ndarray:
    """A read-only view of a live feature table: it shows every later in-place update, and cannot be written to."""
    view = features.view()
    view.flags.writeable = False
    return view


@dataclass
class StepResult:
    """What happened in the served slots (arrays over those slots only)."""

    slots: np.ndarray
    slate: np.ndarray  # (m, K) item ids shown
    response: Response
    reward: np.ndarray  # (m,)
    terminated: np.ndarray  # (m,) the user ended the session
    truncated: np.ndarray  # (m,) the session hit max_session_steps
    ended: SessionEnd  # for the slots whose session ended (terminated | truncated), in slot order
    diagnostics: dict[str, np.ndarray]  # the response per item and the true user state (never for acting)


class SessionBatch:
    """``n`` user-session slots over one world."""

    def __init__(
        self,
        world: World,
        n: int,
        num_candidates: int,
        slate_size: int,
        reward: ResponseReward,
        max_session_steps: int | None = None,
        obs_mode: str = "dense",
    ) -> None:
        self.obs_mode = check_obs_mode(obs_mode)
        check_int("num_candidates", num_candidates, 1)
        check_int("slate_size", slate_size, 1)
        if slate_size > num_candidates:
            raise ConfigError(
                f"`slate_size` must be <= `num_candidates` (got {slate_size} > {num_candidates}); "
                "lower slate_size or raise num_candidates"
            )
        if num_candidates > world.cfg.num_items:
            raise ConfigError(
                f"`num_candidates` must be <= `world.num_items` (got {num_candidates} > {world.cfg.num_items})"
            )
        if n > world.cfg.num_users:
            raise ConfigError(
                f"`num_envs` must be <= `world.num_users`, one user per concurrent session (got {n} > {world.cfg.num_users})"
            )
        if max_session_steps is not None:
            check_int("max_episode_steps", max_session_steps, 1)
        self.world = world
        self.n = n
        self.num_candidates = num_candidates
        self.slate_size = slate_size
        self.reward = reward
        self.max_session_steps = max_session_steps
        self.users = np.full(n, -1, np.int64)
        self.state = np.zeros(n, np.int8)  # IDLE, OPEN (in session) or CLOSED (ended, awaiting release)
        self.churned = np.zeros(n, bool)  # for CLOSED slots: the user churns on release
        self.steps = np.zeros(n, np.int32)
        self.candidate_ids = np.zeros((n, num_candidates), np.int64)
        # dense mode only: the (n, C, F) feature rows of the candidates (ids mode keeps and hands out none)
        self.candidate_features: np.ndarray | None = None
        if self.obs_mode == "dense":
            self.candidate_features = np.zeros((n, num_candidates, world.catalog.features.shape[1]), np.float32)

    def start(self, slots: np.ndarray) -> None:
        """Give each slot in ``slots`` a new request.

        A session this slot left open (cut by an outside time limit) is closed first; closed sessions
        are released (their users freed, churned users replaced); then new users are drawn.
        """
        slots = np.asarray(slots)
        if len(slots) == 0:
            return
        still_open = slots[self.state[slots] == OPEN]
        if len(still_open):
            self.churned[still_open] = self.world.close_sessions(self.users[still_open]).churned
            self.state[still_open] = CLOSED
        closed = slots[self.state[slots] == CLOSED]
        if len(closed):
            self.world.release(self.users[closed], self.churned[closed])
        self.users[slots] = self.world.new_requests(len(slots))
        self.state[slots] = OPEN
        self.churned[slots] = False
        self.steps[slots] = 0

    def serve(self, slots: np.ndarray, actions: np.ndarray) -> StepResult:
        """Show the slates chosen by ``actions`` (candidate indices, (m, K)) to the users in ``slots``."""
        slots = np.asarray(slots)
        slate = np.take_along_axis(self.candidate_ids[slots], actions.astype(np.int64), axis=1)
        return self.serve_items(slots, slate)

    def serve_items(self, slots: np.ndarray, slate: np.ndarray) -> StepResult:
        """Show slates of item ids ``(m, K)`` (chosen by any recommender) to the users in ``slots``."""
        slots = np.asarray(slots)
        users = self.users[slots]
        pop = self.world.users
        segment = pop.segment[users].astype(np.int64)  # at request time (a new user may graduate in the step)
        response = self.world.respond(users, slate)
        self.steps[slots] += 1
        diagnostics = {
            "item_ids": slate,
            "click": response.click,
            "dwell": response.dwell,
            "like": response.like,
            "violation": response.violation,
            "choice_prob": response.choice_prob,
            "user_id": users,
            "segment": segment,
            "satisfaction": response.satisfaction,
            "interest": pop.interest[users].copy(),
            "day": np.full(len(users), self.world.now),
        }
        terminated = response.exit
        if self.max_session_steps is not None:
            truncated = ~terminated & (self.steps[slots] >= self.max_session_steps)
        else:
            truncated = np.zeros_like(terminated)
        done = terminated | truncated
        ended = self.world.close_sessions(users[done])
        self.state[slots[done]] = CLOSED
        self.churned[slots[done]] = ended.churned
        returned = np.zeros(len(slots), bool)
        returned[done] = ended.returned
        reward = self.reward(response, returned)
        return StepResult(slots, slate, response, reward, terminated, truncated, ended, diagnostics)

    def observe(self, slots: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Draw fresh candidate sets for every slot (or for ``slots`` only: the others keep theirs) and return
        the batched observation: ``{"user", "candidates"}`` (dense) or ``{"user", "candidate_ids"}`` (ids)."""
        if slots is None:
            ids, feats = self.world.candidates(self.users, self.num_candidates, self.candidate_features is not None)
            self.candidate_ids = ids
            if self.candidate_features is not None:  # dense mode
                self.candidate_features = feats
        else:
            ids, feats = self.world.candidates(self.users[slots], self.num_candidates, self.candidate_features is not None)
            # copies: the arrays of the previous observation, already handed out, stay as they were
            self.candidate_ids = self.candidate_ids.copy()
            self.candidate_ids[slots] = ids
            if self.candidate_features is not None:  # dense mode
                self.candidate_features = self.candidate_features.copy()
                self.candidate_features[slots] = feats
        user = self.world.users.observation(self.users)
        np.clip(user, -FEATURE_BOUND, FEATURE_BOUND, out=user)
        if self.candidate_features is not None:
            return {"user": user, "candidates": self.candidate_features}
        # a copy: the slots' own ids decide what ``serve`` shows, whatever the caller does to its observation
        return {"user": user, "candidate_ids": self.candidate_ids.copy()}
