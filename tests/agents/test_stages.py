"""Pipeline stages on hand-built inputs: fusion quotas and dedupe, re-ranking rules, the factorised ranker."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import envs
from agents.decision.context import CatalogView, Candidates, RequestBatch
from agents.decision.fusion import MultiTaskFusion, QuotaFusion, dedupe
from agents.decision.ranking import TorchRanker, pair_features
from agents.decision.rerank import Reranker
from envs.log import IMPRESSION_COLUMNS, InteractionLog
from agents.decision.system import feature_dim


def catalog(embedding: np.ndarray, score_cols: dict[str, np.ndarray] | None = None) -> CatalogView:
    """A catalog of ``len(embedding)`` items: features = embedding | quality | freshness | popularity | risk."""
    n, d = embedding.shape
    feats = np.zeros((n, d + 4), np.float32)
    feats[:, :d] = embedding
    for i, name in enumerate(("quality", "freshness", "popularity", "risk")):
        if score_cols and name in score_cols:
            feats[:, d + i] = score_cols[name]
    return CatalogView(feats, np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int8), np.zeros(n), 0.0, 0)


def cands(items: list[list[int]]) -> Candidates:
    it = np.array(items, np.int64)
    return Candidates(it, np.zeros(it.shape, np.float32), np.zeros(it.shape, np.int16))


def test_dedupe_keeps_first_occurrence_and_ignores_empty():
    items = np.array([[3, 1, 3, -1, 1, 2], [-1, -1, 5, 5, 5, 0]])
    np.testing.assert_array_equal(dedupe(items), [[1, 1, 0, 0, 0, 1], [0, 0, 1, 0, 0, 1]])


def test_quota_fusion_takes_shares_and_keeps_first_provenance():
    # two routes, quotas 0.75 / 0.25 of size 4 -> 3 from route 0, 1 from route 1
    a = Candidates(np.array([[10, 11, 12, 13]]), np.ones((1, 4), np.float32), np.zeros((1, 4), np.int16))
    b = Candidates(np.array([[11, 20, 21, 22]]), np.ones((1, 4), np.float32), np.ones((1, 4), np.int16))
    fusion = QuotaFusion(["a", "b"], config={"size": 100, "quota_a": 0.75, "quota_b": 0.25})
    fusion.config["size"] = 4  # below the decision space's smallest option, to keep the hand example small
    out = fusion.act([a, b])
    np.testing.assert_array_equal(out.items, [[10, 11, 12, -1]])  # route b's 11 repeats route a's: emptied
    np.testing.assert_array_equal(out.route[0, :3], [0, 0, 0])


def test_multitask_score_weights_conditional_heads_by_click_probability():
    fusion = MultiTaskFusion(config={"w_click": 1.0, "w_like": 0.5, "w_dwell": 0.0})
    heads = {"click": np.array([[0.2, 0.0]]), "like": np.array([[0.5, 1.0]]), "dwell": np.zeros((1, 2))}
    # 0.2 * (1 + 0.5 * 0.5) = 0.25; an item nobody clicks scores 0 however likeable once clicked
    np.testing.assert_allclose(fusion.act(heads), [[0.25, 0.0]], rtol=1e-6)


def test_mmr_trades_score_for_diversity():
    # items 0 and 1 are the same direction, item 2 orthogonal; scores 1.0, 0.9, 0.5
    emb = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    cat = catalog(emb)
    c = cands([[0, 1, 2]])
    score = np.array([[1.0, 0.9, 0.5]], np.float32)
    plain = Reranker(config={"mmr_lambda": 0.0}).act(score, c, cat, 2)
    np.testing.assert_array_equal(plain, [[0, 1]])
    # lambda 0.5, after item 0: item 1 -> 0.5 * 0.9 - 0.5 * 1 = -0.05; item 2 -> 0.5 * 0.5 - 0 = 0.25
    mmr = Reranker(config={"mmr_lambda": 0.5}).act(score, c, cat, 2)
    np.testing.assert_array_equal(mmr, [[0, 2]])


def test_risk_threshold_learned_violations_and_exposure_caps():
    emb = np.eye(4, dtype=np.float32)
    cat = catalog(emb, {"risk": np.array([0.9, 0.0, 0.0, 0.0], np.float32)})
    c = cands([[0, 1, 2, 3]])
    score = np.array([[4.0, 3.0, 2.0, 1.0]], np.float32)
    # risk above the threshold pushes item 0 below every admissible item
    np.testing.assert_array_equal(Reranker(config={"risk_threshold": 0.5}).act(score, c, cat, 2), [[1, 2]])
    # an item seen violating in the log is filtered from then on
    rr = Reranker()
    rr.act(score, c, cat, 2)
    imp = {k: np.zeros(1, t) for k, t in IMPRESSION_COLUMNS.items()}
    imp["item"][:] = 1
    imp["violation"][:] = True
    rr.observe(InteractionLog(impressions=imp))
    np.testing.assert_array_equal(rr.act(score, c, cat, 2), [[0, 2]])
    # exposure cap 100: item 0 leads every slate until it has been shown 100 times this window
    capped = Reranker(config={"exposure_cap": 100})
    many = cands([[0, 1, 2, 3]] * 60)
    s60 = np.repeat(score, 60, axis=0)
    first = capped.act(s60, many, cat, 1)  # 60 impressions of item 0
    second = capped.act(s60, many, cat, 1)  # 60 more: item 0 still under the cap when this batch is chosen
    third = capped.act(s60, many, cat, 1)  # now 120 >= 100: item 1 instead
    assert (first == 0).all() and (second == 0).all() and (third == 1).all()
    capped.observe(InteractionLog())  # caps are per window
    assert (capped.act(s60, many, cat, 1) == 0).all()


@pytest.mark.parametrize("arch,towers", [("mlp", False), ("mlp", True), ("linear", False), ("linear", True)])
def test_factorised_scoring_equals_materialised_features(arch, towers):
    cfg = envs.WorldConfig(num_items=500, num_users=600, num_topics=5)
    world = envs.World(cfg, seed=2)
    users = world.new_requests(64)
    batch = RequestBatch.of(world, users, np.arange(64))
    cat = CatalogView.of(world)
    rng = np.random.default_rng(0)
    items = rng.integers(-1, cfg.num_items, (64, 40))
    c = Candidates(items, np.zeros(items.shape, np.float32), rng.integers(0, 5, items.shape).astype(np.int16))
    ranker = TorchRanker(feature_dim(cfg, 5), len(cfg.segments), 5, arch=arch, per_segment=towers, seed=3)
    with torch.no_grad():  # non-trivial weights everywhere, biases included
        for p in ranker.model.parameters():
            p.normal_(0, 0.3, generator=torch.Generator().manual_seed(p.numel()))
    fast = ranker.act(batch, c, cat, factorized=True)
    slow = ranker.act(batch, c, cat, factorized=False)
    valid = c.valid
    for head in fast:
        np.testing.assert_allclose(fast[head][valid], slow[head][valid], rtol=1e-4, atol=1e-5)
    # and both agree with predict() on pair_features built by hand for one row
    x = pair_features(batch.subset(np.array([0])), items[:1], c.route[:1], cat, 5)
    ref = ranker.predict(x.reshape(-1, x.shape[-1]), np.repeat(batch.segment[:1], 40))
    np.testing.assert_allclose(fast["click"][0][valid[0]], ref["click"][valid[0]], rtol=1e-4, atol=1e-5)


def test_ranker_memory_warm_starts_another_architecture():
    # clicks happen exactly when the first feature is positive: a ranker trained on another's memory learns that
    rng = np.random.default_rng(0)
    old = TorchRanker(12, 3, 5, arch="mlp", seed=0)
    x = rng.normal(size=(3000, 12)).astype(np.float32)
    click = (x[:, 0] > 0).astype(np.float32)
    old.remember(x[:2000], np.zeros(2000), click[:2000], click[:2000] * 0, click[:2000] * 10)
    old.observe(InteractionLog())
    old.remember(x[2000:], np.ones(1000), click[2000:], click[2000:] * 0, click[2000:] * 10)  # not yet trained on
    mx, my, ms = old.memory()
    assert mx.shape == (3000, 12) and my.shape == (3000, 3) and list(np.bincount(ms)) == [2000, 1000]
    np.testing.assert_array_equal(mx[2000:], x[2000:])  # oldest first, pending rows included
    new = TorchRanker(12, 3, 5, arch="linear", seed=1)
    test = rng.normal(size=(500, 12)).astype(np.float32)
    before = new.predict(test, np.zeros(500))["click"]
    assert new.learn_from((mx, my, ms), min_updates=400) == 3000 and new.trained_on == 3000
    assert new.updates == 402  # whole passes of 3 batches (1024, 1024, 952) until at least 400 steps

    after = new.predict(test, np.zeros(500))["click"]
    truth = test[:, 0] > 0
    assert np.mean((after > 0.5) == truth) > 0.95 > np.mean((before > 0.5) == truth) + 0.2
    with pytest.raises(ValueError, match=r"features \(n, 12\).*got \(3000, 11\)"):
        new.learn_from((mx[:, :11], my, ms))
