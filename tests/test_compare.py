"""Comparison figures (`fusecli compare`, :mod:`fusecli.compare`): layout, legible labels, zoom, files.

Layout tests use synthetic arrays; the file tests a two-pair dataset made from the samples, the
weight-free ``average`` and ``max`` rules and folders written by ``run_batch``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from fusecli import create_model, fuse_files, read_image
from fusecli.batch import run_batch
from fusecli.cli import app
from fusecli.compare import (DEFAULT_LABEL_SIZE, Zoom, comparison_grid, figure_paths, label_strip_height,
                             make_figures, to_rgb8)
from fusecli.errors import ConfigError, ImageWriteError, ShapeError
from fusecli.io import quantize

from .conftest import SAMPLES

runner = CliRunner()


def _gray(w=160, h=120, value=None, seed=0):
    rng = np.random.default_rng(seed)
    return np.full((h, w), value, np.uint8) if value is not None else rng.integers(0, 256, (h, w), dtype=np.uint8)


def _label_strip(grid, index):
    x, y, w, h, _ = grid.labels[index]
    return grid.image[y:y + h, x:x + w]


def _dark_rows_cols(strip):
    dark = strip.min(axis=2) < 96
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    return dark, rows, cols


@pytest.fixture
def dataset(tmp_path) -> Path:
    """Two pairs: 01 (gray IR + colour visible), 02 (gray IR + gray visible), 320x240."""
    root = tmp_path / "data"
    (root / "ir").mkdir(parents=True)
    (root / "vis").mkdir()
    for stem, vis in (("01", "vis_color.png"), ("02", "vis.png")):
        shutil.copy(SAMPLES / "ir.png", root / "ir" / f"{stem}.png")
        shutil.copy(SAMPLES / vis, root / "vis" / f"{stem}.png")
    return root


# --- layout -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, columns", [(2, None), (5, None), (5, 2), (6, 3)])
def test_grid_panel_count_and_size(n, columns):
    images = [_gray(seed=i) for i in range(n)]
    grid = comparison_grid(images, [f"m{i}" for i in range(n)], columns=columns, gap=6)
    cols = columns or n
    rows = -(-n // cols)
    strip = label_strip_height(DEFAULT_LABEL_SIZE)
    assert len(grid.panels) == len(grid.labels) == n
    assert grid.image.shape == (rows * (120 + strip) + (rows - 1) * 6, cols * 160 + (cols - 1) * 6, 3)
    for (x, y, w, h), image in zip(grid.panels, images):  # each panel holds its image, unchanged
        assert (w, h) == (160, 120)
        assert np.array_equal(grid.image[y:y + h, x:x + w, 1], image)


def test_panels_of_another_size_are_resampled_and_counts_checked():
    grid = comparison_grid([_gray(), _gray(80, 60), _gray()], ["a", "b", "c"])
    assert all(p[2:] == (160, 120) for p in grid.panels)
    with pytest.raises(ShapeError, match="labels"):
        comparison_grid([_gray()], ["a", "b"])
    with pytest.raises(ShapeError):
        comparison_grid([], [])


def test_labels_are_legible():
    grid = comparison_grid([_gray(240, 180, 128)] * 3, ["Infrared", "Infrared", "AUIF-fusion"])
    strips = [_label_strip(grid, i) for i in range(3)]
    for strip in strips:
        dark, rows, cols = _dark_rows_cols(strip)
        # high contrast: black text on a white strip
        assert strip.min() < 30 and np.median(strip) == 255
        assert 0.02 < dark.mean() < 0.5
        # text height >= 12 px at the default size, and centred horizontally
        assert rows[-1] - rows[0] + 1 >= 12
        assert abs((cols[0] + cols[-1]) / 2 - strip.shape[1] / 2) < 6
    # the same label renders identically; a different one differs
    assert np.array_equal(strips[0], strips[1])
    assert not np.array_equal(strips[0], strips[2])
    x, y, w, h = grid.panels[0]
    assert (grid.image[y:y + h, x:x + w] == 128).all()  # no text over the image


def test_label_size_option_and_long_labels():
    big = comparison_grid([_gray()], ["Visible"], label_size=32)
    small = comparison_grid([_gray()], ["Visible"], label_size=12)
    heights = [np.ptp(_dark_rows_cols(_label_strip(g, 0))[1]) + 1 for g in (small, big)]
    assert 11 <= heights[0] < heights[1] and heights[1] >= 30
    long = comparison_grid([_gray(), _gray()], ["x", "a very long method name that cannot fit"])
    _, _, cols = _dark_rows_cols(_label_strip(long, 1))
    assert cols[0] > 0 and cols[-1] < 159  # shrunk, then cut: inside its panel
    assert long.label_size < DEFAULT_LABEL_SIZE  # one size for the whole figure


def test_colour_sources_shown_in_colour():
    colour = np.zeros((120, 160, 3), np.uint8)
    colour[..., 0] = 200  # red, RGB
    colour[..., 2] = 40
    grid = comparison_grid([_gray(), colour, quantize(np.full((1, 3, 120, 160), 0.2))], ["ir", "vis", "f"])
    (x0, y0, w, h), (x1, y1, _, _) = grid.panels[:2]
    gray_panel, colour_panel = grid.image[y0:y0 + h, x0:x0 + w], grid.image[y1:y1 + h, x1:x1 + w]
    assert np.array_equal(gray_panel[..., 0], gray_panel[..., 2])
    assert np.array_equal(colour_panel, colour)
    assert to_rgb8(np.ones((1, 3, 4, 5), np.float32)).shape == (4, 5, 3)


@pytest.mark.parametrize("zoom_row", [False, True])
def test_zoom_box_and_magnified_crop_on_every_panel(zoom_row):
    images = [_gray(seed=i) for i in range(3)]
    zoom = Zoom(20, 30, 16, 12)
    grid = comparison_grid(images, ["a", "b", "c"], zoom=zoom, zoom_row=zoom_row)
    red = (grid.image[..., 0] == 255) & (grid.image[..., 1] == 0) & (grid.image[..., 2] == 0)
    for (x, y, w, h), image in zip(grid.panels, images):
        assert red[y + 30, x + 20:x + 36].all()  # top edge of the box, on the panel
        crop = image[30:42, 20:36]
        if zoom_row:
            below = grid.image[y + h:y + h + 200, x:x + w, 1]
            region = below[below.shape[0] // 2]
        else:
            region = grid.image[y + h - 40:y + h, x + w - 40:x + w, 1]  # bottom-right inset
        # the magnified crop repeats the crop's pixels (nearest neighbour)
        assert set(np.unique(region)) - {0, 255} <= set(np.unique(crop))
    if zoom_row:  # a second row: taller than without the zoom
        assert grid.image.shape[0] > 120 + label_strip_height(DEFAULT_LABEL_SIZE) + 100
    with pytest.raises(ConfigError, match="outside"):
        comparison_grid(images, ["a", "b", "c"], zoom=Zoom(150, 0, 20, 10))


def test_zoom_parse():
    assert Zoom.parse("1, 2,3,4") == Zoom(1, 2, 3, 4)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,5", "-1,0,4,4"):
        with pytest.raises(ConfigError, match="--zoom"):
            Zoom.parse(bad)


def test_figure_paths():
    assert figure_paths("fig.png", ["01"]) == {"01": Path("fig.png")}
    assert figure_paths("out/fig.pdf", ["01", "05"]) == {"01": Path("out/fig_01.pdf"), "05": Path("out/fig_05.pdf")}
    assert figure_paths("figs", ["01", "05"], ext="jpg") == {"01": Path("figs/01.jpg"), "05": Path("figs/05.jpg")}
    with pytest.raises(ConfigError):
        figure_paths("fig.gif", ["01"])


# --- figures from files -------------------------------------------------------------------------------

def test_figures_from_models_and_batch_folders(dataset, tmp_path):
    run_batch(dataset, tmp_path / "runs" / "avg", "average", device="cpu", workers=1)
    paths = make_figures(dataset, tmp_path / "fig.png", fused=[tmp_path / "runs" / "avg"], models=["max"],
                         device="cpu", zoom=Zoom(10, 10, 40, 30))
    assert [p.name for p in paths] == ["fig_01.png", "fig_02.png"]
    figure, _ = read_image(paths[0])
    figure = quantize(figure)
    strip = label_strip_height(DEFAULT_LABEL_SIZE)
    assert figure.shape == (240 + strip, 4 * 320 + 3 * 8, 3)  # ir, vis, avg, max
    # the batch output is shown as it is (outside the zoom box and inset)
    fused = quantize(read_image(tmp_path / "runs" / "avg" / "01.png")[0])
    panel = figure[:240, 2 * 328:2 * 328 + 320]
    assert np.array_equal(panel[50:130, 60:170], fused[50:130, 60:170])
    # the model's panel is what fuse writes
    fuse_files(create_model("max", device="cpu"), [dataset / "ir" / "01.png", dataset / "vis" / "01.png"],
               tmp_path / "max.png")
    want = quantize(read_image(tmp_path / "max.png")[0])
    assert np.array_equal(figure[:240, 3 * 328:3 * 328 + 320][50:130, 60:170], want[50:130, 60:170])
    # colour: the visible source and the fused panels of pair 01 are in colour
    for col in (1, 2, 3):
        p = figure[:240, col * 328:col * 328 + 320].astype(int)
        assert np.abs(p[..., 0] - p[..., 2]).mean() > 5


def test_pairs_labels_and_folder_output(dataset, tmp_path):
    paths = make_figures(dataset, tmp_path / "figs", models=["average"], labels=["Mean"], pairs=["2"],
                         device="cpu", ext="jpg")
    assert paths == [tmp_path / "figs" / "02.jpg"]
    with pytest.raises(ConfigError, match="no pair '07'"):
        make_figures(dataset, tmp_path / "x.png", models=["average"], pairs=["07"], device="cpu")
    with pytest.raises(ConfigError, match="labels"):
        make_figures(dataset, tmp_path / "x.png", models=["average"], labels=["a", "b"], device="cpu")
    with pytest.raises(ConfigError, match="--models"):
        make_figures(dataset, tmp_path / "x.png", device="cpu")
    with pytest.raises(ImageWriteError, match="one of the inputs"):
        make_figures(dataset, dataset / "ir" / "01.png", models=["average"], pairs=["01"], device="cpu")
    assert not (tmp_path / "x.png").exists()


def test_pdf_needs_matplotlib(dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    with pytest.raises(ConfigError, match=r"fusecli\[plots\]"):
        make_figures(dataset, tmp_path / "fig.pdf", models=["average"], device="cpu")
    assert not list(tmp_path.glob("fig*"))
    # PNG never needs it
    assert make_figures(dataset, tmp_path / "fig.png", models=["average"], pairs=["01"], device="cpu")


def test_pdf_with_matplotlib(dataset, tmp_path):
    pytest.importorskip("matplotlib")
    [path] = make_figures(dataset, tmp_path / "fig.pdf", models=["average"], pairs=["01"], device="cpu")
    data = path.read_bytes()
    assert data.startswith(b"%PDF") and len(data) > 10_000
    # the labels are vector text (a font is embedded), not drawn into the image twice
    assert b"/Font" in data


def test_pdf_grid_leaves_label_strips_blank(dataset, tmp_path, monkeypatch):
    import fusecli.compare as compare

    seen = []
    monkeypatch.setattr(compare, "_pdf_bytes", lambda grid: seen.append(grid) or b"%PDF-1.4 stub")
    monkeypatch.setattr(compare, "_check_pdf", lambda: None)
    make_figures(dataset, tmp_path / "fig.pdf", models=["average"], pairs=["01"], device="cpu")
    x, y, w, h, _ = seen[0].labels[0]
    assert (seen[0].image[y:y + h, x:x + w] == 255).all()


# --- command line --------------------------------------------------------------------------------------

def test_cli_compare(dataset, tmp_path):
    result = runner.invoke(app, ["compare", str(dataset), "-m", "average,max", "--pairs", "01", "-o",
                                 str(tmp_path / "fig.png"), "--zoom", "10,10,40,30", "--zoom-row", "-d", "cpu"])
    assert result.exit_code == 0, result.output
    image = cv2.imread(str(tmp_path / "fig.png"))
    assert image.shape[1] == 4 * 320 + 3 * 8 and image.shape[0] > 240 + 240 // 2
    cases = [
        ["-m", "average", "--pairs", "9", "-o", str(tmp_path / "a.png")],
        ["-o", str(tmp_path / "a.png")],
        ["-m", "average", "--zoom", "300,10,40,40", "-o", str(tmp_path / "a.png")],
        ["-m", "average", "-o", str(tmp_path / "a.gif")],
        ["-m", "nope", "-o", str(tmp_path / "a.png")],
        ["--fused", str(tmp_path / "missing"), "-o", str(tmp_path / "a.png")],
    ]
    for args in cases:
        result = runner.invoke(app, ["compare", str(dataset), "-d", "cpu", *args])
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), (args, result.output)
    assert not list(tmp_path.glob("a*"))
