"""AutoTrain's paper loop, measured: how well the bundled model parses the method cards, and whether offline gains
predict online ones.

``python bench/autotrain.py`` loads the bundled offline model (SmolLM2-135M, constrained decoding) and

1. parses every shipped method card (``agents/evolution/cards``) ``--seeds`` times at temperature ``--temperature``
   (sampling: how often a card becomes a valid design, and a faithful one against the answer key the model never
   sees), then once at temperature 0 (what :class:`~agents.evolution.autotrain.AutoTrain` uses);
2. runs a deployment of the default world (``--warmup`` windows, then ``--logged`` windows recorded), trains the
   incumbent (MLP) and each valid card's design on the logged windows but the last with the same budget
   (``--updates`` gradient steps), compares them on the last window (held-out AUC), and deploys each pair on twins
   of the running deployment for ``--online`` windows (identical traffic, learning on): the online gain in expected
   clicks per request.

Last line: one JSON object: ``cards``, ``parse_valid_rate``, ``parse_arch_right_rate``, ``parse_fidelity``,
``seconds_per_parse``, ``offline_online_rank_corr`` (Spearman over the valid cards), ``cards_beating_incumbent_offline``,
``cards_beating_incumbent_online``, ``misled`` (better offline, not online), per card its offline and online gains.

    .venv/bin/python bench/autotrain.py [--seeds 3] [--updates 1000] [--online 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch

import envs
from agents.decision.configs import static_baseline
from agents.decision.models import ModelDesign
from agents.evolution.autotrain import AutoTrain, card_answers, fidelity, method_cards, parse_card
from agents.evolution.deployment import Deployment
from agents.evolution.llm import SmolLM2Backend
from agents.evolution.offline import TrainRecipe, logged_data, time_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=3, help="sampled parses per card")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--updates", type=int, default=1000, choices=(100, 300, 1000), help="gradient steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--logged", type=int, default=4)
    parser.add_argument("--online", type=int, default=2, help="twin windows per online comparison")
    parser.add_argument("--window", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)

    t0 = time.perf_counter()
    backend = SmolLM2Backend(seed=0).load()
    load_s = time.perf_counter() - t0
    cards, answers = method_cards(), card_answers()
    sampled = []
    for card in cards:
        for seed in range(args.seeds):
            p = parse_card(card, backend, seed=seed, temperature=args.temperature)
            sampled.append((card.name, p))
    valid_rate = float(np.mean([p.valid for _, p in sampled]))
    arch_right = float(np.mean([(p.document or {}).get("arch") == answers[n]["arch"] for n, p in sampled]))
    fid = float(np.mean([fidelity(p, answers[n]) for n, p in sampled]))
    seconds = float(np.mean([p.seconds for _, p in sampled]))
    print(f"sampled parses (T={args.temperature}, {args.seeds} seeds x {len(cards)} cards): valid {valid_rate:.2f}, "
          f"arch right {arch_right:.2f}, fidelity {fid:.2f}, {seconds:.1f} s per parse (load {load_s:.1f} s)")

    cfg = envs.WorldConfig()
    svc = Deployment.start(cfg, static_baseline(cfg, seed=0), seed=0, window=args.window)
    svc.serve(args.warmup)
    svc.start_recording()
    svc.serve(args.logged)
    train, valid = time_split(logged_data(svc.stop_recording()))
    at = AutoTrain(backend, ModelDesign(arch="mlp"), TrainRecipe(updates=args.updates), seed=0)
    t1 = time.perf_counter()
    results = at.screen(cards, train, valid)
    per_card = {}
    for r in results:
        p = r.parsed
        row = {"valid": p.valid, "arch": (p.document or {}).get("arch"), "right_arch": (p.document or {}).get("arch")
               == answers[p.card]["arch"], "error": p.error}
        if r.offline is not None:
            at.online(svc, r, train, windows=args.online)
            row.update(offline_auc_gain=round(r.offline.auc_gain, 5), online_gain=round(r.online_gain, 5),
                       offline_auc=round(r.offline.candidate["auc"], 5), online=r.online)
        per_card[p.card] = row
        print(f"  {p.card}: {row}")
    summary = at.ledger.summary()
    tested = [r for r in results if r.offline is not None]
    out = {
        "bench": "autotrain", "machine": platform.machine(), "cores": os.cpu_count(),
        "cards": len(cards), "parse_valid_rate": round(valid_rate, 3), "parse_arch_right_rate": round(arch_right, 3),
        "parse_fidelity": round(fid, 3), "seconds_per_parse": round(seconds, 2), "model_load_s": round(load_s, 1),
        "offline_online_rank_corr": None if summary["rank_corr"] != summary["rank_corr"] else round(summary["rank_corr"], 3),
        "sign_agreement": summary["sign_agreement"], "misled": summary["misled"],
        "cards_beating_incumbent_offline": sum(r.offline.auc_gain > 0 for r in tested),
        "cards_beating_incumbent_online": sum((r.online_gain or 0) > 0 for r in tested),
        "incumbent": "mlp", "updates": args.updates, "online_windows": args.online,
        "train_rows": len(train), "valid_rows": len(valid), "screen_and_online_s": round(time.perf_counter() - t1, 1),
        "per_card": per_card,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
