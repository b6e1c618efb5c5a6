"""`fusecli batch` and `fusecli.pairs`: pairing, identity with `fuse`, resume, kill, shards, errors, manifests.

All on tiny synthetic datasets built in tmp_path, with a randomly initialised AUIF saved as a
checkpoint (so subprocesses and reruns use the same weights); no shipped weights needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fusecli import create_model, fuse_files
from fusecli.batch import merge_manifests, parse_devices, run_batch
from fusecli.cli import app
from fusecli.errors import ConfigError, DeviceError
from fusecli.pairs import LAYOUTS, detect_roles, parse_shard, scan_pairs, shard_of, take_shard

from .conftest import REPO, SHARED

runner = CliRunner()


# --- fixtures -----------------------------------------------------------------------------------

def _make_dataset(root: Path, n: int = 10, size: tuple[int, int] = (48, 40), roles=("ir", "vis"),
                  seed: int = 0, colour_every: int = 2) -> Path:
    """n pairs; every `colour_every`-th visible image is colour (BGR), IR is gray; .png vs .jpg mix."""
    rng = np.random.default_rng(seed)
    w, h = size
    (root / roles[0]).mkdir(parents=True)
    (root / roles[1]).mkdir(parents=True)
    for i in range(n):
        stem = f"p{i:03d}"
        base = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (5, 5), 0)
        ir = np.clip(base.astype(int) + rng.integers(-20, 20, (h, w)), 0, 255).astype(np.uint8)
        vis = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) if i % colour_every == 0 else 255 - base
        cv2.imwrite(str(root / roles[0] / f"{stem}.png"), ir)
        cv2.imwrite(str(root / roles[1] / f"{stem}{'.jpg' if i % 3 == 0 else '.png'}"), vis)
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    """A random AUIF saved as a fusecli checkpoint: the same weights in every process."""
    torch.manual_seed(0)
    model = create_model("auif", weights=None)
    path = tmp_path_factory.mktemp("ckpt") / "auif_random.pt"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def net(ckpt):
    return create_model("auif", checkpoint=ckpt, device="cpu")


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())
            if not p.name.startswith(".") and p.suffix != ".json"}


# --- pairs.py -----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_is_detected_in_model_input_order(tmp_path, layout):
    for role in layout:
        (tmp_path / role).mkdir()
        (tmp_path / role / "x.png").write_bytes(b"")
    assert detect_roles(tmp_path) == layout
    scan = scan_pairs(tmp_path)
    assert [p.stem for p in scan.pairs] == ["x"]
    assert [p.parent.name for p in scan.pairs[0].paths] == list(layout)


def test_medical_layout_puts_the_functional_scan_first(tmp_path):
    for role in ("mri", "pet"):
        (tmp_path / role).mkdir()
    assert detect_roles(tmp_path) == ("pet", "mri")


def test_unknown_layout_lists_the_subfolders(tmp_path):
    for role in ("lwir", "rgb"):
        (tmp_path / role).mkdir()
    with pytest.raises(ConfigError, match=r"lwir/, rgb/.*--ir/--vis"):
        detect_roles(tmp_path)
    assert detect_roles(tmp_path, ("lwir", "rgb")) == ("lwir", "rgb")
    with pytest.raises(ConfigError, match="no folder 'nir'.*lwir/, rgb/"):
        detect_roles(tmp_path, ("nir", "rgb"))
    with pytest.raises(ConfigError, match="not an existing folder"):
        detect_roles(tmp_path / "missing")


def test_two_layouts_are_ambiguous(tmp_path):
    for role in ("mri", "ct", "pet"):
        (tmp_path / role).mkdir()
    with pytest.raises(ConfigError, match="several layouts"):
        detect_roles(tmp_path)


def test_scan_matches_stems_across_extensions_and_lists_the_rest(tmp_path):
    (tmp_path / "ir").mkdir()
    (tmp_path / "vis").mkdir()
    for name in ("a.png", "b.png", "c.png", "d.png", "d.jpg", ".hidden.png", "notes.txt"):
        (tmp_path / "ir" / name).write_bytes(b"")
    for name in ("a.jpg", "b.bmp", "d.png", "e.tif"):
        (tmp_path / "vis" / name).write_bytes(b"")
    scan = scan_pairs(tmp_path)
    assert [(p.stem, [q.name for q in p.paths]) for p in scan.pairs] == [("a", ["a.png", "a.jpg"]),
                                                                          ("b", ["b.png", "b.bmp"])]
    assert {r: [p.name for p in ps] for r, ps in scan.unmatched.items()} == {"ir": ["c.png"], "vis": ["e.tif"]}
    assert {r: [p.name for p in ps] for r, ps in scan.duplicates.items()} == {"ir": ["d.jpg", "d.png"],
                                                                              "vis": ["d.png"]}
    assert len(scan.problems) == 5  # every file is paired or listed
    assert "several files have the stem 'd' in ir/ (d.jpg, d.png)" in scan.problems[-1]


def test_shards_cover_every_pair_exactly_once(tmp_path):
    stems = [f"img_{i:05d}" for i in range(300)]
    seen = [s for i in range(3) for s in (p for p in stems if shard_of(p, 3) == i)]
    assert sorted(seen) == stems
    assert all(len([s for s in stems if shard_of(s, 3) == i]) > 60 for i in range(3))  # roughly balanced
    # stable across processes and versions (SHA-1, not hash()): pinned values
    assert [shard_of(s, 7) for s in ("FLIR_00006", "16003", "a")] == [
        int.from_bytes(__import__("hashlib").sha1(s.encode()).digest()[:8], "big") % 7
        for s in ("FLIR_00006", "16003", "a")]


def test_shards_of_a_scanned_dataset_cover_every_pair_once(tmp_path):
    """take_shard's 3 shards of scan_pairs: RoadScene's pairs (test_shared_data: all 221), else 40
    pairs of a synthetic dataset."""
    dataset = SHARED / "datasets" / "roadscene"
    if not dataset.exists():
        dataset = _make_dataset(tmp_path / "roadscene", n=40, size=(12, 10))
    pairs = scan_pairs(dataset).pairs
    parts = [take_shard(pairs, i, 3) for i in range(3)]
    stems = [p.stem for part in parts for p in part]
    assert sorted(stems) == sorted(p.stem for p in pairs) and len(set(stems)) == len(pairs) > 0
    assert all(parts)


def test_parse_shard_and_slurm_variables():
    assert parse_shard(None) is None and parse_shard("") is None
    assert parse_shard("2/5") == (2, 5)
    assert parse_shard("auto", {}) is None
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4",
                                "SLURM_ARRAY_TASK_MIN": "0", "SLURM_ARRAY_TASK_MAX": "3"}) == (3, 4)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "1",
                                "SLURM_ARRAY_TASK_MAX": "4"}) == (3, 4)
    assert parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_MIN": "0",
                                "SLURM_ARRAY_TASK_MAX": "6", "SLURM_ARRAY_TASK_STEP": "2"}) == (2, 4)
    for bad in ("3/3", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    with pytest.raises(ConfigError, match="does not fit"):
        parse_shard("auto", {"SLURM_ARRAY_TASK_ID": "9", "SLURM_ARRAY_TASK_COUNT": "4"})


# --- batch: identity, resume, manifest -----------------------------------------------------------

def test_batch_output_is_identical_to_fuse(tmp_path, net):
    data = _make_dataset(tmp_path / "data", n=10)
    result = run_batch(data, tmp_path / "out", net, workers=2)
    assert result.ok and result.counts["fused"] == 10
    for pair in scan_pairs(data).pairs:
        single = tmp_path / "single" / f"{pair.stem}.png"
        fuse_files(net, pair.paths, single)
        assert (tmp_path / "out" / f"{pair.stem}.png").read_bytes() == single.read_bytes(), pair.stem
    channels = {r.stem: r.channels for r in result.records}
    assert channels["p000"] == 3 and channels["p001"] == 1  # colour kept, gray stays gray


def test_cli_batch_equals_cli_fuse_and_rerun_skips(tmp_path, ckpt):
    data = _make_dataset(tmp_path / "data", n=4)
    out = tmp_path / "out"
    args = ["batch", str(data), "-o", str(out), "-m", "auif", "-c", str(ckpt), "--device", "cpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "4 fused" in result.output
    single = tmp_path / "single.png"
    result = runner.invoke(app, ["fuse", str(data / "ir" / "p000.png"), str(data / "vis" / "p000.jpg"),
                                 "-o", str(single), "-m", "auif", "-c", str(ckpt), "--device", "cpu", "-q"])
    assert result.exit_code == 0, result.output
    assert single.read_bytes() == (out / "p000.png").read_bytes()

    mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    result = runner.invoke(app, args)
    assert result.exit_code == 0 and "0 fused, 4 skipped" in result.output, result.output
    assert mtimes == {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "auif" and manifest["fusecli_version"]
    assert manifest["weights_sha256"] == {"auif_random.pt": __import__("hashlib").sha256(ckpt.read_bytes()).hexdigest()}
    assert manifest["options"]["ext"] == "png" and manifest["roles"] == ["ir", "vis"]
    assert manifest["summary"] == {"pairs": 4, "fused": 0, "skipped": 4, "failed": 0, "unmatched": 0}
    first = manifest["pairs"][0]
    assert first["stem"] == "p000" and first["inputs"] == ["ir/p000.png", "vis/p000.jpg"]
    assert first["fuse_s"] > 0 and first["width"] == 48  # timing of the run that fused it is kept

    # other settings into the same folder are refused; --overwrite redoes them
    result = runner.invoke(app, args + ["--gray"])
    assert result.exit_code == 1 and "other settings" in result.output
    result = runner.invoke(app, args + ["--gray", "--overwrite", "-q"])
    assert result.exit_code == 0 and result.output == ""
    assert cv2.imread(str(out / "p000.png"), cv2.IMREAD_UNCHANGED).ndim == 2


def test_bad_pairs_are_reported_and_skipped(tmp_path, ckpt):
    data = _make_dataset(tmp_path / "data", n=6)
    (data / "ir" / "p001.png").write_bytes(b"this is not a png")           # corrupt
    (data / "vis" / "p002.png").unlink()                                    # missing partner
    cv2.imwrite(str(data / "vis" / "p004.png"), np.zeros((30, 48), np.uint8))  # size mismatch
    cv2.imwrite(str(data / "ir" / "tiny.png"), np.zeros((6, 6), np.uint8))     # too small
    cv2.imwrite(str(data / "vis" / "tiny.png"), np.zeros((6, 6), np.uint8))
    cv2.imwrite(str(data / "ir" / "p005.jpg"), np.zeros((40, 48), np.uint8))  # ambiguous stem
    out = tmp_path / "out"
    result = runner.invoke(app, ["batch", str(data), "-o", str(out), "-m", "auif", "-c", str(ckpt), "-d", "cpu"])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    assert "2 fused" in text and "5 problem(s)" in text
    assert "p001 (failed): cannot read image" in text and "p001.png" in text
    assert "p002 (unmatched): missing partner" in text
    assert "p004 (failed): size mismatch" in text and "--resize-to" in text
    assert "tiny (failed)" in text and "at least" in text
    assert "p005 (unmatched): several files have the stem 'p005' in ir/ (p005.jpg, p005.png)" in text
    assert sorted(_outputs(out)) == ["p000.png", "p003.png"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"] == {"pairs": 7, "fused": 2, "skipped": 0, "failed": 3, "unmatched": 2}
    assert [p["inputs"] for p in manifest["pairs"] if p["stem"] == "p005"] == [
        ["ir/p005.jpg", "ir/p005.png", "vis/p005.png"]]

    # --resize-to resamples the named side's partner; the mismatch is fused on the rerun
    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "out2"), "-m", "auif", "-c", str(ckpt), "-d", "cpu",
                                 "--resize-to", "vis", "-q"])
    assert result.exit_code == 1
    assert cv2.imread(str(tmp_path / "out2" / "p004.png")).shape[:2] == (30, 48)


@pytest.mark.slow
def test_kill_mid_run_leaves_only_complete_files_and_rerun_completes(tmp_path, ckpt, net):
    data = _make_dataset(tmp_path / "data", n=24, size=(160, 128))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "fusecli", "batch", str(data), "-o", str(out), "-m", "auif", "-c", str(ckpt),
               "-d", "cpu", "-j", "1", "-q"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while not any(out.glob("p*.png")) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    partial = _outputs(out)
    assert 0 < len(partial) < 24, f"the kill came too late or too early ({len(partial)} outputs)"
    for name in partial:  # every output there is complete
        image = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert image is not None and image.shape[:2] == (128, 160), name

    rerun = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    complete = _outputs(out)
    assert len(complete) == 24 and not list(out.glob(".*.tmp"))
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["finished"] and manifest["summary"]["skipped"] == len(partial)
    # the set equals one uninterrupted run (= fuse on each pair)
    reference = run_batch(data, tmp_path / "ref", net)
    assert reference.ok and _outputs(tmp_path / "ref") == complete


def test_shard_runs_and_merged_manifest(tmp_path, ckpt):
    data = _make_dataset(tmp_path / "data", n=12)
    out = tmp_path / "out"
    base = ["batch", str(data), "-o", str(out), "-m", "auif", "-c", str(ckpt), "-d", "cpu", "-q"]
    for i in range(2):
        assert runner.invoke(app, base + ["--shard", f"{i}/3"]).exit_code == 0
    result = runner.invoke(app, ["batch", "--merge-manifests", "-o", str(out)])
    assert result.exit_code == 1 and "2/3" in result.output  # shard 2 has not run
    result = runner.invoke(app, base + ["--shard", "auto"],
                           env={"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_MIN": "1",
                                "SLURM_ARRAY_TASK_MAX": "3", "SLURM_ARRAY_TASK_COUNT": "3"})
    assert result.exit_code == 0, result.output
    stems = []
    for i in range(3):
        shard = json.loads((out / f"manifest.shard-{i}-of-3.json").read_text())
        stems += [p["stem"] for p in shard["pairs"]]
        assert shard["shard"] == f"{i}/3" and all(p["status"] == "fused" for p in shard["pairs"])
    assert sorted(stems) == [f"p{i:03d}" for i in range(12)]  # every pair exactly once
    result = runner.invoke(app, ["batch", "--merge-manifests", "-o", str(out)])
    assert result.exit_code == 0, result.output
    merged = json.loads((out / "manifest.json").read_text())
    assert merged["summary"] == {"pairs": 12, "fused": 12} and merged["missing_shards"] == []
    assert merged["merged_from"] == ["0/3", "1/3", "2/3"] and merged["finished"]
    assert merge_manifests(out)["summary"]["pairs"] == 12
    assert len(_outputs(out)) == 12


def test_batch_size_groups_equal_sizes_within_one_grey_level(tmp_path, net):
    data = _make_dataset(tmp_path / "data", n=8, size=(64, 48))
    one = run_batch(data, tmp_path / "one", net)
    four = run_batch(data, tmp_path / "four", net, batch_size=4)
    assert one.ok and four.ok
    differing = 0
    for name in _outputs(tmp_path / "one"):
        a = cv2.imread(str(tmp_path / "one" / name), cv2.IMREAD_UNCHANGED).astype(int)
        b = cv2.imread(str(tmp_path / "four" / name), cv2.IMREAD_UNCHANGED).astype(int)
        assert np.abs(a - b).max() <= 1
        differing += int((a != b).sum())
    assert differing <= 8 * 64 * 48 * 3 * 1e-3


def test_option_errors_are_one_line(tmp_path, ckpt):
    data = _make_dataset(tmp_path / "data", n=1)
    cases = [
        (["batch", str(data)], "-o OUT"),
        (["batch", str(data), "-o", str(data / "vis")], "role folders"),
        (["batch", str(data), "-o", str(tmp_path / "o"), "--ir", "ir"], "both role folders"),
        (["batch", str(data), "-o", str(tmp_path / "o"), "--ext", "gif"], "--ext"),
        (["batch", str(data), "-o", str(tmp_path / "o"), "--ext", "jpg", "--bit-depth", "16"], "8-bit"),
        (["batch", str(data), "-o", str(tmp_path / "o"), "--shard", "3/3"], "--shard"),
        (["batch", str(tmp_path), "-o", str(tmp_path / "o")], "no known role folders"),
        (["batch", "--merge-manifests", "-o", str(tmp_path)], "no shard manifests"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args + ["-m", "auif", "-c", str(ckpt)])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_devices_without_cuda_is_a_clear_error(tmp_path, ckpt):
    with pytest.raises(DeviceError, match="no CUDA GPU"):
        parse_devices("0,1")
    assert [str(d) for d in parse_devices(None, "cpu")] == ["cpu"]
    data = _make_dataset(tmp_path / "data", n=1)
    result = runner.invoke(app, ["batch", str(data), "-o", str(tmp_path / "o"), "-m", "auif", "-c", str(ckpt), "--devices", "0,1"])
    assert result.exit_code == 1 and "--devices 0,1: no CUDA GPU" in result.output


def test_medical_layout_batch(tmp_path, net):
    data = _make_dataset(tmp_path / "data", n=3, roles=("ct", "mri"), colour_every=99)
    result = run_batch(data, tmp_path / "out", net)
    assert result.ok and result.roles == ("ct", "mri")
    rec = result.records[0]
    assert rec.inputs == ["ct/p000.png", "mri/p000.jpg"]
    fuse_files(net, [data / "ct" / "p000.png", data / "mri" / "p000.jpg"], tmp_path / "one.png")
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "out" / "p000.png").read_bytes()


def test_several_model_copies_share_the_work(tmp_path, net, monkeypatch):
    """The multi-GPU path (one compute thread per model copy), run with two CPU copies."""
    import copy

    import fusecli.batch as batch_module

    data = _make_dataset(tmp_path / "data", n=8)
    used = []
    original = batch_module._fuse_group

    def spy(model, items, *args):
        used.append(id(model))
        return original(model, items, *args)

    monkeypatch.setattr(batch_module, "_fuse_group", spy)
    result = run_batch(data, tmp_path / "two", [net, copy.deepcopy(net)], workers=2)
    assert result.ok and len(used) == 8
    assert len(set(used)) == 2  # both copies got work
    run_batch(data, tmp_path / "one", net)
    assert _outputs(tmp_path / "two") == _outputs(tmp_path / "one")
