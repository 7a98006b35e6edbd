"""Speed and validity of the offline LLM designer: SmolLM2-135M loading, and proposals under constrained decoding.

Loads the bundled model twice into a fresh cache directory (the first load dequantises the GGUF and
saves the float32 copy; the second reads that copy), then asks the designer for ``--proposals``
proposals from the baseline design, each new design marked as tried so the next must differ. Last
line: one JSON object with ``load_s`` (``first`` and ``cached``), ``s_per_valid_proposal``,
``valid_rate`` (proposals that gave a valid new design within the retries), ``attempt_valid_rate``
(replies that were valid and new), the reasons of the failed attempts, the routes and the mean tokens
per reply.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter

import torch

from agents.evolution.design import DEFAULT_DESIGN
from agents.evolution.designer import LLMDesigner
from agents.evolution.llm import SmolLM2Backend
from agents.infra.store import KnowledgeStore


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proposals", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--retries", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as cache:
        first = SmolLM2Backend(cache_dir=cache).load()
        load_first = first.load_seconds
        del first
        backend = SmolLM2Backend(cache_dir=cache, seed=0).load()
        load_cached = backend.load_seconds
    print(f"load: first (GGUF, then saved) {load_first:.1f} s, cached copy {load_cached:.1f} s")
    store = KnowledgeStore("sqlite://")  # in memory: counts the failed attempts
    designer = LLMDesigner(backend, store, max_retries=a.retries, seed=0)
    routes: Counter[str] = Counter()
    tokens = 0
    t0 = time.perf_counter()
    for i in range(a.proposals):
        t = time.perf_counter()
        proposal = designer.propose(DEFAULT_DESIGN)
        if proposal is None:
            routes["failed"] += 1
            print(f"{i:2d} no valid design ({time.perf_counter() - t:.1f} s)")
            continue
        designer.record(proposal)
        routes[proposal.route] += 1
        tokens += proposal.reply.completion_tokens
        print(f"{i:2d} {proposal.route:11s} {len(proposal.attempts)} attempt(s) {time.perf_counter() - t:5.1f} s  "
              f"{proposal.rationale[:60]!r}")
    total = time.perf_counter() - t0
    valid = a.proposals - routes["failed"]
    failed_attempts = len(store.designs(valid=False))
    reasons = Counter((d.error or "").split(":")[0].split("(")[0].strip() for d in store.designs(valid=False))
    print(json.dumps({
        "load_s": {"first": round(load_first, 2), "cached": round(load_cached, 2)},
        "s_per_valid_proposal": round(total / max(valid, 1), 2),
        "valid_rate": round(valid / a.proposals, 3),
        "attempt_valid_rate": round(valid / max(valid + failed_attempts, 1), 3),
        "failed_attempts": dict(reasons),
        "proposals": a.proposals,
        "routes": dict(routes),
        "mean_reply_tokens": round(tokens / max(valid, 1), 1),
        "threads": a.threads,
    }))


if __name__ == "__main__":
    main()
