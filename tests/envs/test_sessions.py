"""Session bookkeeping shared by the slate envs: one open session per slot, one slot per user."""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import SegmentConfig, SlateEnv, SlateVectorEnv

# Few users for many slots: a user whose session just ended is often drawn again right away.
CROWDED = {"num_items": 200, "num_users": 40, "num_topics": 4, "num_creators": 10}
# Every session end is a churn: the user does not come back (return logit -50) and leaves for good.
# Many users per slot, so a just-ended user is rarely drawn again at once (that is the bug above).
ALWAYS_CHURN: dict[str, Any] = {
    "num_items": 200, "num_users": 4000, "num_topics": 4, "num_creators": 10, "graduate_after": 0,
    "segments": {"new": SegmentConfig(return_bias=-50.0, churn_probability=1.0)}, "request_mix": {"new": 1.0},
}
STEPS_COLUMN = 1 + 1 + 16  # obs["user"] = one-hot (1 segment) | log history | profile (16) | session steps / 100


def test_vector_slots_hold_distinct_users_in_session() -> None:
    """After every step, the slots whose episode goes on hold distinct users, each in an open session.

    Fails at envs/sessions.py SessionBatch.start (lines 138-142): a slot being reset ends the session of
    the user id it last held *if that user is in session* -- but that user's own session already ended on
    the previous step, and the user may meanwhile have been drawn into another slot (vector.py step() calls
    batch.start(reset_slots) after serve(), when the just-ended users are free again). start() then ends
    the other slot's live session (its return/churn never reported in info), and the user can be drawn a
    second time, so two slots serve one user and World.respond gets duplicate user ids.
    """
    env = SlateVectorEnv(num_envs=32, world=CROWDED, num_candidates=10, slate_size=3, max_episode_steps=2)
    env.reset(seed=0)
    env.action_space.seed(0)
    for step in range(30):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        live = env._batch.users[~(terminated | truncated)]
        assert len(np.unique(live)) == len(live), f"step {step}: one user in two slots"
        assert env.world.users.in_session[live].all(), f"step {step}: a slot serves a user whose session ended"


def test_vector_final_observation_is_the_ended_sessions_user() -> None:
    """The observation returned with terminated/truncated shows the episode's own user at its last step.

    Fails: SessionBatch.serve_items ends sessions (World.end_sessions -> Population.replace_with_new) before
    observe(), so a churned user's final observation shows the cold-start user who took the id (session
    step 0, fresh history), and truncation bootstrapping reads the wrong state.
    """
    env = SlateVectorEnv(num_envs=8, world=ALWAYS_CHURN, num_candidates=10, slate_size=3, max_episode_steps=3)
    env.reset(seed=0)
    env.action_space.seed(0)
    checked = 0
    for _ in range(20):
        obs, _, terminated, truncated, info = env.step(env.action_space.sample())
        ended = terminated | truncated
        if ended.any():
            np.testing.assert_allclose(obs["user"][ended, STEPS_COLUMN], info["session_steps"][ended] / 100)
            checked += int(ended.sum())
    assert checked > 0


def test_single_final_observation_is_the_ended_sessions_user() -> None:
    env = SlateEnv(world=ALWAYS_CHURN, num_candidates=10, slate_size=3)
    env.reset(seed=0)
    for _ in range(200):
        obs, _, terminated, _, info = env.step(np.arange(3))
        if terminated:
            assert info["churned"]
            np.testing.assert_allclose(obs["user"][STEPS_COLUMN], min(info["session_steps"], 100) / 100)
            return
    raise AssertionError("no session ended in 200 steps")
