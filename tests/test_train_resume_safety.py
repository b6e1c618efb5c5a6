"""Resuming a training never runs code from ``last.pt``: a crafted, corrupt or foreign state is one error."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from collections import Counter

import cv2
import numpy as np
import pytest
import torch

from fusecli.errors import CheckpointError
from fusecli.train import TrainConfig, checkpoint_fits, load_checkpoint, save_checkpoint, train


class _CreatesFile:
    """Unpickling this calls ``open(path, "w")``: the file appears if the unpickler runs code."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _dataset(root, n=3):
    rng = np.random.default_rng(0)
    for role in ("ir", "vis"):
        (root / role).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / role / f"{i:02d}.png"), rng.integers(0, 256, (40, 40), dtype=np.uint8))
    return root


def _crafted_states(tmp_path, marker):
    """A zip (``torch.save``) and a legacy raw-pickle ``last.pt`` whose unpickling creates ``marker``."""
    zipped = tmp_path / "zip.pt"
    torch.save({"model": _CreatesFile(marker), "epoch": 1}, zipped)
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"model": _CreatesFile(marker), "epoch": 1}))
    return {"zip": zipped, "legacy": legacy}


def test_the_crafted_states_do_run_code_when_unpickled_unsafely(tmp_path):
    """The payload is real: a plain unpickler creates the file (so the tests below can fail)."""
    marker = tmp_path / "ran"
    pickle.loads(_crafted_states(tmp_path, marker)["legacy"].read_bytes())
    assert marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zip", "legacy"])
def test_train_resume_refuses_a_crafted_last_pt_without_running_it(tmp_path, kind):
    marker = tmp_path / "ran"
    out = tmp_path / "run"
    out.mkdir()
    crafted = _crafted_states(tmp_path, marker)[kind]
    (out / "last.pt").write_bytes(crafted.read_bytes())
    before = sorted(p.name for p in out.iterdir())
    proc = subprocess.run(
        [sys.executable, "-m", "fusecli", "train", "auif", "--data", str(_dataset(tmp_path / "data")), "-o", str(out),
         "--epochs", "1", "--batch-size", "2", "--crop", "32", "--steps-per-epoch", "1", "-d", "cpu", "--resume"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    assert not marker.exists()
    assert "Traceback" not in proc.stderr and "Warning" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.strip().startswith("error:")]
    assert len(errors) == 1 and str(out / "last.pt") in errors[0], proc.stderr
    other = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith(("error:", "training"))]
    assert other == [], proc.stderr  # nothing but the command's header and the error
    assert sorted(p.name for p in out.iterdir()) == before  # nothing written


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", pickle.dumps([1, 2, 3])])
def test_corrupt_or_foreign_states_are_a_checkpoint_error_naming_the_file(tmp_path, content):
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="last.pt"):
        load_checkpoint(path, ("model", "epoch"))


def test_a_state_dict_of_another_model_is_a_checkpoint_error(tmp_path):
    data = _dataset(tmp_path / "data")
    out = tmp_path / "run"
    out.mkdir()
    torch.save({"model": {"w": torch.zeros(2)}, "optimizer": {}, "scheduler": {}, "generator": torch.zeros(1),
                "torch_rng": torch.zeros(1), "epoch": 1}, out / "last.pt")
    config = TrainConfig(model="auif", data=(str(data),), out=str(out), epochs=2, batch_size=2, crop=32,
                         steps_per_epoch=1, resume=True)
    with pytest.raises(CheckpointError, match="does not fit this run"):
        train(config)


def test_saved_state_loads_weights_only_and_milestones_survive(tmp_path):
    """What ``save_checkpoint`` writes holds no Counter (older torch refuses it with weights_only=True);
    a MultiStepLR restored from it has the same Counter of milestones, repeated ones included."""
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [1, 1, 3], 0.5)
    save_checkpoint({"scheduler": sched.state_dict(), "rng": torch.get_rng_state(), "config": {"t": (1, 2)}},
                    tmp_path / "last.pt")
    state = load_checkpoint(tmp_path / "last.pt", ("scheduler",))
    assert type(state["scheduler"]["milestones"]) is dict
    assert isinstance(sched.milestones, Counter)  # saving did not change the live scheduler
    other = torch.optim.lr_scheduler.MultiStepLR(torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))]), [9], 0.5)
    with checkpoint_fits(tmp_path / "last.pt", other):
        other.load_state_dict(state["scheduler"])
    assert isinstance(other.milestones, Counter) and other.milestones == Counter({1: 2, 3: 1})
