"""``fusecli metrics --device`` goes through the device check of the other commands: one line, exit 1."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from fusecli.errors import DeviceError
from fusecli.metrics.report import evaluate_files, evaluate_folder

from .conftest import SAMPLES

NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: -d cuda is valid")


def _metrics(*args):
    return subprocess.run([sys.executable, "-m", "fusecli", "metrics", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"})


def _dataset(tmp_path):
    for role, name in (("ir", "ir.png"), ("vis", "vis.png")):
        (tmp_path / "data" / role).mkdir(parents=True)
        shutil.copy(SAMPLES / name, tmp_path / "data" / role / "01.png")
    (tmp_path / "fused").mkdir()
    shutil.copy(SAMPLES / "vis.png", tmp_path / "fused" / "01.png")
    return tmp_path / "data", tmp_path / "fused"


@pytest.mark.slow
@pytest.mark.parametrize("device, message", [
    ("banana", "unknown device 'banana'"),
    pytest.param("cuda", "no CUDA GPU", marks=NO_GPU),
    pytest.param("cuda:0", "no CUDA GPU", marks=NO_GPU),
])
@pytest.mark.parametrize("mode", ["single", "folder"])
def test_bad_metrics_device_is_one_red_line(tmp_path, device, message, mode):
    data, fused = _dataset(tmp_path)
    csv = tmp_path / "m.csv"
    if mode == "single":
        args = [str(fused / "01.png"), "--ir", str(SAMPLES / "ir.png"), "--vis", str(SAMPLES / "vis.png")]
    else:
        args = [str(fused), "--sources", str(data)]
    proc = _metrics(*args, "-d", device, "--csv", str(csv))
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], proc.stderr
    assert not csv.exists() and proc.stdout.strip() == ""


def test_library_checks_the_device_before_reading_anything(tmp_path):
    """A bad device is reported even when the files do not exist: it is checked first."""
    with pytest.raises(DeviceError, match="unknown device"):
        evaluate_files(tmp_path / "missing.png", [tmp_path / "a.png", tmp_path / "b.png"], device="banana")
    with pytest.raises(DeviceError, match="unknown device"):
        evaluate_folder(tmp_path / "nowhere", tmp_path / "nothing", device="banana")


def test_metrics_on_cpu_still_work(tmp_path):
    values = evaluate_files(SAMPLES / "vis.png", [SAMPLES / "ir.png", SAMPLES / "vis.png"], ["EN"], device="cpu")
    assert values["EN"] > 0
