"""A broken image is one line on stderr: no OpenCV ``[ WARN ... ]`` / ``[ERROR ...]`` or libpng lines first."""

from __future__ import annotations

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from fusecli.io import _png_cut_short

from .conftest import SAMPLES


def _encoded(ext: str) -> bytes:
    ok, encoded = cv2.imencode(ext, cv2.imread(str(SAMPLES / "vis.png"), cv2.IMREAD_UNCHANGED))
    assert ok
    return encoded.tobytes()


@pytest.mark.slow
@pytest.mark.parametrize("ext, cut", [
    (".png", 0.5),   # libpng: "PNG input buffer is incomplete"
    (".png", 40),    # IHDR intact, next chunk cut: OpenCV "[ WARN ... ] PNG input buffer is incomplete"
    (".jpg", 0.5),
    (".tif", 0.5),   # OpenCV "[ERROR ...] TIFF_Error ... Seek error"
    (".bmp", 0.5),   # OpenCV "[ERROR ...] imdecode_ ... Unexpected end of input stream"
])
def test_truncated_image_gives_exactly_one_stderr_line(tmp_path, ext, cut):
    data = _encoded(ext)
    broken = tmp_path / f"broken{ext}"
    broken.write_bytes(data[:int(len(data) * cut) if cut < 1 else cut])
    out = tmp_path / "fused.png"
    proc = subprocess.run([sys.executable, "-m", "fusecli", "fuse", str(broken), str(SAMPLES / "vis.png"),
                           "-o", str(out)], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error:") and broken.name in lines[0]
    assert not out.exists()


def test_png_cut_short_spots_truncation_only():
    data = np.frombuffer(_encoded(".png"), np.uint8)
    assert not _png_cut_short(data)
    assert not _png_cut_short(np.concatenate([data, np.frombuffer(b"trailing bytes", np.uint8)]))
    assert not _png_cut_short(np.frombuffer(_encoded(".jpg"), np.uint8))  # not a PNG: not its business
    for cut in (9, 33, 60, data.size // 2, data.size - 1):
        assert _png_cut_short(data[:cut]), cut
