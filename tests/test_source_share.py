"""benchmarks/source_share.py: the check that a fused image is not one source copied."""

from __future__ import annotations

import numpy as np
import pytest

from .conftest import load_benchmark

source_share = load_benchmark("source_share")


@pytest.fixture()
def sources():
    rng = np.random.default_rng(0)
    return rng.random((64, 64)), rng.random((64, 64))


def test_a_copy_of_one_source_has_none_of_the_other(sources):
    a, b = sources
    d_a, d_b, c_a, c_b = source_share.share(a.copy(), a, b)
    assert d_a == 0.0 and d_b == pytest.approx(np.abs(a - b).mean() * 255)
    assert c_a == pytest.approx(1.0, abs=1e-9) and c_b == pytest.approx(0.0, abs=1e-9)


def test_the_average_takes_half_of_each(sources):
    a, b = sources
    d_a, d_b, c_a, c_b = source_share.share((a + b) / 2, a, b)
    assert d_a == pytest.approx(d_b)
    assert c_a == pytest.approx(0.5, abs=1e-9) and c_b == pytest.approx(0.5, abs=1e-9)


def test_epoch_selection_refuses_a_copy_of_one_source(sources, tmp_path):
    """select_epoch.py's floor: an epoch whose fused images are the infrared image is not eligible,
    one that carries more of the weaker source than the start is."""
    import cv2

    from fusecli.pairs import Pair

    select_epoch = load_benchmark("select_epoch")
    a, b = sources
    paths = []
    for name, img in (("ir", a), ("vis", b)):
        path = tmp_path / f"{name}.png"
        cv2.imwrite(str(path), np.round(img * 255).astype(np.uint8))
        paths.append(path)
    pair = Pair(stem="p0", paths=tuple(paths))
    run = tmp_path / "run"
    for key, fused in (("copy", a), ("fusion", 0.6 * a + 0.4 * b)):
        folder = run / "selection" / "fused" / key / "set"
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "p0.png"), np.round(fused * 255).astype(np.uint8))
    copy = select_epoch.detail_shares("copy", {"set": [pair]}, run)
    fusion = select_epoch.detail_shares("fusion", {"set": [pair]}, run)
    floor = {"set": 0.13}  # derun-admm's visible detail coefficient on RoadScene validation pairs
    assert min(copy["set"]) < 0.05 and not select_epoch.keeps_both(copy, floor)
    assert min(fusion["set"]) == pytest.approx(0.4, abs=0.02) and select_epoch.keeps_both(fusion, floor)
