"""experiments.settle: forks after each warm-up; a twin pairs exactly, bad arguments are refused before any work."""

from __future__ import annotations

import json

import numpy as np
import pytest

from experiments.settle import main, settle

TINY = ["experiment=c1_heterogeneity", "variant=one_model", "evolution.window=100", "evolution.concurrency=50",
        "system.pipelines.0.ranker.params.min_updates=0"]  # seconds per fork: the ranker trains one epoch per window


def test_forks_pair_exactly_where_nothing_changed_and_replicates_drift():
    # mmr_lambda starts at 0 (its range's low end): a step of -0.1 is clipped back to 0, so the "change" fork serves
    # the twin's config on the twin's traffic and must differ by exactly 0; the replicate (its own traffic) does not
    out = settle(TINY, [0, 2], seeds=2, windows=2, nudge=("mmr_lambda", -0.1))
    assert [r["warmup"] for r in out["warmups"]] == [0, 2] and out["agent"] == "baseline/rerank/mmr"
    for row in out["warmups"]:
        assert [s["change"] for s in row["seeds"]] == [0.0, 0.0] and row["change_sd"] == 0.0
        assert any(s["replicate"] != 0.0 for s in row["seeds"]) and np.isfinite(row["replicate_sd"])
        assert 0.0 < row["twin_clicks"] < 3.0
    moved = settle(TINY, [1], seeds=2, windows=1, nudge=("mmr_lambda", 0.5))["warmups"][0]
    assert any(s["change"] != 0.0 for s in moved["seeds"])  # a real change on the same traffic does move clicks


def test_a_shared_warm_up_hands_over_identically_on_every_fork():
    # the segment-routed system warms up on its main pipeline (the preset's evolution.warmup_pipeline) and each fork
    # hands new users over to the specialist: the hand-over's training is part of the forked state, so the twin and
    # the clipped "change" still pair exactly
    routed = [o if o != "variant=one_model" else "variant=segment_routed" for o in TINY]
    row = settle(routed, [1], seeds=2, windows=1, nudge=("mmr_lambda", -0.1))["warmups"][0]
    assert [s["change"] for s in row["seeds"]] == [0.0, 0.0]
    assert any(s["replicate"] != 0.0 for s in row["seeds"])


def test_the_cli_prints_a_table_and_one_json_line(capsys):
    main([*TINY, "--warmups", "1", "--seeds", "2", "--windows", "1"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[1].startswith("| warm-up windows | twin |") and lines[3].startswith("| 1 | ")
    assert json.loads(lines[-1])["settle"]["warmups"][0]["warmup"] == 1


@pytest.mark.parametrize(("args", "message"), [
    (["--warmups", "4,2"], "`--warmups` must be distinct window counts in ascending order (got [4, 2])"),
    (["--warmups", "a"], "--warmups must be comma-separated window counts"),
    (["--seeds", "1"], "`--seeds` must be"),
    (["--nudge", "lambda"], "--nudge must be <parameter>=<step>"),
    (["--nudge", "mmr_pool=10"], "`--nudge` must name a range parameter of baseline/rerank/mmr (one of ["),
])
def test_bad_arguments_are_refused_with_the_key_and_what_was_given(args, message, capsys):
    with pytest.raises(SystemExit):
        main([*TINY, "--windows", "1", *args])
    assert message in capsys.readouterr().err
