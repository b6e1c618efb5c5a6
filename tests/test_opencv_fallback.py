"""fusecli needs only OpenCV's main modules: without the contrib wheel (no ``cv2.ximgproc``) the
guided filter is built from plain box filters and gives ximgproc's values, and CSC-IVF's output,
to float rounding. Runs with either wheel: the reference is He et al.'s filter written out in
float64 (tests/guided_reference.py), and ximgproc itself where the contrib wheel is installed (the
reference equals ximgproc 5.1 to 1.2e-7 on the cases below, measured with the contrib wheel)."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import torch

from fusecli import create_model
from fusecli.inference import fuse_tensors
from fusecli.io import read_image
from fusecli.models.layers import box_guided_filter_plane, guided_filter, guided_filter_plane

from .conftest import SAMPLES
from .guided_reference import guided_filter as reference_guided_filter



@pytest.fixture
def without_ximgproc(monkeypatch):
    """cv2 as the plain opencv-python-headless wheel has it."""
    if hasattr(cv2, "ximgproc"):
        monkeypatch.delattr(cv2, "ximgproc")
    assert not hasattr(cv2, "ximgproc")


def _planes(h: int, w: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    guide = rng.random((h, w), dtype=np.float32)
    src = cv2.GaussianBlur(rng.random((h, w), dtype=np.float32), (0, 0), 3)
    return guide, src


@pytest.mark.parametrize("h, w, radius, eps", [(480, 640, 45, 0.01), (40, 70, 45, 0.01), (5, 7, 2, 1e-3),
                                               (64, 48, 8, 0.1)])
def test_box_guided_filter_equals_the_reference_and_ximgproc(h, w, radius, eps):
    guide, src = _planes(h, w, h + w)
    ours = box_guided_filter_plane(guide, src, radius, eps)
    assert np.abs(ours - reference_guided_filter(guide, src, radius, eps)).max() < 2e-6
    if hasattr(cv2, "ximgproc"):
        assert np.abs(ours - cv2.ximgproc.guidedFilter(guide, src, radius, eps)).max() < 2e-6


def test_guided_filter_without_ximgproc_equals_the_torch_filter(without_ximgproc):
    guide, src = _planes(61, 90, 1)
    plane = guided_filter_plane(guide, src, 45, 0.01)
    g, p = torch.from_numpy(guide)[None, None], torch.from_numpy(src)[None, None]
    torch_path = guided_filter(g, p, 45, 0.01, impl="torch")[0, 0].numpy()
    assert np.abs(plane - torch_path).max() < 2e-6
    assert np.abs(guided_filter(g, p, 45, 0.01, impl="opencv")[0, 0].numpy() - torch_path).max() < 2e-6


def _fuse_samples() -> torch.Tensor:
    model = create_model("cscfuse-ivf")
    ir, vis = read_image(SAMPLES / "ir.png")[0], read_image(SAMPLES / "vis.png")[0]
    with torch.inference_mode():
        return fuse_tensors(model, [ir, vis])


def test_csc_ivf_without_ximgproc_matches_the_ximgproc_output(monkeypatch):
    """The shipped CSC-IVF on the samples, saliency rule: within the fast path's tolerance of the
    ximgproc path (8-bit outputs at most 1 grey level apart, >= 99.9 % identical). Without the
    contrib wheel, the ximgproc path runs with the reference filter as ``cv2.ximgproc.guidedFilter``."""
    if not hasattr(cv2, "ximgproc"):
        monkeypatch.setattr(cv2, "ximgproc", SimpleNamespace(guidedFilter=reference_guided_filter), raising=False)
    with_contrib = _fuse_samples()
    monkeypatch.delattr(cv2, "ximgproc")
    plain = _fuse_samples()
    assert (plain - with_contrib).abs().max() < 1e-4
    a, b = (plain * 255).round(), (with_contrib * 255).round()
    assert (a - b).abs().max() <= 1 and (a == b).float().mean() >= 0.999