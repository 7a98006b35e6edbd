"""AutoPerf on twins: how much compute per request it saves at a bounded loss of expected clicks, and what it costs.

The static baseline on the small world (seed 0) after 4 learning windows of 1,000 requests; the resource model is
calibrated on its serving code; AutoPerf (`agents/evolution/autoperf.py`: fusion size, every route's k, the MMR pool;
LWGR-style primal-dual, 6 rounds x 4 configs, each on a twin for 2 windows) minimises compute per request subject to
at most 1% fewer expected clicks than the incumbent. Reported on those twins: ``cost_reduction`` (1 - best /
incumbent compute per request), ``clicks_degradation`` (must be <= the bound), the predicted p99 request latency
before and after, AutoPerf's seconds, and, as the roofline, the same twin evaluations of a bare grid over the fusion
size alone (``grid_cost_reduction``: the best fusion size within the bound; AutoPerf should match or beat it).
``coordinator_overhead_s_per_window``: a coordinator (`agents/evolution/coordinator.py`) serving AutoPerf's answer
as a cost proposal on 30% of the users against the control, minus a plain window of the same deployment (twins,
interleaved, 4 each: the split system, the per-test bookkeeping and the decision). The cascade (``system=cascade``:
a linear pre-ranker keeping all 500 fused candidates for the MLP ranker, 6 learning windows of 500 requests):
AutoPerf with ``keep`` as its only knob (4 rounds x 2 configs): ``cascade_keep`` it chose,
``cascade_flops_reduction`` (1 - the ranker FLOPs per request after / before, exact) and
``cascade_clicks_degradation`` on its twins. The ranker's width (``keys=("width",)``, each narrower MLP trained on
the running ranker's memory, on the baseline's twins): per width its compute per request relative to the incumbent's
(``width_cost_ratio``) and its clicks degradation (``width_clicks_degradation``), the width chosen within the 1% bound
(``width_chosen``, 64 when none fits) and the seconds to train and evaluate them (``width_s``). Last line: one JSON
object.
"""

from __future__ import annotations

import json
import time

import torch

from agents.decision.configs import build_system, cascade_config, static_baseline
from agents.evolution.autoperf import AutoPerf
from agents.evolution.coordinator import Coordinator, Proposal
from agents.evolution.deployment import Deployment
from envs.config import WorldConfig, world_size

BOUND = 0.01


def main() -> None:
    torch.set_num_threads(1)
    cfg = WorldConfig(**world_size("small"))
    service = Deployment.start(cfg, static_baseline(cfg), world_seed=0, sim_seed=0, concurrency=400, window=1000)
    service.serve(4)
    t = time.perf_counter()
    service.calibrate_resources()
    calibration_s = time.perf_counter() - t
    t = time.perf_counter()
    autoperf = AutoPerf(service, max_degradation=BOUND, rounds=6, per_round=4, windows=2, seed=0)
    result = autoperf.run()
    seconds = time.perf_counter() - t
    for row in result.trajectory:
        print({k: round(v, 4) for k, v in row.items()})
    print("best", result.config())
    # the roofline: a grid over the fusion size alone, same twins
    size_at = next(i for i, k in enumerate(result.knobs) if k.key == "size")
    grid = []
    for size in result.knobs[size_at].options:
        values = list(result.incumbent.values)
        values[size_at] = size
        grid.append(autoperf.evaluate(tuple(values)))
    feasible = [p for p in grid if p.clicks >= result.bound]
    grid_best = min(feasible, key=lambda p: p.cost)
    # the coordinator's overhead: a window with AutoPerf's proposal under test vs a plain window, on twins
    plain_twin, coordinated = service.fork(), service.fork()
    coordinator = Coordinator(coordinated, traffic_budget=0.5)
    coordinator.submit(Proposal("autoperf", result.config(), share=0.3, windows=100, goal="cost"))
    plain_s, step_s = [], []
    for _ in range(4):
        t = time.perf_counter()
        plain_twin.serve()
        plain_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        coordinator.step()
        step_s.append(time.perf_counter() - t)
    overhead = sum(step_s) / len(step_s) - sum(plain_s) / len(plain_s)
    # the cascade: AutoPerf moving only the pre-ranker's keep
    cascade = Deployment.start(cfg, build_system(cascade_config(), cfg), world_seed=0, sim_seed=0, concurrency=100,
                               window=500)
    cascade.serve(6)
    cascade.calibrate_resources()
    cut = AutoPerf(cascade, max_degradation=BOUND, rounds=4, per_round=2, seed=0, keys=("keep",)).run()
    (keep,) = cut.best.values
    flops = []
    for value in (cut.incumbent.values[0], keep):
        twin = cascade.fork()
        twin.deploy_config(cut.knobs[0].agent, {"keep": value})
        flops.append(twin.score(twin.serve(learn=False))[1]["outer/cost/flops_per_request"])
    print("cascade", [(p.values, round(p.clicks, 4)) for p in sorted(cut.evaluated, key=lambda p: p.values)])
    # the ranker's width: a narrower MLP trained on the running ranker's memory per option
    t = time.perf_counter()
    narrow = AutoPerf(service.fork(), max_degradation=BOUND, rounds=1, per_round=3, seed=0, keys=("width",)).run()
    width_s = time.perf_counter() - t
    widths = {p.values[0]: p for p in narrow.evaluated}
    print(json.dumps({
        "cost_reduction": round(result.cost_reduction, 4), "clicks_degradation": round(result.clicks_degradation, 5),
        "bound": BOUND, "p99_latency_ms_before": round(result.incumbent.p99_ms, 3),
        "p99_latency_ms_after": round(result.best.p99_ms, 3), "configs_evaluated": len(result.evaluated),
        "autoperf_s": round(seconds, 2), "calibration_s": round(calibration_s, 2),
        "grid_cost_reduction": round(1 - grid_best.cost / result.incumbent.cost, 4),
        "autoperf_vs_grid": round((1 - result.best.cost / result.incumbent.cost)
                                  / max(1 - grid_best.cost / result.incumbent.cost, 1e-9), 3),
        "final_lambda": round(result.trajectory[-1]["lambda"], 4), "coordinator_overhead_s_per_window": round(overhead, 4),
        "plain_window_s": round(sum(plain_s) / len(plain_s), 4),
        "cascade_keep": keep, "cascade_flops_reduction": round(1 - flops[1] / flops[0], 4),
        "cascade_clicks_degradation": round(cut.clicks_degradation, 5),
        "width_cost_ratio": {w: round(p.cost / narrow.incumbent.cost, 4) for w, p in sorted(widths.items())},
        "width_clicks_degradation": {w: round(1 - p.clicks / narrow.incumbent.clicks, 5)
                                     for w, p in sorted(widths.items())},
        "width_chosen": narrow.width(), "width_s": round(width_s, 2),
    }))


if __name__ == "__main__":
    main()
