"""Run loggers: the metrics table (CSV + parquet), wandb (offline by default) and TensorBoard, behind one fan-out.

Metric keys are namespaced (``reward``, ``layered/rerank/total``, ``outer/engagement/clicks_per_request``,
``config/mmr_lambda``, ``evolution/best_reward``); the step is the window index. Figures go to both wandb
(``wandb.Image``) and TensorBoard (``add_figure``). :func:`read_wandb_history` reads an offline run back.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.config import ExperimentConfig

__all__ = ["MetricsTable", "RunLoggers", "TensorBoardLogger", "WandbLogger", "read_wandb_history", "scalars",
           "write_atomic"]

log = logging.getLogger(__name__)


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """The finite numeric entries of a row (bools as 0/1), for scalar loggers."""
    out = {}
    for key, value in row.items():
        if isinstance(value, bool):
            out[key] = float(value)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            out[key] = float(value)
    return out


class MetricsTable:
    """One row per window; written as ``metrics.csv`` and ``metrics.parquet``."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)

    def write(self, out: Path) -> pd.DataFrame:
        frame = self.frame()
        write_atomic(out / "metrics.csv", lambda tmp: frame.to_csv(tmp, index=False))
        write_atomic(out / "metrics.parquet", lambda tmp: frame.to_parquet(tmp, index=False))
        return frame


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` a file beside ``path``, then move it into place: a kill mid-write leaves the old file or
    none, never half of one."""
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


class WandbLogger:
    """A wandb run in ``<run dir>/wandb``; ``mode`` offline (default), online or disabled. Never prompts."""

    def __init__(self, cfg: ExperimentConfig, out: Path, config: dict[str, Any]) -> None:
        import wandb

        # our top-level package `agents` is not the LLM library wandb's Weave hint looks for
        os.environ.setdefault("WANDB_DISABLE_WEAVE", "true")
        w = cfg.logger.wandb
        self.wandb = wandb
        self.run = wandb.init(
            project=w.project, entity=w.entity, group=w.group or cfg.name, job_type=cfg.arm_label,
            name=f"{cfg.name}-{cfg.arm_label}-s{cfg.seed}", tags=list(w.tags), config=config, dir=str(out), mode=w.mode,
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True),
        )

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def figures(self, figures: dict[str, Any], step: int) -> None:
        self.run.log({f"figures/{name}": self.wandb.Image(fig) for name, fig in figures.items()}, step=step)

    def summary(self, values: dict[str, float]) -> None:
        for key, value in values.items():
            self.run.summary[key] = value

    def close(self, failed: bool = False) -> None:
        self.run.finish(exit_code=1 if failed else 0)


class TensorBoardLogger:
    """torch's SummaryWriter into ``<run dir>/tb``."""

    def __init__(self, out: Path, config: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(out))
        self.writer.add_text("config", "```\n" + json.dumps(config, indent=1, default=str) + "\n```")

    def log(self, metrics: dict[str, float], step: int) -> None:
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, step)

    def figures(self, figures: dict[str, Any], step: int) -> None:
        for name, fig in figures.items():
            self.writer.add_figure(f"figures/{name}", fig, step, close=False)

    def summary(self, values: dict[str, float]) -> None:
        pass

    def close(self, failed: bool = False) -> None:
        self.writer.close()


class RunLoggers:
    """The table plus the enabled loggers; ``window`` logs one window's row, ``finish`` the figures and summary."""

    def __init__(self, cfg: ExperimentConfig, out: Path, config: dict[str, Any]) -> None:
        self.out = out
        self.table = MetricsTable()
        self.sinks: list[WandbLogger | TensorBoardLogger] = []
        if cfg.logger.wandb.enabled and cfg.logger.wandb.mode != "disabled":
            self.sinks.append(WandbLogger(cfg, out, config))
        if cfg.logger.tensorboard.enabled:
            self.sinks.append(TensorBoardLogger(out / cfg.logger.tensorboard.subdir, config))
        self.last_step = 0

    def window(self, row: dict[str, Any]) -> None:
        self.table.add(row)
        self.last_step = int(row["step"])
        values = scalars({k: v for k, v in row.items() if k not in ("step", "seed", "replicate")})
        for sink in self.sinks:
            sink.log(values, self.last_step)

    def figures(self, figures: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.figures(figures, self.last_step)

    def close(self, summary: dict[str, float] | None = None, failed: bool = False) -> pd.DataFrame:
        """Write the table; give every sink the summary and close it (also after a failure)."""
        frame = self.table.write(self.out) if self.table.rows else self.table.frame()
        for sink in self.sinks:
            try:
                if summary:
                    sink.summary(summary)
            finally:
                sink.close(failed)
        self.sinks = []
        return frame


# --------------------------------------------------------------------------- reading an offline wandb run

_BLOCK = 32768  # the .wandb file is a LevelDB-style log: 7-byte file header, 32 KiB blocks, 7-byte record headers
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def _wandb_records(raw: bytes) -> list[bytes]:
    records, pos, buf = [], 7, b""
    while pos + 7 <= len(raw):
        left = _BLOCK - pos % _BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", raw[pos:pos + 7])
        if kind == 0 and length == 0:
            break
        buf += raw[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (_FULL, _LAST):
            records.append(buf)
            buf = b""
    return records


def read_wandb_history(run_dir: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The history rows and the final summary of the offline wandb run(s) under ``run_dir`` (``wandb/offline-run-*``)."""
    from wandb.proto import wandb_internal_pb2 as pb

    files = sorted(glob.glob(os.path.join(str(run_dir), "**", "offline-run-*", "run-*.wandb"), recursive=True))
    if not files:
        raise FileNotFoundError(f"no offline wandb run under {run_dir}")
    history: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for path in files:
        for data in _wandb_records(Path(path).read_bytes()):
            record = pb.Record()
            record.ParseFromString(data)
            kind = record.WhichOneof("record_type")
            if kind == "history":
                history.append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item})
            elif kind == "summary":
                summary.update({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.summary.update})
    return history, summary
