"""The Open Bandit Dataset's sample (ZOZOTOWN fashion e-commerce logs), read in place from the ``obp`` wheel's zip.

The Open Bandit Dataset (Saito et al., NeurIPS 2021 Datasets and Benchmarks; CC BY 4.0) logs which of 80 fashion
items was shown in each of 3 positions of a recommendation widget, whether it was clicked, and the logging policy's
probability of showing it there. Two logging policies ran on the same traffic: ``random`` (uniform: every item at
every position with probability 1/80) and ``bts`` (Bernoulli Thompson sampling). Its small sample (10,000 rows per
policy and campaign: ``all``, ``men``, ``women``) ships inside the ``obp`` package under
``obp/dataset/obd/{policy}/{campaign}/``. ``obp`` 0.5.x declares Python < 3.11 and is published only as a source
archive; 0.4.1 is the last release with a wheel (pure Python, the same sample files), so ``make install`` downloads
that wheel, without its dependencies and without installing it, into ``.cache/wheels`` (or the folder named by
``$AGENTIC_RS_WHEELS``): :func:`load_obd` reads the CSVs straight out of the zip with :mod:`zipfile` and pandas,
never extracting them into the repository, and needs no network.
"""

from __future__ import annotations

import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from envs.validation import ConfigError, check_choice

__all__ = ["CAMPAIGNS", "DOWNLOAD", "POLICIES", "DataUnavailable", "OpenBanditSample", "load_obd", "wheel_path"]

POLICIES = ("random", "bts")
CAMPAIGNS = ("all", "men", "women")
VERSION = "0.4.1"
WHEEL = f"obp-{VERSION}-py3-none-any.whl"
ENV_VAR = "AGENTIC_RS_WHEELS"
DOWNLOAD = (f"python -m pip download obp=={VERSION} --no-deps --only-binary=:all: --python-version 3.9 "
            "-d .cache/wheels")
ROOT = Path(__file__).resolve().parents[1]
COLUMNS = ("timestamp", "item_id", "position", "click", "propensity_score")


class DataUnavailable(ConfigError):
    """The wheel that holds the data set is not where it is looked for."""


def wheel_folder() -> Path:
    """``$AGENTIC_RS_WHEELS``, else ``<repo>/.cache/wheels``."""
    return Path(os.environ.get(ENV_VAR) or ROOT / ".cache" / "wheels")


def wheel_path(folder: Path | str | None = None) -> Path:
    """The ``obp`` wheel in ``folder`` (default :func:`wheel_folder`), or a :class:`DataUnavailable` saying how to
    get it."""
    folder = wheel_folder() if folder is None else Path(folder)
    path = folder / WHEEL
    if not path.is_file():
        raise DataUnavailable(f"the Open Bandit Dataset sample is read from {path}, which does not exist: run "
                              f"`{DOWNLOAD}` in the repository (or `make install`, which does), or set `${ENV_VAR}` to "
                              "the folder that holds the wheel")
    return path


@dataclass(frozen=True)
class OpenBanditSample:
    """One policy's and campaign's logs: a row per impression (``item_id``, 0-based ``position`` (the file's 1-3
    minus 1), ``click``, ``propensity_score`` = P(this item at this position) under the logging policy, the
    ``timestamp``, and the user features and user-item affinities as in the file), and the items' features."""

    policy: str
    campaign: str
    log: pd.DataFrame
    item_context: pd.DataFrame

    @property
    def num_items(self) -> int:
        return len(self.item_context)

    @property
    def num_positions(self) -> int:
        return int(self.log["position"].max()) + 1

    def action_frequencies(self) -> np.ndarray:
        """(num_positions, num_items): the share of each position's impressions that showed each item."""
        counts = np.zeros((self.num_positions, self.num_items))
        np.add.at(counts, (self.log["position"].to_numpy(), self.log["item_id"].to_numpy()), 1.0)
        return counts / counts.sum(axis=1, keepdims=True)


def _read_csv(archive: zipfile.ZipFile, name: str) -> pd.DataFrame:
    try:
        data = archive.read(name)
    except KeyError:
        raise DataUnavailable(f"{archive.filename} has no {name}: download exactly obp=={VERSION} (`{DOWNLOAD}`)") from None
    return pd.read_csv(io.BytesIO(data), index_col=0)


def load_obd(policy: str = "random", campaign: str = "all", folder: Path | str | None = None) -> OpenBanditSample:
    """The sample logs of ``policy`` (:data:`POLICIES`) on ``campaign`` (:data:`CAMPAIGNS`) from the wheel."""
    check_choice("policy", policy, POLICIES)
    check_choice("campaign", campaign, CAMPAIGNS)
    path = wheel_path(folder)
    base = f"obp/dataset/obd/{policy}/{campaign}"
    with zipfile.ZipFile(path) as archive:
        log = _read_csv(archive, f"{base}/{campaign}.csv")
        items = _read_csv(archive, f"{base}/item_context.csv")
    missing = [c for c in COLUMNS if c not in log.columns]
    if missing:
        raise DataUnavailable(f"{path}: {base}/{campaign}.csv lacks the columns {missing} (got {list(log.columns)[:8]} ..)")
    log = log.reset_index(drop=True)
    log["position"] = log["position"].astype(np.int64) - 1
    log["item_id"] = log["item_id"].astype(np.int64)
    log["click"] = log["click"].astype(np.int64)
    return OpenBanditSample(policy, campaign, log, items.reset_index(drop=True))
