"""How well the resource model predicts the serving code's latency, and what calibrating it costs.

Calibrates the resource model (:mod:`agents.decision.resources`) of the static baseline pipeline on the small world
at batch sizes 32, 128 and 512 (medians of 5 timed runs each), then times the same code at batch sizes it was not
fitted on (64, 256, 400) and at a fusion size it was not fitted on (200 instead of 500): ``prediction_ratio_<stage>``
is predicted / measured milliseconds over those held-out batches (1.0: exact; the ranker's share dominates a
request's latency). The roofline: the ranker's stage in bare torch (the same network on the same number of
candidate rows, no feature assembly), ``ranking_roofline_ratio`` = roofline ms / measured ranking ms at batch 256.
Last line: one JSON object.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from agents.decision.configs import static_baseline
from agents.decision.resources import STAGES, describe
from agents.evolution.deployment import Deployment
from envs.config import WorldConfig, world_size


def main() -> None:
    torch.set_num_threads(1)
    cfg = WorldConfig(**world_size("small"))
    service = Deployment.start(cfg, static_baseline(cfg), world_seed=0, sim_seed=0, concurrency=400, window=2000)
    service.serve()
    pipeline = service.system.pipelines[0]
    started = time.perf_counter()
    profile = service.calibrate_resources([pipeline], batch_sizes=(32, 128, 512), repeats=5)
    calibration_s = time.perf_counter() - started
    print(describe(profile))
    predicted = {s: [] for s in STAGES}
    measured = {s: [] for s in STAGES}
    size = pipeline.fusion.config["size"]
    for fusion in (size, 200):
        pipeline.fusion.configure({"size": fusion})
        for b in (64, 256, 400):
            ms = service.time_stages(b, repeats=5, seed=1)
            for s, v in profile.batch_ms(pipeline, b).items():
                predicted[s].append(v)
                measured[s].append(ms[s])
    pipeline.fusion.configure({"size": size})
    ratios = {f"prediction_ratio_{s}": round(sum(predicted[s]) / sum(measured[s]), 3) for s in STAGES}
    total = round(sum(sum(v) for v in predicted.values()) / sum(sum(v) for v in measured.values()), 3)
    # roofline: the ranker's network alone on 256 requests x fusion-size candidates
    model = pipeline.ranker.model
    rows = 256 * size
    in_dim = next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).in_features
    x = torch.randn(rows, in_dim)
    seg = torch.zeros(rows, dtype=torch.long)
    laps = []
    with torch.no_grad():
        for _ in range(6):
            t = time.perf_counter()
            model(x, seg)
            laps.append(1000 * (time.perf_counter() - t))
    roof = statistics.median(laps[1:])
    real = service.time_stages(256, repeats=5, seed=2)["ranking"]
    print(json.dumps({"calibration_s": round(calibration_s, 2), "prediction_ratio_total": total, **ratios,
                      "ranking_ms_b256": round(real, 2), "ranking_roofline_ms_b256": round(roof, 2),
                      "ranking_roofline_ratio": round(roof / real, 3),
                      **{f"per_unit_ms_{s}": profile.stages[s].per_unit_ms for s in STAGES},
                      **{f"fixed_ms_{s}": round(profile.stages[s].fixed_ms, 4) for s in STAGES}}))


if __name__ == "__main__":
    main()
