"""One ``batch`` (or ``robustness``) per output folder: a second run is one red line and writes nothing;
the lock dies with its holder (``kill -9``), shards of one batch run side by side."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fusecli import create_model
from fusecli.batch import run_batch
from fusecli.errors import ConfigError, ImageWriteError
from fusecli.locking import LOCK_NAME, hold_output_lock, releases_output_locks
from fusecli.metrics.report import evaluate_folder
from fusecli.robustness import run_robustness

fcntl = pytest.importorskip("fcntl")  # advisory locks: POSIX only
ENV = {**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"}


def _dataset(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    for role in ("ir", "vis"):
        (root / role).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / role / f"p{i}.png"), rng.integers(0, 256, (32, 40), dtype=np.uint8))
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "auif_random.pt"
    torch.save(create_model("auif", weights=None).state_dict(), path)
    return path


def _holder(lock_file: Path, mode: str = "LOCK_EX") -> subprocess.Popen:
    """Another process that holds ``lock_file`` until it is killed."""
    code = (f"import fcntl, os, sys, time\nfd = os.open({str(lock_file)!r}, os.O_RDWR | os.O_CREAT)\n"
            f"fcntl.flock(fd, fcntl.{mode} | fcntl.LOCK_NB)\nprint('held', flush=True)\ntime.sleep(600)\n")
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


def _batch(data: Path, out: Path, ckpt: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fusecli", "batch", str(data), "-o", str(out), "-m", "auif", "-c", str(ckpt),
                           "-d", "cpu", "-q", *extra], capture_output=True, text=True, env=ENV, timeout=300)


def _listing(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


@pytest.mark.slow
def test_second_batch_is_refused_then_runs_once_the_holder_is_killed(tmp_path, ckpt):
    data, out = _dataset(tmp_path / "data"), tmp_path / "out"
    holder = _holder(out / LOCK_NAME)
    try:
        before = _listing(out)
        proc = _batch(data, out, ckpt)
        assert proc.returncode == 1
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and str(out) in lines[0], proc.stderr
        assert "another fusecli batch" in lines[0]
        assert _listing(out) == before  # nothing written, not even a manifest
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    proc = _batch(data, out, ckpt)  # the kernel dropped the dead holder's lock
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i}.png" for i in range(4)]
    # the lock file is no image or pair to the readers of the folder
    report = evaluate_folder(out, data, ["EN"])
    assert len(report.rows) == 4 and not any(LOCK_NAME in p for p in report.problems)
    assert _batch(data, out, ckpt).returncode == 0  # a rerun: every pair skipped, the lock taken again


def test_lock_taken_in_this_process_refuses_run_batch_and_is_released_after(tmp_path, ckpt):
    data, out = _dataset(tmp_path / "data"), tmp_path / "out"
    net = create_model("auif", checkpoint=ckpt)

    @releases_output_locks
    def hold_and_try():
        hold_output_lock(out)
        with pytest.raises(ImageWriteError, match="another fusecli batch is writing to"):
            run_batch(data, out, net)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]

    hold_and_try()
    assert run_batch(data, out, net).ok  # released when the holder returned
    with pytest.raises(ConfigError, match="other settings|different"):  # fails after taking the lock ...
        run_batch(data, out, net, gray=True)
    assert run_batch(data, out, net, overwrite=True).ok  # ... so the next one runs


@pytest.mark.slow
def test_shards_run_side_by_side_but_not_twice(tmp_path, ckpt):
    data, out = _dataset(tmp_path / "data"), tmp_path / "out"
    holder = _holder(out / ".fusecli.shard-0-of-2.lock")
    shared = _holder(out / LOCK_NAME, "LOCK_SH")  # as a running shard holds the folder's lock
    try:
        other = _batch(data, out, ckpt, "--shard", "1/2")
        assert other.returncode == 0, other.stderr
        same = _batch(data, out, ckpt, "--shard", "0/2")
        assert same.returncode == 1 and "shard 0/2" in same.stderr
        whole = _batch(data, out, ckpt)
        assert whole.returncode == 1 and "another fusecli batch" in whole.stderr
    finally:
        for process in (holder, shared):
            process.send_signal(signal.SIGKILL)
            process.wait()


def test_second_robustness_run_is_refused_and_writes_nothing(tmp_path):
    data, out = _dataset(tmp_path / "data", n=2), tmp_path / "report"
    holder = _holder(out / LOCK_NAME)
    try:
        with pytest.raises(ImageWriteError, match="another fusecli robustness"):
            run_robustness(data, {"auif": create_model("auif", weights=None)}, "haze", "0,1", out,
                           metrics=["EN"], plots=False)
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_hold_outside_a_decorated_function_is_a_bug(tmp_path):
    with pytest.raises(RuntimeError, match="releases_output_locks"):
        hold_output_lock(tmp_path)


def test_nothing_holds_the_lock_after_a_run(tmp_path, ckpt):
    """The lock is flock on an open file: after the run nothing holds it (a probe takes it at once)."""
    data, out = _dataset(tmp_path / "data"), tmp_path / "out"
    run_batch(data, out, create_model("auif", checkpoint=ckpt))
    fd = os.open(out / LOCK_NAME, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
