"""The composition env (checkers, PPO, encoding, bad input, pooled agents), system-level A/B, and the
alternation schedule with its saturation and shift tests."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from stable_baselines3 import PPO
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import envs
from agents.decision.functional import ExperimentDesigner
from agents.evolution.composition import ROUTES, SLOTS, Composition, CompositionEnv
from agents.evolution.controllers import OptunaSearch, RandomSearch
from agents.evolution.rollout import ab_test_systems
from agents.evolution.schedule import PHASES, SaturationTest, ShiftTest, alternate
from agents.infra.store import KnowledgeStore
from envs.validation import ConfigError

TINY = {"num_items": 600, "num_users": 1200, "num_topics": 5, "num_creators": 30, "steps_per_day": 20}


def tiny_env(**kw) -> CompositionEnv:
    torch.set_num_threads(1)
    return CompositionEnv(**{"world": TINY, "window": 200, "concurrency": 100, **kw})


def only(route: str, slot: str = "main") -> Composition:
    """Every segment to ``slot``, whose only route is ``route``."""
    quotas = {s: {k: (0.5 if k == route else 0.0) for k in ROUTES} for s in SLOTS}
    return Composition(quotas, {s: "mlp" for s in SLOTS}, {seg: slot for seg in ("new", "casual", "heavy")})


@pytest.mark.slow
def test_registered_checkers_pass_and_ppo_trains():
    assert "agentic-rs/Composition-v0" in envs.EVOLUTION_ENV_IDS
    env = gym.make("agentic-rs/Composition-v0", world=TINY, window=200, concurrency=100)
    check_env(env.unwrapped, skip_render_check=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sb3_check_env(tiny_env())
    env = tiny_env()
    model = PPO("MlpPolicy", env, n_steps=8, batch_size=8, seed=0, device="cpu")
    model.learn(total_timesteps=16)
    assert model.num_timesteps >= 16
    obs, _ = env.reset(seed=1)
    action, _ = model.predict(obs, deterministic=True)
    _, reward, _, _, info = env.step(action)
    assert np.isfinite(reward) and info["config"]["composition"] == env.decode(action).key()


@pytest.mark.slow
def test_encoding_round_trips_and_builds_what_it_says():
    env = tiny_env()
    env.reset(seed=0)
    env.action_space.seed(3)
    rng = np.random.default_rng(0)
    collaborative_only = env.encode(only("collaborative", slot="specialist"))  # empty for users without history
    for _ in range(20):
        action = (env.action_space.sample() if _ > 1 else [env.encode(env.initial), collaborative_only][_])
        comp = env.decode(action)
        np.testing.assert_array_equal(env.encode(comp), action)
        env.step(action)
        pipes = {p.name: p for p in env.service.system.pipelines}
        assert set(pipes) == set(comp.used_slots(env.segments))
        for slot, pipe in pipes.items():
            on = sorted(k for k, q in comp.quotas[slot].items() if q > 0) or ["popularity"]
            on = sorted({*on, "popularity"}) if on == ["collaborative"] else on  # topped up (see info notes)
            assert sorted(r.name for r in pipe.recalls) == on  # a route at quota 0 does not run
            assert pipe.ranker.name == f"{slot}/{comp.rankers[slot]}"
        assert {k: v for k, v in env.service.system.router.config.items() if k.startswith("route_")} == {
            f"route_{s}": comp.routing[s] for s in env.segments}
        rng.random()


def test_pooled_agents_keep_learning_across_compositions():
    env = tiny_env()
    env.reset(seed=0)
    mlp = env.service.agent("main/ranking/mlp")
    seen = mlp.trained_on
    env.step(env.encode(only("content")))
    env.step(env.encode(only("popularity")))
    assert env.service.agent("main/ranking/mlp") is mlp and mlp.trained_on > seen  # the same trained ranker, still learning
    ensemble = only("content")
    ensemble.rankers["main"] = "linear+mlp"
    before = env.service.agent("main/ranking/linear").trained_on
    env.step(env.encode(ensemble))
    assert env.service.agent("main/ranking/linear").trained_on > before  # ensemble members both learn


def test_bad_input_is_named():
    env = tiny_env()
    env.reset(seed=0)
    with pytest.raises(ConfigError, match=r"`action` must lie in MultiDiscrete"):
        env.step(np.full(len(env.nvec), 9))
    with pytest.raises(ConfigError, match=r"`agent` must be one of .* \(got 'main/rerank/mmrr'\); did you mean 'main/rerank/mmr'\?"):
        env.service.agent("main/rerank/mmrr")
    with pytest.raises(ConfigError, match=r"`composition.routing\[new\]` must be one of \['main', 'specialist'\] \(got 'side'\)"):
        env.service.deploy_composition(Composition(routing={"new": "side"}))
    with pytest.raises(ConfigError, match=r"quota_content` must be one of \[0.0, 0.1, 0.2, 0.3, 0.5\] \(got 0.25\)"):
        env.from_config(env.to_config(env.initial) | {"main/quota_content": 0.25})
    with pytest.raises(ConfigError, match=r"`templates slot` must be one of \['main', 'specialist'\] \(got 'mian'\)"):
        CompositionEnv(world=TINY, templates={"mian": None})


def test_stationary_composition_rewards_are_deterministic():
    env = tiny_env(stationary=True, learn=False, warmup=2)
    env.reset(seed=0)
    a, b = env.encode(env.initial), env.encode(only("exploration"))
    first, other, again = env.step(a)[1], env.step(b)[1], env.step(a)[1]
    assert first == again and first != other


@pytest.mark.slow
def test_system_ab_accepts_the_better_composition_and_rejects_the_worse():
    # worse: everyone to the specialist slot, whose rankers have never seen traffic (the warm-up
    # trained the main slot's), fed by the long-tail exploration route alone; better: the baseline.
    env = tiny_env(window=1000, warmup=3)
    env.reset(seed=0)
    better, worse = env.initial, only("exploration", slot="specialist")
    env.service.deploy_composition(worse)
    decision = ab_test_systems(env.service, env.service.pool.system(better)[0], ExperimentDesigner(config={"min_requests": 1000}), windows=3)
    assert decision.accepted, decision
    env.service.deploy_composition(better)
    decision = ab_test_systems(env.service, env.service.pool.system(worse)[0], ExperimentDesigner(config={"min_requests": 1000}), windows=3)
    assert not decision.accepted and decision.effect < 0, decision
    assert [p.name for p in env.service.system.pipelines] == ["main"]  # nothing deployed by the test itself


@pytest.mark.slow
def test_a_concurrent_control_serves_production_wiring_to_its_share_with_a_fresh_split_every_window():
    """`control_share=0.5`: each window the control composition (the initial wiring until `deploy_control` ships
    another) serves half the users, the action's the rest, split by a fresh salt; the reward told is candidate -
    control. With the action equal to the control's wiring (an A/A) both arms are the same pooled agents wired the
    same way, so the told reward is only noise from which users each arm got; a bad wiring is told a clear loss."""
    env = tiny_env(window=400, control_share=0.5)
    env.reset(seed=0)
    same = env.encode(env.initial)
    told, arms = [], []
    for _ in range(3):
        _, reward, _, _, info = env.step(same)
        log = env.service.last_log
        candidate, control = env.test_arms(log)
        assert (candidate != control).all() and candidate.any() and control.any()  # every request in one arm
        n = len(env.service.system.pipelines)  # the candidate's pipelines, then the control's
        assert (log.requests["pipeline"][candidate] < n).all() and (log.requests["pipeline"][control] >= n).all()
        assert reward == pytest.approx(info["evolution/candidate_reward"] - info["evolution/control_reward"])
        assert info["evolution/candidate_reward"] == pytest.approx(env.service.score(log.where(candidate))[0])
        assert info["evolution/control_reward"] == pytest.approx(env.service.score(log.where(control))[0])
        assert info["evolution/candidate_share"] == pytest.approx(candidate.mean())
        assert info["evolution/window_reward"] == pytest.approx(env.service.score(log)[0])
        assert "evolution/candidate/outer/engagement/clicks_per_request" in info
        told.append(reward)
        arms.append(dict(zip(log.requests["user"].tolist(), control.tolist())))
    # Measured on env seeds 0, 1, 2: the A/A's told reward per window within +-0.03 of 0 (clicks per request ~0.27,
    # ~85 users per arm and window); everyone to the untrained specialist slot fed by the exploration route alone is
    # told -0.15 to -0.33. Bounds at ~6 s.d. of the A/A's noise and half the loss.
    assert max(abs(r) for r in told) < 0.1, told
    # a fresh split every window: of the users seen in two consecutive windows (~80-95), the share in the same arm
    # both times was 0.43-0.53 (a fixed salt gives 1)
    for a0, a1 in zip(arms, arms[1:]):
        both = set(a0) & set(a1)
        assert 0.2 < sum(a0[u] == a1[u] for u in both) / len(both) < 0.8
    worse = env.encode(only("exploration", slot="specialist"))
    assert np.mean([env.step(worse)[1] for _ in range(2)]) < -0.08
    # production ships a wiring: the control serves it (content alone) from the next window, the candidate as acted
    shipped = env.deploy_control(env.to_config(only("content")))
    assert shipped == env.to_config(only("content")) and env.control.key() == only("content").key()
    env.step(same)
    candidate, control = env.test_arms(env.service.last_log)
    routes = lambda mask: set(env.service.last_log.where(mask).impressions["route"].tolist())  # noqa: E731
    assert routes(control) == {ROUTES.index("content")} and len(routes(candidate)) > 1
    assert env.candidate_config() == env.to_config(env.initial)
    with pytest.raises(ConfigError, match=r"quota_content` must be one of \[0.0, 0.1, 0.2, 0.3, 0.5\] \(got 0.25\)"):
        env.deploy_control({"main/quota_content": 0.25})
    with pytest.raises(ConfigError, match=r"a twin window .* \(control_share=0.5\); set it to 0 first"):
        env.twin_window(same)
    env.set_control_share(0.0)  # off: the whole window on the action's wiring
    *_, info = env.step(same)
    assert (env.service.last_log.requests["pipeline"] < len(env.service.system.pipelines)).all()
    assert "evolution/control_reward" not in info
    env.reset(seed=0)  # a new episode: production is the initial wiring again
    assert env.control.key() == env.initial.key()
    with pytest.raises(ConfigError, match=r"`control_share` needs a non-stationary env.* \(got control_share=0.2 with "
                                          r"stationary=True\)"):
        tiny_env(stationary=True).set_control_share(0.2)
    with pytest.raises(ConfigError, match=r"`control_share` must be in \[0.0, 0.95\] \(got 0.97\)"):
        tiny_env(control_share=0.97)


def test_saturation_and_shift_tests_by_hand():
    sat = SaturationTest(patience=3, min_gain=0.05, min_windows=5)
    assert not sat([0.1, 0.2, 0.3, 0.4])  # too few windows
    assert not sat([0.1, 0.2, 0.3, 0.4, 0.5])  # best of last 3 (0.5) beats best before (0.2) by 150%
    assert sat([0.5, 0.1, 0.2, 0.51, 0.3])  # 0.51 vs 0.5: +2% < 5%
    shift = ShiftTest(check_every=5, tolerance=0.2)
    assert not shift(0.5, 0.45) and shift(0.5, 0.35) and shift(0.5, 0.65)  # |change| vs 20% of 0.5
    with pytest.raises(ConfigError, match=r"`saturation.min_windows` must be in \[4, inf\) \(got 2\)"):
        SaturationTest(patience=3, min_windows=2)


@pytest.mark.slow
def test_alternation_switches_phases_gates_winners_and_commits_everything(tmp_path):
    # a strong shift: from day 2 almost every request comes from new users (fewer clicks)
    world = {**TINY, "shifts": [{"kind": "segment_mix", "day": 2, "request_mix": {"new": 0.9, "casual": 0.05, "heavy": 0.05}}]}
    env = tiny_env(world=world, window=500, warmup=2)
    with KnowledgeStore(tmp_path / "store.db") as store:
        exp = store.start_experiment("alternation", {}, 0)
        history = alternate(env, "main/rerank/mmr", lambda p: RandomSearch(p, seed=0),
                            lambda e: OptunaSearch(e.target_params(), seed=0), windows=36, seed=0,
                            saturation=SaturationTest(patience=4, min_gain=0.02, min_windows=6),
                            shift=ShiftTest(check_every=4, tolerance=0.25), store=store, exp_id=exp)
        phases = [p for _, p, _ in history.switches]
        assert set(phases) == set(PHASES) and phases[0] == "individual", history.switches
        assert any(why == "saturated" for _, _, why in history.switches)
        assert history.gates and all(g["phase"] in PHASES for g in history.gates)
        rows = history.rows  # every window served: exploration, sentinels (the first at the start), A/B gates
        assert [r["served"] for r in rows] == list(range(len(rows)))
        explored = [r for r in rows if r["phase"] in PHASES]  # 36 windows served in all, sentinels and gates among them
        assert len(rows) == 36 and [r["window"] for r in explored] == list(range(len(explored)))
        assert {r["phase"] for r in explored} == set(PHASES)
        sentinels = [r for r in rows if r["phase"] == "sentinel"]
        assert rows[0]["phase"] == "sentinel" and len(sentinels) >= 1 + len(history.shifts)
        gated = [r for r in rows if r["phase"] == "gate"]
        assert len(gated) == 2 * len(history.gates)  # gate_windows=2 per decided gate
        assert all(r["reward"] == r["outer"] and "outer/engagement/clicks_per_request" in r for r in sentinels + gated)
        assert len(store.trials(exp)) == len(rows) and store.completed_steps(exp) == set(range(len(rows)))
        assert sorted({t.agent for t in store.trials(exp)}) == sorted({"composition", "main/rerank/mmr", "production"}
                                                                       | ({"gate"} if gated else set()))
        assert len(store.rollouts(exp)) == len(history.gates)
        # observed: the first sentinel pair (before/after the early learning jump, 0.23 -> 0.52) is
        # declared a shift; the segment-mix shift itself barely moves a learning system's clicks here
        assert len(store.shifts(exp)) == len(history.shifts)
        assert all(why == "shift" for w, _, why in history.switches if w - 1 in history.shifts)


def test_exploring_an_agent_gives_the_control_productions_copy_of_it():
    """`explore(agent)`: the candidate's users get the agent as configured, the control's users production's copy
    of it (made when exploring began), and the told reward is the agent's, candidate - control. Measured (env seed
    0, 2 windows of 400): the candidate's re-ranker at mmr_lambda 1 shows lists of intra-list diversity 0.95-1.04,
    production's copy (mmr_lambda 0) 0.66-0.76; before the copy both arms ran the one pooled agent, so they were
    alike. A ship (`deploy_control`) moves the copy to the candidate's config: both arms then differ by < 0.05."""
    name = "main/rerank/mmr"
    env = tiny_env(window=400, control_share=0.5)
    env.reset(seed=0)
    production = dict(env.service.agent(name).config)
    env.explore(name)
    candidate = {**production, "mmr_lambda": 1.0}
    env.configure_agent(name, candidate)
    same = env.encode(env.composition)

    def diversity() -> tuple[float, float]:
        log = env.service.last_log
        cand, ctrl = env.test_arms(log)
        key = "inner/rerank/intra_list_diversity"
        return env.service.score(log.where(cand), name)[1][key], env.service.score(log.where(ctrl), name)[1][key]

    for _ in range(2):
        _, reward, _, _, info = env.step(same)
        assert reward == pytest.approx(info["evolution/candidate_reward"] - info["evolution/control_reward"])
        log = env.service.last_log
        cand, ctrl = env.test_arms(log)
        assert info["evolution/control_reward"] == pytest.approx(env.service.score(log.where(ctrl),
                                                                                   env.control_agents[name])[0])
        high, low = diversity()
        assert high > low + 0.15, (high, low)
    assert env.candidate_config() == candidate and env.control_config(name) == production
    assert env.control_agents[name] is not env.service.agent(name)
    assert env.deploy_control({"mmr_lambda": 1.0}) == candidate == env.control_config(name)
    env.step(same)
    high, low = diversity()
    assert abs(high - low) < 0.1, (high, low)
    env.explore("")  # the wiring again: the told reward is the system's, production's copy still serves the control
    *_, info = env.step(same)
    assert info["evolution/control_reward"] == pytest.approx(env.service.score(env.service.last_log.where(
        env.test_arms(env.service.last_log)[1]))[0])
    with pytest.raises(ConfigError, match=r"`agent` must be one of .*\(got 'main/rerank/nope'\)"):
        env.explore("main/rerank/nope")
    env.reset(seed=0)  # a new episode: no copies, the wiring explored
    assert env.control_agents == {} and env.explored == ""


def test_alternation_on_a_share_explores_on_it_and_ships_to_production():
    """`alternate(share=0.2, ship=...)`: exploration windows put the candidate on ~20% of the users (production on
    the rest), sentinels serve production to everyone; a ship moves production (the agent's config in an individual
    phase, the wiring in a compositional one) and the run ends with production deployed. The ship rule here is a
    plumbing double (ship the second window of each phase); the real rule is experiments.arms.Shipper."""
    agent = "main/rerank/mmr"
    env = tiny_env(window=300, warmup=1)
    seen: list[int] = []

    def ship() -> dict[str, float]:
        seen.append(len(seen) + 1)  # this exploration window, 1-based
        if seen[-1] in (2, 6):
            env.deploy_control(env.candidate_config())
            return {"ship/shipped": 1.0}
        return {"ship/shipped": 0.0}

    history = alternate(env, agent, lambda p: RandomSearch(p, seed=1), lambda e: RandomSearch(e.target_params(), seed=2),
                        windows=10, seed=0, saturation=SaturationTest(patience=1, min_gain=10.0, min_windows=4),
                        shift=ShiftTest(check_every=100), gate_windows=1, share=0.2, ship=ship)
    assert history.served == 10  # every window served counts: the first sentinel, 4 individual, a gate, compositional
    explored = [r for r in history.rows if r["phase"] in PHASES]
    assert [r["phase"] for r in explored][:6] == ["individual"] * 4 + ["compositional"] * 2, history.switches
    for r in explored:
        assert 0.08 < r["evolution/candidate_share"] < 0.35, r["evolution/candidate_share"]
        assert r["reward"] == pytest.approx(r["evolution/candidate_reward"] - r["evolution/control_reward"])
    sentinels = [r for r in history.rows if r["phase"] == "sentinel"]
    assert sentinels and all("evolution/candidate_share" not in r for r in sentinels)
    assert seen == list(range(1, len(explored) + 1))
    # window 2 (individual) shipped its re-ranker config; window 6 (compositional) its wiring
    shipped_config = {k.removeprefix("config/"): v for k, v in explored[1].items() if k.startswith("config/")}
    assert env.control_config(agent) == shipped_config
    assert env.control.key() == explored[5]["composition"]
    assert env.composition.key() == explored[5]["composition"]  # production deployed at the end
    assert {k: env.service.agent(agent).config[k] for k in shipped_config} == shipped_config
    with pytest.raises(ConfigError, match=r"a ship test .* needs `share` < 1 \(got share=1.0\)"):
        alternate(env, agent, lambda p: RandomSearch(p, seed=1), lambda e: RandomSearch(e.target_params(), seed=2),
                  windows=2, ship=ship)
