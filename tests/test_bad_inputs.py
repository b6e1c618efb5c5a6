"""The bad-input corpus: every subcommand, given a mistake a user makes, answers with one red line
and exit code 1 (2 for a command-line usage error that typer catches), writes nothing, and leaves
its inputs as they were.

Each case runs the CLI in-process (``typer.testing.CliRunner``) in a small world of tiny images
made in ``tmp_path``; the whole world is hashed before and after. Add the next command's mistakes
to :data:`CASES`.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from fusecli.cli import app

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "weights"
runner = CliRunner()
S = 32  # side of the test images: above AUIF's 10 px minimum, quick to fuse


# --- the world -------------------------------------------------------------------------------------------

class _Pwn:
    """Unpickling this calls ``open(path, "w")``: it creates a file, proof that code ran."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _bomb() -> bytes:
    """A PNG whose header says 30000 x 30000 (a few hundred bytes; refused from the header)."""
    ihdr = struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(bytes(64)))
            + _png_chunk(b"IEND", b""))


def _gray(seed: int, h: int = S, w: int = S, dtype=np.uint8) -> np.ndarray:
    top = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, top + 1, (h, w), dtype=dtype)


def _write(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, array)
    assert ok
    path.write_bytes(data.tobytes())
    return path


def build_world(root: Path) -> None:
    """Tiny inputs, good and bad, under ``root`` (the working folder of every case)."""
    _write(root / "a.png", _gray(1))
    _write(root / "b.png", _gray(2))
    _write(root / "c.png", np.stack([_gray(3), _gray(4), _gray(5)], axis=-1))  # colour
    _write(root / "big.png", _gray(6, S, S + 8))  # another size
    _write(root / "tiny.png", _gray(7, 6, 6))  # below AUIF's minimum
    _write(root / "a16.png", _gray(8, dtype=np.uint16))
    _write(root / "float.tif", np.random.default_rng(9).random((S, S), dtype=np.float32))
    import tifffile  # imageio's TIFF plugin: writes 5 samples per pixel, which OpenCV cannot

    tifffile.imwrite(root / "five.tif", np.random.default_rng(10).integers(0, 255, (S, S, 5), dtype=np.uint8),
                     photometric="minisblack", planarconfig="contig")
    (root / "empty.png").write_bytes(b"")
    (root / "dir.png").mkdir()
    (root / "text.png").write_text("this is not an image\nsecond line\n")
    (root / "notes.txt").write_text("a text file\n")
    png = (root / "a.png").read_bytes()
    (root / "trunc.png").write_bytes(png[: len(png) // 2])
    jpg = cv2.imencode(".jpg", np.stack([_gray(3)] * 3, axis=-1))[1].tobytes()
    (root / "trunc.jpg").write_bytes(jpg[: len(jpg) // 2])
    (root / "anim.gif").write_bytes(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    (root / "bomb.png").write_bytes(_bomb())
    (root / "link.png").symlink_to(root / "a.png")
    os.link(root / "a.png", root / "hard.png")
    # datasets: one good pair; one pair of mismatched sizes; no roles at all
    for role, seed in (("ir", 11), ("vis", 12)):
        _write(root / "data" / role / "0001.png", _gray(seed))
    _write(root / "mis" / "ir" / "0001.png", _gray(13))
    _write(root / "mis" / "vis" / "0001.png", _gray(14, S, S + 8))
    (root / "noroles").mkdir()
    _write(root / "noroles" / "sub" / "x.png", _gray(15))
    _write(root / "fused" / "0001.png", _gray(16))
    _write(root / "fused16" / "0001.png", _gray(17, dtype=np.uint16))
    (root / "nofused").mkdir()
    # checkpoints and cards: malicious, foreign and broken
    with open(root / "evil.pth", "wb") as f:
        pickle.dump({"state_dict": _Pwn(str(root / "PWNED"))}, f)
    with open(root / "evil2.pth", "wb") as f:  # protocol 2, as torch writes: a GLOBAL the unpickler refuses
        pickle.dump({"state_dict": _Pwn(str(root / "PWNED"))}, f, protocol=2)
    torch.save({"state_dict": _Pwn(str(root / "PWNED"))}, root / "evil_zip.pt")  # torch's zip format
    (root / "evil.yaml").write_text("name: !!python/object/apply:builtins.open ['PWNED', 'w']\n"
                                    "model: auif\nfile: x.safetensors\nsha256: '0'\n")
    (root / "cards").mkdir()
    (root / "cards" / "evil.yaml").write_text((root / "evil.yaml").read_text())
    save_file({"nothing.weight": torch.zeros(3)}, str(root / "foreign.safetensors"))
    (root / "junk.safetensors").write_bytes(b"\x00" * 64)
    (root / "junk.pth").write_bytes(b"not a checkpoint at all")
    (root / "run").mkdir()
    with open(root / "run" / "last.pt", "wb") as f:
        pickle.dump({"step": _Pwn(str(root / "PWNED"))}, f)


def snapshot(root: Path) -> dict[str, str]:
    """Every entry under ``root``: files by content hash, links by target, folders by name."""
    state = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            key = str(path.relative_to(root))
            if path.is_symlink():
                state[key] = "-> " + os.readlink(path)
            elif path.is_dir():
                state[key] = "dir"
            else:
                state[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return state


# --- the cases -----------------------------------------------------------------------------------------

def case(cid: str, args: str, match: str = "", code: int = 1, *, env: dict[str, str] | None = None,
         xfail: str | None = None, strict: bool = True):
    """One bad input: ``args`` (split on spaces; ``{root}`` is the world's absolute path), the text the
    error line must contain (case-insensitive), the exit code."""
    marks = [pytest.mark.xfail(strict=strict, reason=xfail)] if xfail else []
    return pytest.param(args, match, code, env or {}, id=cid, marks=marks)


CASES = [
    # ---- fuse: the inputs
    case("fuse-missing-file", "fuse missing.png b.png -o out.png", "missing.png"),
    case("fuse-missing-second", "fuse a.png missing.png -o out.png", "does not exist"),
    case("fuse-dir-as-file", "fuse dir.png b.png -o out.png", "folder"),
    case("fuse-empty-file", "fuse empty.png b.png -o out.png", "empty"),
    case("fuse-text-as-png", "fuse text.png b.png -o out.png", "not a PNG, JPEG, BMP or TIFF"),
    case("fuse-text-file", "fuse a.png notes.txt -o out.png", "notes.txt"),
    case("fuse-truncated-png", "fuse trunc.png b.png -o out.png", "trunc.png"),
    case("fuse-truncated-jpeg", "fuse trunc.jpg b.png -o out.png", "trunc.jpg"),
    case("fuse-gif", "fuse anim.gif b.png -o out.png", "anim.gif"),
    case("fuse-float-tiff", "fuse float.tif b.png -o out.png", "float32"),
    case("fuse-five-channels", "fuse five.tif b.png -o out.png", "five.tif"),
    case("fuse-mismatched-sizes", "fuse a.png big.png -o out.png", "differ in size"),
    case("fuse-too-small", "fuse tiny.png tiny.png -o out.png", "at least"),
    case("fuse-one-input", "fuse a.png -o out.png", "2 images"),
    case("fuse-three-inputs", "fuse a.png b.png c.png -o out.png", "2 images"),
    case("fuse-oversize-header", "fuse bomb.png b.png -o out.png", "30000x30000"),
    case("fuse-oversize-low-limit", "fuse a.png b.png -o out.png --max-pixels 100", "--max-pixels"),
    case("fuse-max-pixels-negative", "fuse a.png b.png -o out.png --max-pixels -1", code=2),
    case("fuse-no-inputs", "fuse -o out.png", code=2),
    case("fuse-no-output", "fuse a.png b.png", code=2),
    # ---- fuse: the output
    case("fuse-out-is-input", "fuse a.png b.png -o a.png", "input"),
    case("fuse-out-is-second-input", "fuse a.png b.png -o b.png", "input"),
    case("fuse-out-dot-slash", "fuse a.png b.png -o ./a.png", "input"),
    case("fuse-out-absolute", "fuse a.png b.png -o {root}/a.png", "input"),
    case("fuse-out-dotdot", "fuse a.png b.png -o data/../a.png", "input"),
    case("fuse-out-symlink", "fuse a.png b.png -o link.png", "input"),
    case("fuse-out-hardlink", "fuse a.png b.png -o hard.png", "input"),
    case("fuse-in-via-symlink", "fuse link.png b.png -o a.png", "input"),
    case("fuse-out-under-file", "fuse a.png b.png -o a.png/out.png", "a.png"),
    case("fuse-out-is-dir", "fuse a.png b.png -o data", "extension"),
    case("fuse-out-bad-ext", "fuse a.png b.png -o out.gif", "extension"),
    case("fuse-out-no-ext", "fuse a.png b.png -o out", "extension"),
    case("fuse-jpeg-16bit", "fuse a.png b.png -o out.jpg --bit-depth 16", "8-bit"),
    case("fuse-bit-depth-12", "fuse a.png b.png -o out.png --bit-depth 12", "8 or 16"),
    # ---- fuse: the options
    case("fuse-unknown-model", "fuse a.png b.png -o out.png -m aiuf", "Did you mean 'auif'"),
    case("fuse-unknown-device", "fuse a.png b.png -o out.png -d banana", "unknown device"),
    case("fuse-cuda-index", "fuse a.png b.png -o out.png -d cuda:99", "cuda"),
    case("fuse-unknown-fusion", "fuse a.png b.png -o out.png -m auif --fusion nope", "nope"),
    case("fuse-unknown-weights", "fuse a.png b.png -o out.png --weights nope", "nope"),
    case("fuse-tile-negative", "fuse a.png b.png -o out.png --tile -5", "tile"),
    case("fuse-tile-below-min", "fuse a.png b.png -o out.png --tile 4", "tile"),
    case("fuse-overlap-negative", "fuse a.png b.png -o out.png --tile 16 --overlap -3", "overlap"),
    case("fuse-overlap-above-tile", "fuse a.png b.png -o out.png -m laplacian --tile 16 --overlap 40", "overlap"),
    case("fuse-tile-not-a-number", "fuse a.png b.png -o out.png --tile big", code=2),
    case("fuse-unknown-option", "fuse a.png b.png -o out.png --colour", code=2),
    # ---- fuse: checkpoints and cards
    case("fuse-ckpt-missing", "fuse a.png b.png -o out.png -c nowhere.pth", "does not exist"),
    case("fuse-ckpt-malicious-pickle", "fuse a.png b.png -o out.png -c evil.pth", "evil.pth"),
    case("fuse-ckpt-malicious-pickle-v2", "fuse a.png b.png -o out.png -c evil2.pth", "could run code"),
    case("fuse-ckpt-malicious-torch-zip", "fuse a.png b.png -o out.png -c evil_zip.pt", "could run code"),
    case("fuse-ckpt-junk-pth", "fuse a.png b.png -o out.png -c junk.pth", "junk.pth"),
    case("fuse-ckpt-junk-safetensors", "fuse a.png b.png -o out.png -c junk.safetensors", "junk.safetensors"),
    case("fuse-ckpt-foreign-keys", "fuse a.png b.png -o out.png -m auif -c foreign.safetensors", "not an AUIF key"),
    case("fuse-ckpt-other-model", f"fuse a.png b.png -o out.png -m auif -c {SHIPPED}/derun.roadscene.safetensors",
         "not an AUIF key"),
    case("fuse-ckpt-empty-folder", "fuse a.png b.png -o out.png -c nofused", "no checkpoint"),
    case("fuse-card-unsafe-yaml", "fuse a.png b.png -o out.png -c evil.yaml", "evil.yaml"),
    case("fuse-weights-unsafe-yaml", "fuse a.png b.png -o out.png --weights evil", "evil",
         env={"FUSECLI_WEIGHTS": "{root}/cards"}),
    case("fuse-card-of-other-model", f"fuse a.png b.png -o out.png -c {SHIPPED}/derun.roadscene.yaml",
         "is for model 'derun'"),

    # ---- batch
    case("batch-missing-dataset", "batch nowhere -o out", "nowhere"),
    case("batch-dataset-is-file", "batch a.png -o out", "a.png"),
    case("batch-no-roles", "batch noroles -o out", "noroles"),
    case("batch-no-output", "batch data", "-o"),
    case("batch-no-dataset", "batch -o out", "DATASET"),
    case("batch-out-is-dataset", "batch data -o data", "dataset"),
    case("batch-out-is-role", "batch data -o data/ir", "role"),
    case("batch-out-is-role-dot", "batch data -o ./data/vis/", "role"),
    case("batch-out-is-role-absolute", "batch data -o {root}/data/ir", "role"),
    case("batch-out-under-file", "batch data -o a.png/out", "a.png"),
    case("batch-bad-ext", "batch data -o out --ext gif", "gif"),
    case("batch-jpeg-16bit", "batch data -o out --ext jpg --bit-depth 16", "8-bit"),
    case("batch-bit-depth-12", "batch data -o out --bit-depth 12", "8 or 16"),
    case("batch-batch-size-0", "batch data -o out -b 0", "batch-size"),
    case("batch-workers-0", "batch data -o out -j 0", "workers"),
    case("batch-shard-out-of-range", "batch data -o out --shard 3/2", "shard"),
    case("batch-shard-garbage", "batch data -o out --shard x", "shard"),
    case("batch-resize-to-unknown", "batch data -o out --resize-to thermal", "resize-to"),
    case("batch-unknown-model", "batch data -o out -m aiuf", "auif"),
    case("batch-unknown-device", "batch data -o out -d banana", "unknown device"),
    case("batch-devices-garbage", "batch data -o out --devices banana", "banana"),
    case("batch-one-role-flag", "batch data -o out --ir ir", "both role"),
    case("batch-unknown-roles", "batch data -o out --ir thermal --vis rgb", "thermal"),
    case("batch-ckpt-malicious", "batch data -o out -c evil.pth", "evil.pth"),
    case("batch-ckpt-foreign", "batch data -o out -m auif -c foreign.safetensors", "not an AUIF key"),
    case("batch-merge-with-dataset", "batch data -o out --merge-manifests", "merge-manifests"),
    case("batch-merge-nothing", "batch -o fused --merge-manifests", "shard"),
    case("batch-tile-negative", "batch data -o out --tile -5", "tile"),
    case("batch-max-pixels-negative", "batch data -o out --max-pixels -1", code=2),

    # ---- metrics
    case("metrics-missing-fused", "metrics nowhere --sources data", "nowhere"),
    case("metrics-missing-sources", "metrics fused --sources nowhere", "nowhere"),
    case("metrics-no-sources", "metrics fused", "--sources"),
    case("metrics-sources-no-roles", "metrics fused --sources noroles", "noroles"),
    case("metrics-nothing-matches", "metrics nofused --sources data", "matches"),
    case("metrics-unknown-metric", "metrics fused --sources data --metrics EN,NOPE", "NOPE"),
    case("metrics-unknown-convention", "metrics fused --sources data -C octave", "octave"),
    case("metrics-workers-0", "metrics fused --sources data -j 0", code=2),
    case("metrics-unknown-device", "metrics fused --sources data -d banana", "banana"),
    case("metrics-cuda-without-gpu", "metrics fused --sources data -d cuda:99", "cuda"),
    case("metrics-single-missing-vis", "metrics a.png --ir b.png", "--vis"),
    case("metrics-single-with-folder", "metrics fused --ir a.png --vis b.png", "single-image"),
    case("metrics-single-missing-file", "metrics missing.png --ir a.png --vis b.png", "missing.png"),
    case("metrics-single-dir-as-source", "metrics a.png --ir dir.png --vis b.png", "folder"),
    case("metrics-single-empty", "metrics a.png --ir empty.png --vis b.png", "empty"),
    case("metrics-single-text", "metrics a.png --ir text.png --vis b.png", "text.png"),
    case("metrics-single-truncated", "metrics a.png --ir trunc.png --vis b.png", "trunc.png"),
    case("metrics-single-mismatched", "metrics a.png --ir big.png --vis b.png", "same size"),
    case("metrics-single-16bit", "metrics a16.png --ir a.png --vis b.png", "allow-16bit"),
    case("metrics-single-oversize", "metrics a.png --ir bomb.png --vis b.png", "30000x30000"),
    case("metrics-csv-under-file", "metrics fused --sources data --csv a.png/m.csv", "a.png"),
    case("metrics-json-is-dir", "metrics fused --sources data --json data", "folder"),
    case("metrics-csv-is-input", "metrics fused --sources data --csv data/ir/0001.png", "input"),
    case("metrics-json-is-fused", "metrics fused --sources data --json fused/0001.png", "input"),
    case("metrics-csv-missing-folder", "metrics fused --sources data --csv nowhere/m.csv", "nowhere"),

    # ---- degrade
    case("degrade-missing-input", "degrade missing.png -o out.png -k haze -l 2", "missing.png"),
    case("degrade-empty-file", "degrade empty.png -o out.png -k haze -l 2", "empty"),
    case("degrade-text-as-png", "degrade text.png -o out.png -k haze -l 2", "text.png"),
    case("degrade-truncated", "degrade trunc.png -o out.png -k noise -l 2", "trunc.png"),
    case("degrade-not-an-image", "degrade notes.txt -o out.png -k haze -l 2", "not an image"),
    case("degrade-oversize", "degrade bomb.png -o out.png -k haze -l 2", "30000x30000"),
    case("degrade-unknown-kind", "degrade a.png -o out.png -k fog -l 2", "fog"),
    case("degrade-no-kind", "degrade a.png -o out.png -k , -l 2", "kind"),
    case("degrade-level-0", "degrade a.png -o out.png -k haze -l 0", "level"),
    case("degrade-level-6", "degrade a.png -o out.png -k haze -l 6", "level"),
    case("degrade-level-negative", "degrade a.png -o out.png -k haze -l -1", "level"),
    case("degrade-level-text", "degrade a.png -o out.png -k haze -l high", code=2),
    case("degrade-seed-negative", "degrade a.png -o out.png -k noise -l 2 --seed -1", "seed"),
    case("degrade-depth-garbage", "degrade a.png -o out.png -k haze -l 2 --depth nowhere", "depth"),
    case("degrade-role-unknown", "degrade data -o out -k haze -l 2 --role thermal", "thermal"),
    case("degrade-out-is-input", "degrade a.png -o a.png -k haze -l 2", "input"),
    case("degrade-out-dot-slash", "degrade a.png -o ./a.png -k haze -l 2", "input"),
    case("degrade-out-absolute", "degrade a.png -o {root}/a.png -k haze -l 2", "input"),
    case("degrade-out-symlink", "degrade a.png -o link.png -k haze -l 2", "input"),
    case("degrade-out-hardlink", "degrade a.png -o hard.png -k haze -l 2", "input"),
    case("degrade-dataset-into-itself", "degrade data -o data -k haze -l 2", "input"),
    case("degrade-dataset-into-role", "degrade data -o data/vis -k haze -l 2", "role"),
    case("degrade-folder-to-file", "degrade data/ir -o out.png -k haze -l 2", "folder"),
    case("degrade-out-under-file", "degrade b.png -o a.png/out.png -k haze -l 2", "a.png"),
    case("degrade-16bit-to-jpeg", "degrade a16.png -o out.jpg -k haze -l 2", "8-bit"),
    case("degrade-no-level", "degrade a.png -o out.png -k haze", code=2),

    # ---- robustness
    case("robustness-missing-dataset", "robustness nowhere -o rep", "nowhere"),
    case("robustness-no-roles", "robustness noroles -o rep", "noroles"),
    case("robustness-unknown-model", "robustness data -o rep -m aiuf", "auif"),
    case("robustness-unknown-kind", "robustness data -o rep -k fog", "fog"),
    case("robustness-levels-too-high", "robustness data -o rep -l 0-9", "level"),
    case("robustness-levels-garbage", "robustness data -o rep -l high", "level"),
    case("robustness-levels-backwards", "robustness data -o rep -l 5-1", "level"),
    case("robustness-limit-0", "robustness data -o rep -n 0", "limit"),
    case("robustness-unknown-metric", "robustness data -o rep --metrics NOPE", "NOPE"),
    case("robustness-unknown-device", "robustness data -o rep -d banana", "unknown device"),
    case("robustness-out-is-dataset", "robustness data -o data", "dataset"),
    case("robustness-out-is-role", "robustness data -o ./data/ir", "dataset"),
    case("robustness-out-under-file", "robustness data -o a.png/rep", "a.png"),
    case("robustness-ckpt-malicious", "robustness data -o rep -c evil.pth", "evil.pth"),
    case("robustness-ckpt-two-models-no-name", "robustness data -o rep -m auif,derun-admm -c evil.pth", "NAME=PATH"),
    case("robustness-seed-negative", "robustness data -o rep --seed -1", "seed"),
    case("robustness-unknown-convention", "robustness data -o rep --convention octave", "octave"),
    case("robustness-tile-negative", "robustness data -o rep --tile -5", "tile"),

    # ---- train
    case("train-unknown-model", "train aiuf --data data -o run2", "auif"),
    case("train-no-data", "train auif -o run2", "--data"),
    case("train-missing-data", "train auif --data nowhere -o run2", "nowhere"),
    case("train-data-is-file", "train auif --data a.png -o run2", "a.png"),
    case("train-data-without-images", "train auif --data nofused -o run2", "nofused"),
    case("train-bad-split", "train auif --data data -o run2 --split most", "split"),
    case("train-bad-option", "train auif --data data -o run2 --option halo", "KEY=NUMBER"),
    case("train-unknown-option-key", "train auif --data data -o run2 --option nope=1", "nope"),
    case("train-unknown-device", "train auif --data data -o run2 -d banana", "unknown device"),
    case("train-staged-flags-on-auif", "train auif --data data -o run2 --stages mfif", "--stages"),
    case("train-staged-with-data", "train frufn --data data -o run2", "--sharp-data"),
    case("train-init-missing", "train auif --data data -o run2 --init nowhere.pth", "nowhere.pth"),
    case("train-init-malicious", "train auif --data data -o run2 --init evil.pth", "evil.pth"),
    case("train-init-unsafe-card", "train auif --data data -o run2 --init evil.yaml", "evil.yaml"),
    case("train-resume-malicious", "train auif --data data -o run --resume --epochs 1", "last.pt"),
    case("train-out-under-file", "train auif --data data -o a.png/run", "a.png"),
    case("train-data-oversize", "train auif --data bombs -o run2", "30000x30000"),
    case("train-epochs-text", "train auif --data data -o run2 --epochs many", code=2),

    # ---- models
    case("models-extra-argument", "models auif", code=2),
    case("models-unknown-option", "models --yaml", code=2),

    # ---- the program itself
    case("unknown-command", "fusion a.png b.png", code=2),
]


@pytest.fixture
def world(tmp_path, monkeypatch):
    root = tmp_path / "world"
    root.mkdir()
    build_world(root)
    (root / "bombs").mkdir()
    (root / "bombs" / "x.png").write_bytes(_bomb())
    monkeypatch.chdir(root)
    monkeypatch.setenv("COLUMNS", "300")
    return root


def test_the_corpus_is_large():
    assert len(CASES) >= 100


@pytest.mark.parametrize(("args", "match", "code", "env"), CASES)
def test_bad_input(world, args, match, code, env):
    before = snapshot(world)
    argv = [a.replace("{root}", str(world)) for a in args.split()]
    with warnings.catch_warnings(record=True) as caught:  # a real process prints these on stderr
        warnings.simplefilter("always")
        result = runner.invoke(app, argv, env={k: v.replace("{root}", str(world)) for k, v in env.items()})
    output = result.output
    shown = [w for w in caught if not issubclass(w.category, (DeprecationWarning, PendingDeprecationWarning))]
    assert not shown, [f"{w.category.__name__}: {w.message}" for w in shown]
    assert result.exit_code == code, output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), (
        f"{type(result.exception).__name__}: {result.exception}")
    assert "Traceback" not in output
    assert not (world / "PWNED").exists(), "unpickling or YAML ran code"
    if code == 1:
        lines = [line for line in output.splitlines() if line.strip()]
        assert len(lines) == 1, output
        assert lines[0].startswith("error:"), output
        assert match.lower() in lines[0].lower(), output
    if code != 0:
        assert snapshot(world) == before  # nothing written, inputs unchanged


# --- per-pair failures of batch: recorded in the manifest, the other pairs fused, exit code 1 -------------------

PAIR_FAILURES = {
    "mismatched-sizes": ("mis", "size mismatch"),
    "truncated-png": ("trunc.png", "truncated"),
    "text-as-png": ("text.png", "not a PNG, JPEG, BMP or TIFF"),
    "empty-file": ("empty.png", "empty"),
    "oversize-header": ("bomb.png", "30000x30000"),
    "five-channels": ("five.tif", "expected 1 to 4 channels"),
    "float-tiff": ("float.tif", "float32"),
    "too-small": ("tiny.png", "at least"),
}


@pytest.mark.parametrize("name", sorted(PAIR_FAILURES))
def test_batch_records_a_bad_pair_and_fuses_the_rest(world, name):
    source, words = PAIR_FAILURES[name]
    dataset = world / "mis" if source == "mis" else world / "set"
    if source != "mis":  # pair 0001 good, pair 0002 the bad file on both sides
        for role in ("ir", "vis"):
            (dataset / role).mkdir(parents=True)
            (dataset / role / "0001.png").write_bytes((world / "data" / role / "0001.png").read_bytes())
            (dataset / role / f"0002{Path(source).suffix}").write_bytes((world / source).read_bytes())
    before = snapshot(dataset)
    result = runner.invoke(app, ["batch", str(dataset), "-o", str(world / "out"), "-q"])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and words.lower() in result.output.lower()
    pairs = {p["stem"]: p for p in json.loads((world / "out" / "manifest.json").read_text())["pairs"]}
    bad = "0001" if source == "mis" else "0002"
    assert pairs[bad]["status"] == "failed" and words.lower() in pairs[bad]["error"].lower()
    assert not (world / "out" / f"{bad}.png").exists()
    if source != "mis":
        assert pairs["0001"]["status"] == "fused" and (world / "out" / "0001.png").exists()
    assert snapshot(dataset) == before


# --- what the in-process runner cannot see ----------------------------------------------------------------------

@pytest.mark.slow
def test_a_malicious_checkpoint_is_one_stderr_line_in_a_real_process(world):
    """Python warnings (torch warns about the pickle protocol) reach a real process's stderr."""
    proc = subprocess.run([sys.executable, "-m", "fusecli", "fuse", "a.png", "b.png", "-o", "out.png", "-c",
                           "evil.pth"], cwd=world, capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "300", "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "evil.pth" in lines[0], proc.stderr
    assert not (world / "PWNED").exists() and not (world / "out.png").exists()


def _unwritable_for_root() -> Path | None:
    """A folder that refuses new entries even to root (sysfs), or None."""
    for folder in (Path("/sys/kernel"), Path("/sys")):
        try:
            (folder / "fusecli-probe").mkdir()
        except OSError:
            if folder.is_dir():
                return folder
        else:
            (folder / "fusecli-probe").rmdir()
    return None


@pytest.fixture
def read_only_folder(world):
    """``world/ro``: a folder the process may not write into. Root ignores permission bits, so for
    root ``ro`` is a link to a folder of a filesystem that refuses writes (sysfs)."""
    ro = world / "ro"
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        target = _unwritable_for_root()
        if target is None:
            pytest.skip("root, and no folder here refuses writes to root")
        ro.symlink_to(target, target_is_directory=True)
        yield ro
        return
    ro.mkdir()
    ro.chmod(0o555)
    yield ro
    ro.chmod(0o755)


@pytest.mark.parametrize("args", [["fuse", "a.png", "b.png", "-o", "ro/out.png"],
                                  ["degrade", "a.png", "-o", "ro/out.png", "-k", "noise", "-l", "1"],
                                  ["batch", "data", "-o", "ro/out"]])
def test_read_only_output_folder(world, read_only_folder, args):
    before = snapshot(world)
    result = runner.invoke(app, args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert snapshot(world) == before
