"""The evolution env: both env checkers, PPO builds and trains, the codec, and bad input."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import A2C, PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from agents.decision.recall import ContentRecall
from agents.decision.rerank import Reranker
from agents.evolution.codec import SpaceCodec
from agents.evolution.env import EvolutionEnv
from envs.validation import ConfigError

TINY = {"num_items": 600, "num_users": 1200, "num_topics": 5, "num_creators": 30, "steps_per_day": 20}


def tiny_env(**kw) -> EvolutionEnv:
    return EvolutionEnv(**{"world": TINY, "window": 200, "concurrency": 100, **kw})


@pytest.mark.slow
def test_registered_and_checkers_pass():
    torch.set_num_threads(1)
    assert "agentic-rs/Evolution-v0" in envs.EVOLUTION_ENV_IDS
    env = gym.make("agentic-rs/Evolution-v0", world=TINY, window=200, concurrency=100)
    check_env(env.unwrapped, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sb3_check_env(tiny_env())


@pytest.mark.slow
@pytest.mark.parametrize("algo,codec", [(PPO, "box"), (A2C, "multidiscrete")])
def test_sb3_builds_and_trains(algo, codec):
    torch.set_num_threads(1)
    env = tiny_env(codec=codec)
    model = algo("MlpPolicy", env, n_steps=8, seed=0, device="cpu", **({"batch_size": 8} if algo is PPO else {}))
    model.learn(total_timesteps=16)
    assert model.num_timesteps >= 16
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    assert env.action_space.contains(action)
    _, reward, _, _, info = env.step(action)
    assert np.isfinite(reward) and info["config"] == env.target.config


@pytest.mark.parametrize("kind", ["box", "multidiscrete"])
def test_codec_round_trips_every_grid_point(kind):
    codec = SpaceCodec(Reranker.params, kind, bins=3)
    grid = codec.grid()
    assert len(grid) == 3 * 3 * 3 * 4 * 2 * 4  # ranges x3 bins, exposure_cap 4, learn_violations 2, mmr_pool 4
    for config in grid[:: max(len(grid) // 50, 1)]:
        decoded = codec.decode(codec.encode(config))
        for key, value in config.items():
            assert decoded[key] == pytest.approx(value), (key, config, decoded)


def test_bad_input_is_named():
    with pytest.raises(ConfigError, match=r"`agent` must be one of .* \(got 'baseline/rerank/mmrr'\); did you mean 'baseline/rerank/mmr'\?"):
        tiny_env(agent="baseline/rerank/mmrr")
    with pytest.raises(ConfigError, match=r"`codec` must be one of \['box', 'multidiscrete'\] \(got 'grid'\)"):
        tiny_env(codec="grid")
    with pytest.raises(ConfigError, match=r"`window` must be in \[1, inf\) \(got 0\)"):
        tiny_env(window=0)
    env = tiny_env()
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=r"`action` must lie in Box\(-1.0, 1.0, \(6,\), float32\) \(got \[2.0"):
        env.step(np.full(6, 2.0, np.float32))
    codec = SpaceCodec(ContentRecall.params, "multidiscrete")
    with pytest.raises(ConfigError, match=r"`action` must lie in MultiDiscrete"):
        codec.decode(np.array([9, 0, 0, 0]))


def test_fixed_parameters_and_frozen_learning():
    torch.set_num_threads(1)
    fixed = {"freshness_boost": 0.0, "exposure_cap": 0, "learn_violations": True, "mmr_pool": 50}
    env = tiny_env(fixed=fixed, learn=False, codec="multidiscrete", bins=5)
    assert [p.name for p in env.codec.params.params] == ["mmr_lambda", "risk_threshold"]
    assert env.action_space.nvec.tolist() == [5, 5]
    env.reset(seed=0)
    ranker = next(a for a in env.service.system.agents if a.role == "ranking")
    trained = ranker.trained_on
    _, _, _, _, info = env.step(np.array([4, 0]))
    assert info["config"] == {**fixed, "mmr_lambda": 1.0, "risk_threshold": 0.0}
    assert ranker.trained_on == trained  # learn=False: the system serves but does not learn
    with pytest.raises(ConfigError, match=r"`baseline/rerank/mmr config key` must be one of .* \(got 'mmr_lamda'\); did you mean 'mmr_lambda'\?"):
        tiny_env(fixed={"mmr_lamda": 0.5})
    with pytest.raises(ConfigError, match=r"`fixed` leaves no parameter of `baseline/rerank/mmr` to evolve"):
        tiny_env(fixed={**fixed, "mmr_lambda": 0.0, "risk_threshold": 1.0})


@pytest.mark.slow
def test_a_concurrent_control_serves_its_share_and_removes_the_learning_trend_from_the_reward():
    torch.set_num_threads(1)
    env = tiny_env(window=2000, control_share=0.5, reward={"inner_weight": {"rerank": 0.0}})  # reward: clicks/request
    env.reset(seed=0)
    system, initial = env.service.system, dict(env.target.config)
    same = {k: v for k, v in initial.items() if k in env.target_params().by_name}
    relative, absolute, shares, controls = [], [], [], []
    for _ in range(6):  # the candidate is the control's config: only the system's learning moves the reward
        _, reward, _, _, info = env.step(env.codec.encode(same))
        req = env.service.last_log.requests
        shares.append(float(np.mean(req["pipeline"] == 1)))
        controls.append((set(req["user"][req["pipeline"] == 1].tolist()), set(req["user"].tolist())))
        assert set(np.unique(env.service.last_log.requests["pipeline"])) == {0, 1}
        assert reward == pytest.approx(info["evolution/candidate_reward"] - info["evolution/control_reward"])
        relative.append(reward)
        absolute.append(info["evolution/candidate_reward"])
    # Measured on env seeds 0, 1, 2 (other sample paths, as another CPU's float kernels give): the control's
    # share of requests per window 0.415-0.558 (arms are by user, and users' request rates differ), over the
    # 6 windows 0.46-0.49; clicks per request rise by 0.36-0.39 over the 6 windows; the relative reward per
    # window has s.d. ~0.023 around 0 (max |relative| 0.051, 0.053, 0.014; means +0.012, +0.018, +0.003).
    # Tolerances are ~4 s.d. of that noise; a relative reward that kept the learning trend (the candidate's
    # reward alone, or a control that does not learn) moves by ~0.3 and fails, as does a share far from 0.5.
    assert abs(np.mean(shares) - 0.5) < 0.1, shares
    # a fresh split every window: of the users seen in two consecutive windows, the control of one is not the
    # control of the next (a fixed salt would give overlap 1; independent halves give ~0.5)
    for (c0, u0), (c1, u1) in zip(controls, controls[1:]):
        both = u0 & u1
        agree = len({u for u in both if (u in c0) == (u in c1)}) / len(both)
        assert 0.3 < agree < 0.7, agree
    assert absolute[-1] - absolute[0] > 0.2, absolute
    assert max(abs(r) for r in relative) < 0.1 and abs(np.mean(relative)) < 0.05, relative
    assert env.service.system is system and len(system.pipelines) == 1  # the split is only for the window
    env.step(env.codec.encode({**same, "mmr_lambda": 1.0}))
    assert env.target.config["mmr_lambda"] == 1.0 and env.control.config == initial  # the control keeps its config
    env.set_control_share(0.0)
    *_, info = env.step(env.codec.encode(same))
    assert set(np.unique(env.service.last_log.requests["pipeline"])) == {0} and "evolution/control_reward" not in info
    with pytest.raises(ConfigError, match=r"`control_share` needs a non-stationary env"):
        tiny_env(control_share=0.2, stationary=True)
    env.set_control_share(0.8, relative=False)  # a leader on 20% of the users, told the whole window's reward
    _, reward, _, _, info = env.step(env.codec.encode(same))
    assert abs(float(np.mean(env.service.last_log.requests["pipeline"] == 1)) - 0.8) < 0.1
    assert reward == pytest.approx(env.service.score(env.service.last_log, env.agent_name)[0])
    assert reward != pytest.approx(info["evolution/candidate_reward"] - info["evolution/control_reward"])
    with pytest.raises(ConfigError, match=r"`control_share` must be in \[0.0, 0.95\] \(got 0.97\)"):
        tiny_env(control_share=0.97)


def test_the_warm_up_reports_whether_the_learning_system_has_settled():
    """Reset serves the warm-up windows and tests their reward for an upward trend (the evolution's windows would
    otherwise measure when they ran as much as what they served): the info carries the slope, its p-value and the
    verdict by the stated rule (settled unless the slope is > 0 with p < 0.05)."""
    torch.set_num_threads(1)
    env = tiny_env(window=100, warmup=4)
    _, info = env.reset(seed=0)
    assert info["warmup/windows"] == 4 and np.isfinite(info["warmup/slope"]) and 0.0 <= info["warmup/slope_p"] <= 1.0
    assert info["warmup/settled"] == float(info["warmup/slope_p"] >= 0.05 or info["warmup/slope"] <= 0)
    assert info["warmup/tested"] == 3  # the last half, at least 3 windows: the take-off before it is no news
    assert tiny_env(window=100, warmup=6).reset(seed=0)[1]["warmup/tested"] == 3
    replay = tiny_env(window=100, warmup=1)
    _, short = replay.reset(seed=0)
    assert np.isnan(short["warmup/settled"])  # one window cannot show a trend
    assert "warmup/slope" not in tiny_env(window=100, warmup=0).reset(seed=0)[1]


def test_a_stationary_step_scores_the_window_a_learning_system_would_and_leaves_the_agents_untrained():
    """A stationary step restores the snapshot, serves the config without letting the agents learn (they learn only
    after a window, and the next step restores the snapshot anyway): its reward is exactly what a fork of the same
    state earns with learning on, and the ranker took no gradient step."""
    env = tiny_env(stationary=True, warmup=2)
    env.reset(seed=4)
    ranker = lambda: env.service.system.pipelines[0].ranker  # noqa: E731
    action = np.linspace(-0.9, 0.9, env.action_space.shape[0]).astype(np.float32)
    twin = env.service.fork()
    twin.deploy_config(env.agent_name, env.codec.decode(action))
    learned = twin.score(twin.serve(learn=True), env.agent_name)[0]
    assert twin.system.pipelines[0].ranker.updates > ranker().updates  # the fork learned after its window
    before = ranker().updates
    reward = env.step(action)[1]
    assert reward == learned
    assert ranker().updates == before
    env.advance(1)  # the world moving on still trains the system (the new snapshot)
    assert ranker().updates > before
