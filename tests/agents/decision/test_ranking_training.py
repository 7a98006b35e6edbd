"""The rankers' fast training loop takes the steps of the plain one: the closed-form loss gradient against autograd's,
and whole training windows against the loop it replaced (autograd through the loss, masked per-tower heads, AdamW
with ``zero_grad``), on one seed, for linear and MLP rankers with and without segment towers."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from agents.decision.ranking import LOSS_WEIGHTS, TorchRanker, multitask_loss, multitask_loss_grad

EPS = float(torch.finfo(torch.float32).eps)


def _targets(rng: np.random.Generator, n: int, click_rate: float) -> torch.Tensor:
    click = rng.random(n) < click_rate
    like = click & (rng.random(n) < 0.3)
    dwell = np.where(click, np.log1p(rng.exponential(30.0, n)), 0.0)
    return torch.from_numpy(np.stack([click, like, dwell], axis=1).astype(np.float32))


@pytest.mark.parametrize("click_rate", [0.0, 0.15, 1.0])
@pytest.mark.parametrize("weights", [LOSS_WEIGHTS, {"like": 2.0, "dwell": 0.0}])
def test_loss_grad_is_autograds(click_rate: float, weights: dict[str, float]) -> None:
    rng = np.random.default_rng(0)
    out = torch.from_numpy(rng.normal(0.0, 2.0, (777, 3)).astype(np.float32)).requires_grad_()
    y = _targets(rng, 777, click_rate)
    multitask_loss(out, y, weights["like"], weights["dwell"]).backward()
    grad = multitask_loss_grad(out, y, weights["like"], weights["dwell"])
    assert not grad.requires_grad
    # each entry is a handful of float32 roundings apart (sigmoid, difference, one or two products): 16 eps of the
    # largest entry covers them; a wrong weight, mean or mask is off by a factor, far beyond
    assert torch.allclose(grad, out.grad, rtol=0.0, atol=16 * EPS * float(out.grad.abs().max()))


def _reference_forward(model: torch.nn.Module, x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """MultiTaskNet's forward as it was: module calls, each tower on its own rows (masked), zeros elsewhere."""
    h = x if model.first is None else model.rest(model.first(x))
    if not model.per_segment:
        return model.heads[0](h)
    out = torch.zeros(h.shape[0], 3)
    for t, head in enumerate(model.heads):
        m = s == t
        if bool(m.any()):
            out[m] = head(h[m])
    return out


def _reference_train(ranker: TorchRanker, memory: tuple[np.ndarray, ...], min_updates: int) -> None:
    """The training loop before the speed-up (bench/ranker_train.py): the same draws from the ranker's generator."""
    x, y, s = (torch.from_numpy(a) for a in memory)
    opt = torch.optim.AdamW(ranker.model.parameters(), lr=ranker.config["lr"],
                            weight_decay=ranker.config["weight_decay"], foreach=True)
    n, bs = len(x), int(ranker.config["batch_size"])
    epochs = max(int(ranker.config["epochs"]), -(-min_updates // -(-n // bs)))
    for _ in range(epochs):
        perm = torch.randperm(n, generator=ranker.generator)
        for lo in range(0, n, bs):
            idx = perm[lo : lo + bs]
            loss = multitask_loss(_reference_forward(ranker.model, x[idx], s[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            ranker.updates += 1


@pytest.mark.parametrize("arch", ["linear", "mlp"])
@pytest.mark.parametrize("per_segment", [False, True])
def test_training_takes_the_plain_loops_steps(arch: str, per_segment: bool) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    n = 3000
    x = rng.normal(0.0, 0.5, (n, 24)).astype(np.float32)
    # segment 2 on 5 rows only: most batches of 256 lack it, and its tower must take no step then
    s = np.where(np.arange(n) % 600 == 7, 2, rng.integers(0, 2, n))
    memory = (x, _targets(rng, n, 0.15).numpy(), s.astype(np.int64))
    config = {"batch_size": 256, "epochs": 1, "lr": 3e-3, "weight_decay": 1e-3}
    fast = TorchRanker(24, 3, 5, arch=arch, hidden=16, per_segment=per_segment, config=config, seed=3)
    plain = copy.deepcopy(fast)
    fast.learn_from(memory, min_updates=40)
    _reference_train(plain, memory, min_updates=40)
    assert fast.updates == plain.updates == 48  # 4 epochs of 12 batches
    # Adam moves a parameter by ~lr per step; float rounding moves the two runs apart by orders of magnitude less,
    # while one step taken differently (another batch, a tower stepping on a batch without its rows) is ~lr
    for (name, a), b in zip(fast.model.named_parameters(), plain.model.parameters()):
        assert torch.allclose(a, b, rtol=0.0, atol=config["lr"] / 100), f"{name}: {float((a - b).abs().max()):.2e}"
    probe = torch.from_numpy(rng.normal(0.0, 0.5, (300, 24)).astype(np.float32))
    seg = torch.from_numpy(rng.integers(0, 3, 300))
    with torch.no_grad():
        assert torch.allclose(fast.model(probe, seg), _reference_forward(plain.model, probe, seg), atol=1e-4)
