"""The layered reward: role mixing, signs, extra outer terms, constraint penalties and config validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from omegaconf import OmegaConf

from envs.validation import ConfigError
from rewards.constraints import Constraint, LagrangianConstraints, WeightedScalarisation
from rewards.inner import ROLES
from rewards.layered import DEFAULT_INNER_WEIGHT, LayeredRewardConfig, layered_reward

RISK = "outer/risk/violations_per_request"
# the small log's item embeddings (see test_inner.py)
EMBEDDING = np.array([[1, 0], [0, 1], [1, 1], [2, 0], [-1, 0], [0, 0]], dtype=np.float32)


def test_default_weights_put_sub_agents_on_inner_and_coordinators_on_outer() -> None:
    cfg = LayeredRewardConfig()
    assert cfg.inner_weight == {
        "recall": 0.8, "fusion": 0.6, "ranking": 0.8, "rerank": 0.6, "router": 0.2, "experiment": 0.2, "system": 0.0,
    }
    assert set(cfg.inner_metric) == set(cfg.inner_sign) == set(ROLES)


def test_recall_reward_by_hand(small_log) -> None:
    r = layered_reward("recall", small_log, route="collab")
    # inner = recall@K of collab = 0.75 (test_inner), outer = clicks per request = 1.0, w = 0.8
    # total = 0.8 * 0.75 + 0.2 * 1.0 = 0.8
    assert r.terms["layered/recall/inner"] == pytest.approx(0.75)
    assert r.terms["layered/recall/outer"] == pytest.approx(1.0)
    assert r.terms["layered/recall/penalty"] == 0.0
    assert r.terms["layered/recall/inner_weight"] == pytest.approx(0.8)
    assert r.value == pytest.approx(0.8)
    assert float(r) == r.terms["layered/recall/total"] == r.value
    # the raw metrics travel with it
    assert r.terms["inner/recall/hit_rate"] == pytest.approx(1.0)
    assert r.terms["outer/ecosystem/item_gini"] == pytest.approx(14 / 48)


def test_each_role_mixes_by_its_weight(small_log) -> None:
    # ranking: 0.8 * auc 0.375 + 0.2 * 1.0 = 0.5
    assert layered_reward("ranking", small_log).value == pytest.approx(0.5)
    # rerank: diversity (1 + 0.29289) / 2 = 0.64645: 0.6 * 0.64645 + 0.4 * 1.0 = 0.78787
    rerank = layered_reward("rerank", small_log, embedding=EMBEDDING)
    assert rerank.value == pytest.approx(0.6 * (1 + 1 - 1 / math.sqrt(2)) / 2 + 0.4)
    # router: 0.2 * mean segment ctr 1.0 + 0.8 * 1.0 = 1.0
    assert layered_reward("router", small_log).value == pytest.approx(1.0)
    # fusion: sign -1 on ece 0.55: 0.6 * -0.55 + 0.4 * 1.0 = 0.07
    fusion = layered_reward("fusion", small_log)
    assert fusion.terms["layered/fusion/inner"] == pytest.approx(-0.55, abs=1e-6)
    assert fusion.value == pytest.approx(0.07, abs=1e-6)
    # experiment: sign -1 on regret 1/3: 0.2 * -1/3 + 0.8 * 1.0 = 0.73333
    assert layered_reward("experiment", small_log).value == pytest.approx(0.8 - 0.2 / 3)
    # system: no inner metric, weight 0: the outer objective alone
    system = layered_reward("system", small_log)
    assert system.value == pytest.approx(1.0)
    assert system.terms["layered/system/inner"] == 0.0


def test_stated_scales_normalise_the_terms_before_the_mix(small_log) -> None:
    # rerank, diversity 0.64645 over scale 0.35 and clicks 1.0 over scale 0.05: 0.6 * 1.84701 + 0.4 * 20 = 9.10821
    cfg = LayeredRewardConfig(inner_scale={"rerank": 0.35}, outer_scale=0.05)
    rerank = layered_reward("rerank", small_log, cfg, embedding=EMBEDDING)
    diversity = (1 + 1 - 1 / math.sqrt(2)) / 2
    assert rerank.value == pytest.approx(0.6 * diversity / 0.35 + 0.4 * 1.0 / 0.05)
    assert rerank.terms["layered/rerank/inner"] == pytest.approx(diversity)  # the terms stay in their own units
    assert rerank.terms["layered/rerank/inner_scale"] == 0.35 and rerank.terms["layered/rerank/outer_scale"] == 0.05
    assert layered_reward("ranking", small_log, cfg).value == pytest.approx(0.8 * 0.375 + 0.2 / 0.05)  # scale 1
    with pytest.raises(ConfigError, match=r"`inner_scale.rerank` must be in \(0.0, inf\) \(got 0.0\)"):
        LayeredRewardConfig(inner_scale={"rerank": 0.0})
    with pytest.raises(ConfigError, match=r"`inner_scale key` must be one of .* \(got 'reranker'\); did you mean 'rerank'"):
        LayeredRewardConfig(inner_scale={"reranker": 0.5})


def test_extra_outer_terms_and_another_objective(small_log) -> None:
    cfg = LayeredRewardConfig(
        outer="outer/engagement/dwell_min_per_request", outer_terms={"outer/ecosystem/item_gini": -1.0},
        inner_weight={"router": 0.5},
    )
    r = layered_reward("router", small_log, cfg)
    # outer = dwell 0.75 min/request - 1 * item Gini 14/48 = 0.45833; total = 0.5 * 1.0 + 0.5 * 0.45833 = 0.72917
    assert r.terms["layered/router/outer"] == pytest.approx(0.75 - 14 / 48)
    assert r.value == pytest.approx(0.5 + 0.5 * (0.75 - 14 / 48))
    assert cfg.inner_weight["recall"] == DEFAULT_INNER_WEIGHT["recall"]  # unnamed roles keep their defaults


def test_serving_cost_as_an_outer_term_and_as_a_constraint(small_log) -> None:
    cost = "outer/cost/serving_per_request"  # 3.0 on the small log (conftest)
    # a cost weight in the outer mix: outer = clicks 1.0 - 0.1 * 3.0 = 0.7; system reward (inner weight 0) = 0.7
    r = layered_reward("system", small_log, LayeredRewardConfig(outer_terms={cost: -0.1}))
    assert r.terms["layered/system/outer"] == pytest.approx(0.7)
    assert r.value == pytest.approx(0.7) and r.terms[cost] == pytest.approx(3.0)
    assert layered_reward("system", small_log).value == pytest.approx(1.0)  # no cost term by default
    # a cost budget of 2.5 per request with lambda 0.5: penalty 0.5 * (3.0 - 2.5) = 0.25
    r = layered_reward("system", small_log, constraint=LagrangianConstraints([Constraint(cost, 2.5)], init=0.5))
    assert r.terms[f"layered/system/penalty/{cost}"] == pytest.approx(0.25)
    assert r.value == pytest.approx(1.0 - 0.25)


def test_fusion_is_judged_on_the_probability_it_served(small_log, make_log) -> None:
    # the same log with another served probability: the fusion reward moves, the ranking reward does not
    imp = {k: list(v) for k, v in small_log.impressions.items()}
    imp["p_click"] = [0.5] * 8  # all in one bin: ECE = |8 * 0.5 - 4 clicks| / 8 = 0
    req = {k: list(v) for k, v in small_log.requests.items()}
    other = make_log(imp, req, route_names=small_log.route_names, segment_names=small_log.segment_names,
                     num_items=6, num_creators=4)
    assert layered_reward("fusion", other).terms["layered/fusion/inner"] == pytest.approx(0.0, abs=1e-9)
    assert layered_reward("fusion", small_log).terms["layered/fusion/inner"] == pytest.approx(-0.55, abs=1e-6)
    assert layered_reward("ranking", other).value == pytest.approx(layered_reward("ranking", small_log).value)


def test_constraint_penalty_enters_the_total(small_log) -> None:
    # violations per request 0.25 against the bound 0.05 with lambda = 2: penalty 2 * (0.25 - 0.05) = 0.4
    lag = LagrangianConstraints([Constraint(RISK, 0.05)], init=2.0)
    r = layered_reward("recall", small_log, constraint=lag, route=1)
    assert r.terms["layered/recall/penalty"] == pytest.approx(0.4)
    assert r.terms[f"layered/recall/penalty/{RISK}"] == pytest.approx(0.4)
    assert r.value == pytest.approx(0.8 - 0.4)
    # layered_reward only reads the multipliers: stepping them is the caller's job
    assert lag.state()[f"constraint/{RISK}/lambda"] == 2.0
    # the weighted alternative with weight 1: 1 * (0.25 - 0.05) = 0.2
    r = layered_reward("recall", small_log, constraint=WeightedScalarisation([Constraint(RISK, 0.05)], 1.0), route=1)
    assert r.value == pytest.approx(0.8 - 0.2)


def test_a_weight_zero_term_keeps_nan_out(make_log) -> None:
    # no clicks: AUC is nan; with ranking's inner weight 0 the reward is the outer objective (0 clicks) alone
    log = make_log(impressions={"request": [0, 0], "score": [0.2, 0.1]}, requests={"request": [0]}, num_items=1)
    r = layered_reward("ranking", log, LayeredRewardConfig(inner_weight={"ranking": 0.0}))
    assert math.isnan(r.terms["layered/ranking/inner"])
    assert r.value == 0.0
    assert math.isnan(layered_reward("ranking", log).value)  # weight 0.8 on an undefined metric stays undefined


def test_config_composes_as_a_structured_config() -> None:
    base = OmegaConf.structured(LayeredRewardConfig)
    cfg = OmegaConf.to_object(OmegaConf.merge(base, {"inner_weight": {"rerank": 0.3}}))
    assert cfg.inner_weight["rerank"] == 0.3 and cfg.inner_weight["ranking"] == 0.8


def test_config_validation() -> None:
    with pytest.raises(ConfigError, match=r"`inner_weight key` must be one of .* \(got 'recal'\); did you mean 'recall'\?"):
        LayeredRewardConfig(inner_weight={"recal": 0.5})
    with pytest.raises(ConfigError, match=r"`inner_weight.router` must be in \[0.0, 1.0\] \(got 1.5\)"):
        LayeredRewardConfig(inner_weight={"router": 1.5})
    with pytest.raises(ConfigError, match=r"`inner_metric.ranking` must be one of \['auc', 'ndcg', 'log_loss', 'calibration', 'ece'\] \(got 'acu'\); did you mean 'auc'\?"):
        LayeredRewardConfig(inner_metric={"ranking": "acu"})
    with pytest.raises(ConfigError, match=r"`inner_metric.system` must name a metric when `inner_weight.system` > 0 \(got None with weight 0.3\)"):
        LayeredRewardConfig(inner_weight={"system": 0.3})
    with pytest.raises(ConfigError, match=r"`inner_metric.system` must be None: role 'system' has no inner metrics \(got 'auc'\)"):
        LayeredRewardConfig(inner_metric={"system": "auc"})
    with pytest.raises(ConfigError, match=r"`inner_sign.fusion` must be 1 \(higher is better\) or -1 \(lower is better\) \(got 0.5\)"):
        LayeredRewardConfig(inner_sign={"fusion": 0.5})
    with pytest.raises(ConfigError, match=r"`outer` must be one of .* \(got 'outer/engagement/click_per_request'\); did you mean 'outer/engagement/clicks_per_request'\?"):
        LayeredRewardConfig(outer="outer/engagement/click_per_request")
    with pytest.raises(ConfigError, match=r"`outer_terms key` must be one of .* \(got 'outer/ecosystem/gini'\)"):
        LayeredRewardConfig(outer_terms={"outer/ecosystem/gini": -1.0})
    with pytest.raises(ConfigError, match=r"`outer_terms\[outer/ecosystem/item_gini\]` must be finite \(got -inf\)"):
        LayeredRewardConfig(outer_terms={"outer/ecosystem/item_gini": -math.inf})


def test_reward_validation(small_log) -> None:
    with pytest.raises(ConfigError, match=r"`role` must be one of .* \(got 'routr'\); did you mean 'router'\?"):
        layered_reward("routr", small_log)
    # a data-dependent router metric name passes the config and is checked against the log's segments
    cfg = LayeredRewardConfig(inner_metric={"router": "segment/heavvy/clicks_per_request"})
    with pytest.raises(ConfigError, match=r"`inner_metric.router` must be one of .* \(got 'segment/heavvy/clicks_per_request'\); did you mean 'segment/heavy/clicks_per_request'\?"):
        layered_reward("router", small_log, cfg)
    cfg = LayeredRewardConfig(inner_metric={"router": "segment/heavy/clicks_per_request"})
    # 0.2 * ctr of heavy 0.5 + 0.8 * 1.0 = 0.9
    assert layered_reward("router", small_log, cfg).value == pytest.approx(0.9)
