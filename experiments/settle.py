"""How long a warm-up a preset needs before its arms' comparisons stop measuring the system's take-off.

``python -m experiments.settle experiment=c1_heterogeneity [--warmups 0,4,8,12] [--seeds 6] [--windows 8]
[--nudge mmr_lambda=0.1]`` starts the preset's world and system on each seed (as its runs do: the same world,
system, window and concurrency) and, after each number of warm-up windows (served with learning on), forks the
deployment three ways and serves ``--windows`` more windows on each:

- a twin (the same state and traffic): the reference;
- an A/A replicate (the same state, its own traffic and system randomness from the fork on,
  :meth:`~agents.evolution.deployment.Deployment.fork` with a ``traffic_seed``): how far two runs of one system
  drift apart from there;
- a config change (the evolved agent, ``evolution.agent``, with one parameter moved by ``--nudge``, clipped to its
  range), on the twin's traffic: the paired difference a claim between two arms measures.

Per warm-up it prints, across seeds, the mean and the standard deviation of replicate - twin and of change - twin
in expected clicks per request over those windows (the spread an ablation's claim inherits when its arms share that
warm-up), then one JSON line (``{"settle": ...}``). A preset with a shared warm-up (``evolution.warmup_pipeline``)
warms up on that pipeline and each fork then takes the system's own routing
(:meth:`~agents.evolution.deployment.Deployment.route`), as its runs do. Learning on throughout; nothing is stored.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from envs.validation import ConfigError, check_int
from experiments.plot import json_safe

__all__ = ["main", "settle"]

CONF = Path(__file__).resolve().parent.parent / "conf"
REPLICATE_TRAFFIC = 10_007  # the A/A fork's traffic seed: seed + this (any seed the run itself does not use)


def _clicks(service: Any, windows: int) -> float:
    """Expected clicks per request over the next ``windows`` windows served (learning on)."""
    logs = [service.serve() for _ in range(windows)]
    served = np.concatenate([log.requests["clicks_exp"] for log in logs])
    return float(served.mean())


def settle(overrides: list[str], warmups: list[int], seeds: int, windows: int, nudge: tuple[str, float]
           ) -> dict[str, Any]:
    """The numbers :func:`main` prints: per warm-up (ascending), per seed the three forks' expected clicks per
    request, and across seeds the mean and spread of replicate - twin and change - twin."""
    from hydra import compose, initialize_config_dir

    import experiments.arms  # noqa: F401  (registers the arms the config is checked against)
    from agents.decision.params import Range
    from agents.evolution.deployment import Deployment
    from experiments.config import load_config

    if not warmups or any(b <= a for a, b in zip(warmups, warmups[1:])):
        raise ConfigError(f"`--warmups` must be distinct window counts in ascending order (got {warmups})")
    for w in warmups:
        check_int("--warmups", w, 0)
    check_int("--seeds", seeds, 2)
    check_int("--windows", windows, 1)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = load_config(compose(config_name="config", overrides=list(overrides)))
    e = cfg.evolution
    param, step = nudge
    rows: dict[int, list[dict[str, float]]] = {w: [] for w in warmups}
    for seed in range(seeds):
        service = Deployment.start(cfg.world, cfg.system, seed=seed, concurrency=e.concurrency, window=e.window)
        agent = service.agent(e.agent)
        space = agent.params.by_name
        if not isinstance(space.get(param), Range):
            ranges = sorted(n for n, p in space.items() if isinstance(p, Range))
            raise ConfigError(f"`--nudge` must name a range parameter of {e.agent} (one of {ranges}; got {param!r})")
        low, high = space[param].low, space[param].high
        # a shared warm-up (evolution.warmup_pipeline): warm up on that pipeline, each fork then takes the system's
        # own routing (handed over), as the experiment app's runs do
        own = service.route({s: e.warmup_pipeline for s in service.routing}, hand_over=False) if e.warmup_pipeline else {}
        served = 0
        for w in warmups:
            if w > served:
                service.serve(w - served)
            served = w
            twin, replicate, change = service.fork(), service.fork(traffic_seed=seed + REPLICATE_TRAFFIC), service.fork()
            for fork in (twin, replicate, change) if own else ():
                fork.route(own)
            moved = float(np.clip(float(agent.config[param]) + step, low, high))
            change.deploy_config(e.agent, {**change.agent(e.agent).config, param: moved})
            base = _clicks(twin, windows)
            rows[w].append({"seed": seed, "twin": base, "replicate": _clicks(replicate, windows) - base,
                            "change": _clicks(change, windows) - base})
    table = []
    for w in warmups:
        rep = np.array([r["replicate"] for r in rows[w]])
        chg = np.array([r["change"] for r in rows[w]])
        table.append({"warmup": w, "twin_clicks": float(np.mean([r["twin"] for r in rows[w]])),
                      "replicate_mean": float(rep.mean()), "replicate_sd": float(rep.std(ddof=1)),
                      "change_mean": float(chg.mean()), "change_sd": float(chg.std(ddof=1)), "seeds": rows[w]})
    return {"overrides": list(overrides), "agent": e.agent, "nudge": {param: step}, "windows": windows,
            "window": e.window, "warmups": table}


def _nudge(text: str) -> tuple[str, float]:
    name, sep, value = text.partition("=")
    try:
        if not sep or not name:
            raise ValueError
        step = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--nudge must be <parameter>=<step>, e.g. mmr_lambda=0.1 (got {text!r})") from None
    if not math.isfinite(step) or step == 0:
        raise argparse.ArgumentTypeError(f"--nudge's step must be a finite number other than 0 (got {value!r})")
    return name, step


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the experiment app, e.g. experiment=c1_heterogeneity")
    parser.add_argument("--warmups", default="0,4,8,12", help="warm-up window counts to compare (default 0,4,8,12)")
    parser.add_argument("--seeds", type=int, default=6, help="seeds (default 6)")
    parser.add_argument("--windows", type=int, default=8, help="windows served after each fork (default 8)")
    parser.add_argument("--nudge", type=_nudge, default=("mmr_lambda", 0.1),
                        help="the config change: <parameter of evolution.agent>=<step> (default mmr_lambda=0.1)")
    args = parser.parse_args(argv)
    try:
        warmups = [int(w) for w in args.warmups.split(",")]
    except ValueError:
        parser.error(f"--warmups must be comma-separated window counts, e.g. 0,4,8,12 (got {args.warmups!r})")
    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        parser.error(f"positional arguments must be key=value overrides (got {bad})")
    t = time.perf_counter()
    try:
        out = settle(args.overrides, warmups, args.seeds, args.windows, args.nudge)
    except ConfigError as exc:
        parser.error(str(exc))
    print(f"Forks after each warm-up, {args.seeds} seeds, the next {args.windows} windows of {out['window']} requests "
          f"(expected clicks per request; {time.perf_counter() - t:.0f} s):")
    print("| warm-up windows | twin | replicate - twin: mean | sd | change - twin: mean | sd |")
    print("|---|---|---|---|---|---|")
    for r in out["warmups"]:
        print(f"| {r['warmup']} | {r['twin_clicks']:.4f} | {r['replicate_mean']:+.4f} | {r['replicate_sd']:.4f} | "
              f"{r['change_mean']:+.4f} | {r['change_sd']:.4f} |")
    sys.stdout.write(json.dumps({"settle": json_safe(out)}) + "\n")


if __name__ == "__main__":
    main()
