"""Reading images as the toolboxes do, folder pairing, CSV/JSON output and the `fusecli metrics` command."""

from __future__ import annotations

import csv
import json
import math

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from fusecli import __version__
from fusecli.cli import app
from fusecli.errors import ConfigError, ShapeError, UnknownNameError
from fusecli.metrics import evaluate_arrays
from fusecli.metrics.report import (
    DEFAULT_METRICS,
    evaluate_files,
    evaluate_folder,
    load_gray,
    resolve_metric_names,
    rgb_to_gray,
    write_csv,
    write_json,
)

runner = CliRunner()


def _img(seed, h=48, w=52):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    return np.clip(100 + 60 * np.sin(xx / (4 + seed)) + rng.normal(0, 15, (h, w)), 0, 255).astype(np.uint8)


@pytest.fixture
def dataset(tmp_path):
    ds = tmp_path / "ds"
    (ds / "ir").mkdir(parents=True)
    (ds / "vis").mkdir()
    fused = tmp_path / "fused"
    fused.mkdir()
    other = tmp_path / "other"
    other.mkdir()
    for i, stem in enumerate(["01", "02", "03"]):
        a, b = _img(i), _img(10 + i)
        cv2.imwrite(str(ds / "ir" / f"{stem}.png"), a)
        cv2.imwrite(str(ds / "vis" / f"{stem}.png"), b)
        if stem != "03":  # 03 has no fused image
            cv2.imwrite(str(fused / f"{stem}.png"), ((a.astype(int) + b) // 2).astype(np.uint8))
        cv2.imwrite(str(other / f"{stem}.png"), a)
    cv2.imwrite(str(fused / "99.png"), _img(5))  # a fused image without sources
    cv2.imwrite(str(ds / "ir" / "lonely.png"), _img(6))  # a source without partner
    return ds, fused, other


# ---------------------------------------------------------------- gray conversion, 16 bit


def test_rgb_to_gray_rules():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3)).astype(np.float64)
    want_cv = np.round((0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]))
    assert np.abs(rgb_to_gray(rgb, "cddfuse") - want_cv).max() <= 1  # float32 ties may flip
    assert (rgb_to_gray(rgb, "cddfuse") == want_cv).mean() > 0.99
    y = rgb @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    for conv in ("matlab", "vifb", "mefb"):
        assert np.array_equal(rgb_to_gray(rgb, conv), np.floor(y + 0.5))
    # a gray pixel stays itself under both rules
    g = np.dstack([np.arange(256.0)] * 3)
    assert np.array_equal(rgb_to_gray(g, "cddfuse")[0], np.arange(256.0))
    assert np.array_equal(rgb_to_gray(g, "matlab")[0], np.arange(256.0))


def test_load_gray_colour_and_16bit(tmp_path):
    rgb = np.zeros((8, 9, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 30, 77  # R G B
    p = tmp_path / "c.png"
    cv2.imwrite(str(p), rgb[..., ::-1])
    assert load_gray(p, "cddfuse")[0, 0] == round(0.299 * 200 + 0.587 * 30 + 0.114 * 77)
    assert load_gray(p, "mefb", keep_red=True)[0, 0] == 200
    p16 = tmp_path / "d.png"
    cv2.imwrite(str(p16), np.full((8, 9), 257 * 100 + 128, np.uint16))
    with pytest.raises(ConfigError, match="--allow-16bit"):
        load_gray(p16)
    assert np.all(load_gray(p16, allow_16bit=True) == 100)


def test_resolve_metric_names():
    assert resolve_metric_names(None) == list(DEFAULT_METRICS)
    assert resolve_metric_names("en, ssim,EN") == ["EN", "SSIM"]
    assert "VIFF" in resolve_metric_names("all")
    with pytest.raises(UnknownNameError, match="Did you mean"):
        resolve_metric_names("qabff")


# ---------------------------------------------------------------- files and folders


def test_evaluate_files_and_size_mismatch(dataset, tmp_path):
    ds, fused, _ = dataset
    v = evaluate_files(fused / "01.png", [ds / "ir" / "01.png", ds / "vis" / "01.png"], ["EN", "MI"], "matlab")
    a, b = _img(0), _img(10)
    f = ((a.astype(int) + b) // 2).astype(np.uint8)
    assert v == pytest.approx(evaluate_arrays(f, [a, b], ["EN", "MI"], "matlab"), rel=1e-12)
    cv2.imwrite(str(tmp_path / "small.png"), _img(1, 40, 40))
    with pytest.raises(ShapeError, match="same size"):
        evaluate_files(tmp_path / "small.png", [ds / "ir" / "01.png", ds / "vis" / "01.png"], ["EN"])


def test_evaluate_folder_reports_problems(dataset):
    ds, fused, _ = dataset
    rep = evaluate_folder(fused, ds, ["EN", "SSIM", "CC"], "vifb", workers=2)
    assert [r.stem for r in rep.rows] == ["01", "02"]
    text = "\n".join(rep.problems)
    assert "03: no fused image" in text
    assert "99.png: fused image without sources" in text
    assert "lonely.png" in text
    m, s = rep.mean(), rep.std()
    vals = rep.column("SSIM")
    assert m["SSIM"] == pytest.approx(vals.mean()) and s["SSIM"] == pytest.approx(vals.std())
    with pytest.raises(ConfigError, match="not an existing folder"):
        evaluate_folder(fused / "nope", ds)


def test_csv_json_written_with_convention_and_version(dataset, tmp_path):
    ds, fused, other = dataset
    reps = [evaluate_folder(fused, ds, ["EN", "MI"], "matlab"), evaluate_folder(other, ds, ["EN", "MI"], "matlab")]
    write_csv(reps, tmp_path / "m.csv")
    write_json(reps, tmp_path / "m.json")
    rows = list(csv.DictReader(open(tmp_path / "m.csv")))
    assert {r["convention"] for r in rows} == {"matlab"} and {r["fusecli_version"] for r in rows} == {__version__}
    assert [r["image"] for r in rows if r["method"] == "fused"] == ["01", "02", "mean", "std"]
    doc = json.loads((tmp_path / "m.json").read_text())
    assert doc["convention"] == "matlab" and doc["fusecli_version"] == __version__
    assert doc["methods"][1]["images"] == 3 and doc["higher_is_better"]["MI"] is True
    assert "bits" in doc["definitions"]["MI"]
    assert not list(tmp_path.glob(".*tmp"))


# ---------------------------------------------------------------- the command


def test_cli_single_image(dataset):
    ds, fused, _ = dataset
    r = runner.invoke(app, ["metrics", str(fused / "01.png"), "--ir", str(ds / "ir" / "01.png"),
                            "--vis", str(ds / "vis" / "01.png"), "--metrics", "en,psnr", "-C", "matlab"])
    assert r.exit_code == 0, r.output
    assert "EN" in r.output and "PSNR" in r.output and "matlab" in r.output


def test_cli_folder_compare_and_files(dataset, tmp_path):
    ds, fused, other = dataset
    r = runner.invoke(app, ["metrics", str(fused), "--sources", str(ds), "--compare", str(other),
                            "--metrics", "en,sd,mse", "--csv", str(tmp_path / "o.csv"),
                            "--json", str(tmp_path / "o.json"), "--per-image", "-q"])
    assert r.exit_code == 0, r.output
    assert "fused" in r.output and "other" in r.output and "± " in r.output
    assert "no fused image" in r.output  # problems are reported
    doc = json.loads((tmp_path / "o.json").read_text())
    assert [m["name"] for m in doc["methods"]] == ["fused", "other"]


def test_cli_errors_are_one_line(dataset):
    ds, fused, _ = dataset
    r = runner.invoke(app, ["metrics", str(fused), "--sources", str(ds), "--metrics", "ssimm"])
    assert r.exit_code == 1 and "Did you mean 'SSIM'" in r.output
    r = runner.invoke(app, ["metrics", str(fused)])
    assert r.exit_code == 1 and "--sources" in r.output
    r = runner.invoke(app, ["metrics", str(fused), "--sources", str(ds), "--convention", "tang"])
    assert r.exit_code == 1 and "convention" in r.output
    r = runner.invoke(app, ["metrics", "--help"])
    assert r.exit_code == 0 and "cddfuse" in r.output


def test_nan_metric_reported_not_silent(tmp_path):
    ds = tmp_path / "ds"
    (ds / "ir").mkdir(parents=True)
    (ds / "vis").mkdir()
    fused = tmp_path / "f"
    fused.mkdir()
    const = np.full((20, 20), 9, np.uint8)
    for d in (ds / "ir", ds / "vis", fused):
        cv2.imwrite(str(d / "x.png"), const)
    rep = evaluate_folder(fused, ds, ["CC", "EN"], "cddfuse")
    assert math.isnan(rep.rows[0].values["CC"]) and "CC undefined" in rep.problems[0]
    assert math.isnan(rep.mean()["CC"]) and rep.mean()["EN"] == 0.0


def test_a_metric_too_large_for_the_image_leaves_the_others(tmp_path):
    """MEF-MS-SSIM needs >= 44 px; on a 24x24 pair only that value is NaN, EN is still computed."""
    import cv2
    import numpy as np

    from fusecli.metrics.report import evaluate_folder

    rng = np.random.default_rng(0)
    for role in ("ir", "vis"):
        (tmp_path / "data" / role).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "data" / role / "a.png"), rng.integers(0, 256, (24, 24), dtype=np.uint8))
    (tmp_path / "fused").mkdir()
    cv2.imwrite(str(tmp_path / "fused" / "a.png"), rng.integers(0, 256, (24, 24), dtype=np.uint8))
    report = evaluate_folder(tmp_path / "fused", tmp_path / "data", ["EN", "MEF-MS-SSIM"])
    assert len(report.rows) == 1
    values = report.rows[0].values
    assert 0 < values["EN"] <= 8 and np.isnan(values["MEF-MS-SSIM"])
    assert any("MEF-MS-SSIM undefined" in p for p in report.problems)
