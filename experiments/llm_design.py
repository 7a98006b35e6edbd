"""The LLM designer experiment: from a static pipeline, can the designer find a structural change that wins?

``python -m experiments.llm_design --budget 8 --out outputs/llm_design`` runs a learning static pipeline
(``--start lean``: popularity and exploration recall only; ``--start baseline``: the hand-tuned
five-route baseline) on the small world, then up to ``budget`` design steps (``--mode edit``: the model
picks one edit per proposal; ``--mode design``: it writes a whole design): the designer (the offline SmolLM2 model
by default, or any OpenAI-compatible endpoint with ``--backend openai --base-url ...``) proposes a new
pipeline design, the candidate is A/B-tested against the running pipeline on live traffic and deployed
only if accepted. Each step's structural changes against the design it started from are listed and
split into those *outside the RL decision space* (recall routes added or dropped, ranker architecture,
width or segment towers, fusion size: nothing an evolution env's action can change) and parameter
changes. Outputs: ``designs.csv`` (one row per step), ``store.db`` (every attempt, design and rollout)
and ``summary.json`` (the accepted structural changes with their effect and 95% interval).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from agents.decision.configs import SystemConfig, baseline_config, build_system, lean_config
from agents.decision.functional import ExperimentDesigner
from agents.evolution.deployment import Deployment
from agents.evolution.design import config_to_design, pipeline_to_config, summarize_design
from agents.evolution.designer import MODES, LLMDesigner, design_step
from agents.evolution.llm import make_backend
from agents.infra.store import KnowledgeStore, store_location
from envs.config import WorldConfig, world_size
from envs.validation import check_choice, check_int

__all__ = ["DesignExperimentConfig", "STARTS", "STRUCTURAL_KEYS", "run_design", "structural_changes"]

log = logging.getLogger(__name__)

STARTS = {"lean": lean_config, "baseline": baseline_config}

# parts of a design no evolution-env action reaches (the RL/search decision spaces are agents' parameters)
STRUCTURAL_KEYS = ("routes", "ranker.arch", "ranker.hidden", "ranker.per_segment", "fusion_size")


def structural_changes(before: dict[str, Any], after: dict[str, Any]) -> tuple[list[str], list[str]]:
    """(structural, parametric) differences between two single-pipeline design documents, as readable strings."""
    a, b = before["pipelines"][0], after["pipelines"][0]
    structural, parametric = [], []
    added, dropped = sorted(set(b["routes"]) - set(a["routes"])), sorted(set(a["routes"]) - set(b["routes"]))
    structural += [f"route +{k}" for k in added] + [f"route -{k}" for k in dropped]
    for k in sorted(set(a["routes"]) & set(b["routes"])):
        if a["routes"][k] != b["routes"][k]:
            parametric.append(f"route {k} {a['routes'][k]} -> {b['routes'][k]}")
    for key in ("arch", "hidden", "per_segment"):
        if a["ranker"].get(key) != b["ranker"].get(key):
            structural.append(f"ranker.{key} {a['ranker'].get(key)} -> {b['ranker'].get(key)}")
    if a.get("fusion_size") != b.get("fusion_size"):
        structural.append(f"fusion_size {a.get('fusion_size')} -> {b.get('fusion_size')}")
    for part in ("heads", "rerank"):
        for key in sorted(set(a.get(part, {})) | set(b.get(part, {}))):
            if a.get(part, {}).get(key) != b.get(part, {}).get(key):
                parametric.append(f"{part}.{key} {a.get(part, {}).get(key)} -> {b.get(part, {}).get(key)}")
    return structural, parametric


@dataclass
class DesignExperimentConfig:
    out: str = "outputs/llm_design"
    budget: int = 8  # design steps (each: one proposal, then an A/B test of `ab_windows` windows)
    warmup: int = 3  # learning windows before the first proposal
    window: int = 2000
    ab_windows: int = 3
    backend: str = "smollm2"
    base_url: str | None = None  # for backend "openai"
    model: str | None = None
    start: str = "lean"  # the pipeline the designer starts from (see STARTS)
    mode: str = "edit"  # edit: the model picks one edit per proposal; design: it writes a whole design
    seed: int = 0
    store: str | None = None  # the knowledge store: None = the shared one (agents.infra.store.default_store_url)

    def __post_init__(self) -> None:
        check_choice("start", self.start, list(STARTS))
        check_choice("mode", self.mode, list(MODES))
        check_int("budget", self.budget, 1)
        check_int("warmup", self.warmup, 0)
        check_int("window", self.window, 1)
        check_int("ab_windows", self.ab_windows, 1)


def run_design(cfg: DesignExperimentConfig, backend: Any = None) -> dict[str, Any]:
    """Run the design steps; write ``designs.csv`` and ``summary.json`` (and every proposal and A/B decision to the
    knowledge store); return the summary."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    if backend is None:
        kw = {k: v for k, v in (("base_url", cfg.base_url), ("model", cfg.model)) if v is not None}
        backend = make_backend(cfg.backend, **kw)
    world_cfg = WorldConfig(**world_size("small"))
    start_cfg = STARTS[cfg.start]()
    system = build_system(SystemConfig([start_cfg], seed=cfg.seed), world_cfg)
    service = Deployment.start(world_cfg, system, world_seed=cfg.seed, sim_seed=cfg.seed, concurrency=400,
                               window=cfg.window)
    if cfg.warmup:
        service.serve(cfg.warmup)
    rows = []
    start = config_to_design(start_cfg)
    with KnowledgeStore(store_location(cfg.store, out)) as store:
        exp = store.start_experiment("llm_design", asdict(cfg), cfg.seed, run_dir=str(out.resolve()))
        designer = LLMDesigner(backend, store, exp_id=exp, seed=cfg.seed, mode=cfg.mode)
        for step in range(cfg.budget):
            before = config_to_design(pipeline_to_config(service.system.pipelines[0]))
            result = design_step(service, designer, step=step, windows=cfg.ab_windows,
                                 experiment=ExperimentDesigner(config={"min_requests": 1000}), seed=cfg.seed + step)
            row: dict[str, Any] = {"step": step, "proposed": result.proposal is not None, "error": result.error}
            if result.proposal is not None:
                structural, parametric = structural_changes(before, result.proposal.document)
                row |= {"route": result.proposal.route, "design": summarize_design(result.proposal.document),
                        "structural": "; ".join(structural), "parametric": "; ".join(parametric),
                        "document": json.dumps(result.proposal.document)}
            if result.decision is not None:
                d = result.decision
                row |= {"accepted": d.accepted, "effect": d.effect, "ci_low": d.ci_low, "ci_high": d.ci_high,
                        "n_incumbent": d.n_incumbent, "n_candidate": d.n_candidate}
            row |= {f"seconds/{k}": v for k, v in result.seconds.items()}
            rows.append(row)
            log.info("step %d: %s", step, {k: row.get(k) for k in ("accepted", "effect", "structural", "error")})
        store.finish_experiment(exp)
    frame = pd.DataFrame(rows)
    frame.to_csv(out / "designs.csv", index=False)
    accepted = frame[frame.get("accepted", pd.Series(False, index=frame.index)).fillna(False).astype(bool)]
    summary = {
        "config": asdict(cfg),
        "backend": getattr(backend, "name", type(backend).__name__),
        "start": summarize_design(start),
        "final": summarize_design(config_to_design(pipeline_to_config(service.system.pipelines[0]))),
        "steps": len(frame),
        "proposals": int(frame["proposed"].sum()),
        "tested": int(frame["effect"].notna().sum()) if "effect" in frame else 0,
        "accepted": [
            {k: (r[k] if not isinstance(r[k], float) else round(r[k], 4)) for k in
             ("step", "design", "structural", "parametric", "effect", "ci_low", "ci_high")}
            for _, r in accepted.iterrows()
        ],
        "accepted_structural": int((accepted["structural"].fillna("") != "").sum()) if len(accepted) else 0,
        "store": store.location,
        "experiment_id": exp,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for f in DesignExperimentConfig.__dataclass_fields__.values():
        kind = type(f.default) if f.default is not None else str
        ap.add_argument(f"--{f.name.replace('_', '-')}", default=f.default, type=kind)
    a = vars(ap.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    summary = run_design(DesignExperimentConfig(**a))
    print(json.dumps({k: summary[k] for k in ("steps", "proposals", "tested", "accepted_structural")}))
    for r in summary["accepted"]:
        print(f"accepted at step {r['step']}: {r['structural'] or '(parameters only)'} | {r['parametric']} | "
              f"effect {r['effect']:+.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]")


if __name__ == "__main__":
    main()
