"""Robustness sweeps on a tiny synthetic dataset: CSV rows, means, resume, plots, errors."""

from __future__ import annotations

import csv
import sys

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from fusecli import create_model
from fusecli.cli import app
from fusecli.errors import ConfigError, UnknownNameError
from fusecli.robustness import (
    DEFAULT_METRICS,
    MEAN_ROW,
    parse_levels,
    parse_sweeps,
    resolve_metrics,
    run_robustness,
)

runner = CliRunner()
METRICS = ["EN", "SD", "SSIM"]  # cheap ones; the default set is checked by resolve_metrics


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Three 64x80 pairs: gray IR, colour visible."""
    root = tmp_path_factory.mktemp("data")
    (root / "ir").mkdir()
    (root / "vis").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:80]
    for i, stem in enumerate(["a", "b", "c"]):
        ir = np.clip(60 + 120 * np.exp(-((xx - 20 - 15 * i) ** 2 + (yy - 30) ** 2) / 90)
                     + rng.normal(0, 4, (64, 80)), 0, 255).astype(np.uint8)
        vis = np.stack([np.clip(128 + 60 * np.sin(xx / (3 + i) + c) * np.cos(yy / 5)
                                + rng.normal(0, 6, (64, 80)), 0, 255) for c in range(3)], axis=2).astype(np.uint8)
        cv2.imwrite(str(root / "ir" / f"{stem}.png"), ir)
        cv2.imwrite(str(root / "vis" / f"{stem}.png"), vis)
    return root


@pytest.fixture(scope="module")
def model():
    return create_model("auif", weights=None)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_csv_rows_means_and_resume(dataset, model, tmp_path):
    out = tmp_path / "report"
    calls = []
    result = run_robustness(dataset, {"auif": model}, "haze", "0,3", out, metrics=METRICS, plots=False,
                            progress=lambda done, total, what: calls.append((done, total, what)))
    assert result.computed == 6 and result.reused == 0 and result.pairs == 3
    assert calls[-1][:2] == (6, 6)
    rows = _rows(out / "robustness.csv")
    assert list(rows[0]) == ["model", "kind", "level", "pair", *METRICS]
    assert len(rows) == 2 * (3 + 1)
    images = [r for r in rows if r["pair"] != MEAN_ROW]
    assert {(r["level"], r["pair"]) for r in images} == {(lv, p) for lv in "03" for p in "abc"}
    assert all(r["model"] == "auif" and r["kind"] == "haze" for r in rows)
    for level in "03":
        values = [float(r["EN"]) for r in images if r["level"] == level]
        mean = next(float(r["EN"]) for r in rows if r["level"] == level and r["pair"] == MEAN_ROW)
        assert mean == pytest.approx(np.mean(values), rel=1e-5)
    assert sorted(p.name for p in (out / "cells").iterdir()) == ["auif__clean__L0.json", "auif__haze__L3.json"]
    first = (out / "robustness.csv").read_bytes()

    # rerun: nothing recomputed, same CSV
    again = run_robustness(dataset, {"auif": model}, "haze", "0,3", out, metrics=METRICS, plots=False)
    assert again.computed == 0 and again.reused == 6
    assert (out / "robustness.csv").read_bytes() == first

    # a lost cell and a new level: only those are computed; level 0 is shared by a new kind
    (out / "cells" / "auif__haze__L3.json").unlink()
    more = run_robustness(dataset, {"auif": model}, "haze,noise", "0,1,3", out, metrics=METRICS, plots=False)
    assert more.computed == 4 * 3 and more.reused == 3  # haze 1 and 3, noise 1 and 3; clean reused
    rows = _rows(out / "robustness.csv")
    assert len(rows) == 2 * 3 * (3 + 1)
    clean = {(r["kind"], r["pair"]): r["SSIM"] for r in rows if r["level"] == "0"}
    assert all(clean[("haze", p)] == clean[("noise", p)] for p in "abc")
    haze3 = [r for r in rows if r["kind"] == "haze" and r["level"] == "3"]
    assert [r["EN"] for r in haze3] == [r["EN"] for r in _rows_from_bytes(first) if r["level"] == "3"]


def _rows_from_bytes(data: bytes):
    return list(csv.DictReader(data.decode().splitlines()))


def test_changed_settings_are_recomputed_and_limit_reuses(dataset, model, tmp_path):
    out = tmp_path / "report"
    run_robustness(dataset, {"auif": model}, "rain", "2", out, metrics=["EN"], plots=False, limit=2)
    assert run_robustness(dataset, {"auif": model}, "rain", "2", out, metrics=["EN"], plots=False).computed == 1
    assert run_robustness(dataset, {"auif": model}, "rain", "2", out, metrics=["EN"], plots=False,
                          seed=1).computed == 3


def test_plots_with_and_without_matplotlib(dataset, model, tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    result = run_robustness(dataset, {"auif": model}, "haze+noise", "0,5", tmp_path / "r", metrics=["EN", "SD"])
    assert [p.name for p in result.plots] == ["robustness_haze+noise.png"]
    assert cv2.imread(str(result.plots[0])) is not None
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    result = run_robustness(dataset, {"auif": model}, "haze+noise", "0,5", tmp_path / "r2", metrics=["EN", "SD"])
    assert result.plots == [] and "fusecli[plots]" in result.plots_note
    assert (tmp_path / "r2" / "robustness.csv").exists()


def test_parsers_and_metric_resolution(monkeypatch):
    assert parse_levels("0-5") == [0, 1, 2, 3, 4, 5]
    assert parse_levels("1-2, 5,0") == [0, 1, 2, 5]
    for bad in ("0-6", "3-1", "x", ""):
        with pytest.raises(ConfigError):
            parse_levels(bad)
    assert parse_sweeps("haze, rain,haze+noise") == [("haze",), ("rain",), ("haze", "noise")]
    with pytest.raises(UnknownNameError):
        parse_sweeps("haze,snow")
    chosen, skipped = resolve_metrics(None)
    assert chosen and all(m in DEFAULT_METRICS for m in chosen) and not set(chosen) & set(skipped)
    monkeypatch.setattr("fusecli.robustness.DEFAULT_METRICS", ("EN", "NOPE"))
    assert resolve_metrics(None) == (["EN"], ["NOPE"])
    with pytest.raises(UnknownNameError):
        resolve_metrics("EN,NOPE")


def test_cli_runs_and_reports(dataset, auif_official_layout, tmp_path):
    out = tmp_path / "rep"
    args = ["robustness", str(dataset), "--models", "auif", "--kinds", "rain", "--levels", "0,4", "-o", str(out),
            "--checkpoint", str(auif_official_layout), "--device", "cpu", "--metrics", "EN,SF", "--limit", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "computed 4, reused 0" in result.stderr
    assert len(_rows(out / "robustness.csv")) == 2 * 3
    result = runner.invoke(app, args)
    assert "computed 0, reused 4" in result.stderr


@pytest.mark.parametrize("args, message", [
    (["--kinds", "hazee"], "Did you mean 'haze'"),
    (["--levels", "0-7"], "levels run from 0"),
    (["--models", "aiuf"], "Did you mean 'auif'"),
    (["--metrics", "EN,XYZ"], "unknown metric"),
    (["--limit", "0"], "--limit"),
])
def test_cli_bad_input_is_one_red_line(dataset, tmp_path, args, message):
    result = runner.invoke(app, ["robustness", str(dataset), "-o", str(tmp_path / "r"), *args])
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], result.stderr


def test_a_model_with_other_parameters_is_recomputed(dataset, tmp_path):
    """derun-admm has no weights: with 3 iterations it computes something else than with 9, so a
    rerun under the same label must not reuse the 9-iteration rows (the cells are keyed by the
    model's weights and config)."""
    out = tmp_path / "report"
    nine = create_model("derun-admm")
    three = create_model("derun-admm", iterations=3)
    first = run_robustness(dataset, {"admm": nine}, "rain", "0", out, metrics=["SF"], plots=False)
    assert first.computed == 3
    assert run_robustness(dataset, {"admm": nine}, "rain", "0", out, metrics=["SF"], plots=False).computed == 0
    assert run_robustness(dataset, {"admm": three}, "rain", "0", out, metrics=["SF"], plots=False).computed == 3
