"""Video fusion (`fusecli fuse ir.avi vis.avi -o fused.mp4`, :mod:`fusecli.video`).

Streams are generated in the tests: MJPG .avi (which the headless OpenCV wheel writes) and PNG frame
sequences. The ``average`` rule (no weights) keeps them fast; the colour path is the one of ``fuse``.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fusecli import create_model, fuse_files, fuse_images, read_image
from fusecli.cli import app
from fusecli.errors import ConfigError, ImageWriteError, ShapeError
from fusecli.models.classical import AverageFusion
from fusecli.video import FrameReader, fuse_videos, is_video_path

runner = CliRunner()


def _frames(n: int, size=(64, 48), seed=0):
    """n (gray IR, colour BGR visible) uint8 frame pairs with some structure."""
    rng = np.random.default_rng(seed)
    w, h = size
    for i in range(n):
        ir = cv2.GaussianBlur(rng.integers(0, 256, (h, w), dtype=np.uint8), (7, 7), 0)
        vis = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)
        vis[: h // 2, :, 2] = 220  # a red half: the visible stream is clearly in colour
        yield ir, vis


def _write_avi(path: Path, frames, fps: float, colour: bool) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h), isColor=colour)
    assert writer.isOpened()
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def _videos(root: Path, n: int = 12, size=(64, 48), ir_fps=10.0, vis_fps=12.5, n_vis=None, vis_size=None):
    root.mkdir(parents=True, exist_ok=True)
    pairs = list(_frames(max(n, n_vis or 0), size))
    ir = _write_avi(root / "ir.avi", [p[0] for p in pairs[:n]], ir_fps, colour=False)
    vis_frames = [p[1] for p in pairs[:n_vis or n]]
    if vis_size is not None:
        vis_frames = [cv2.resize(f, vis_size) for f in vis_frames]
    vis = _write_avi(root / "vis.avi", vis_frames, vis_fps, colour=True)
    return ir, vis


def _sequences(root: Path, n: int = 6, first: int = 1):
    (root / "ir").mkdir(parents=True)
    (root / "vis").mkdir(parents=True)
    for i, (ir, vis) in enumerate(_frames(n), start=first):
        cv2.imwrite(str(root / "ir" / f"{i:04d}.png"), ir)
        cv2.imwrite(str(root / "vis" / f"{i:04d}.png"), vis)
    return root / "ir" / "%04d.png", root / "vis" / "%04d.png"


def _read_all(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


@pytest.fixture(scope="module")
def model():
    return create_model("average", device="cpu")


class _Failing(AverageFusion):
    """The average rule, raising ``error`` on its ``after``-th call (an interruption mid-video)."""

    def __init__(self, error: BaseException, after: int):
        super().__init__()
        self.error, self.after, self.calls = error, after, 0

    def forward(self, a, b):
        self.calls += 1
        if self.calls >= self.after:
            raise self.error
        return super().forward(a, b)


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# --- detection ----------------------------------------------------------------------------------------

def test_is_video_path():
    assert is_video_path("a.mp4") and is_video_path("x/A.AVI") and is_video_path("ir/%05d.png")
    assert not is_video_path("a.png") and not is_video_path("dir%/a.png")


# --- fusing -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".mp4", ".avi"])
def test_video_frames_rate_size_and_colour(model, tmp_path, suffix):
    ir, vis = _videos(tmp_path, n=12)
    out = tmp_path / f"fused{suffix}"
    result = fuse_videos(model, ir, vis, out, batch_size=4)
    frames, fps = _read_all(out)
    assert (result.frames, len(frames)) == (12, 12)
    assert fps == pytest.approx(12.5) and result.fps == pytest.approx(12.5)  # the visible stream's rate
    assert frames[0].shape == (48, 64, 3) and result.channels == 3
    # the same pixels as fuse_images on the decoded frames (up to the output codec's loss)
    ir_frames, vis_frames = (list(FrameReader(p)) for p in (ir, vis))
    assert ir_frames[0].shape[1] == 1 and vis_frames[0].shape[1] == 3  # gray IR, colour visible
    expected = fuse_images(model, [ir_frames[5], vis_frames[5]])[0].permute(1, 2, 0).numpy()[:, :, ::-1] * 255
    assert np.abs(frames[5].astype(float) - expected).mean() < 8
    # colour kept: the red half of the visible stream is red in the fused video
    top = frames[5][:20].reshape(-1, 3).mean(0)
    assert top[2] > top[1] + 40


def test_sequence_frames_equal_fuse_on_each_pair(model, tmp_path):
    ir, vis = _sequences(tmp_path / "data", n=6, first=1)
    result = fuse_videos(model, ir, vis, tmp_path / "out" / "%05d.png", batch_size=4)
    assert result.frames == 6
    names = sorted(_entries(tmp_path / "out"))
    assert names == [f"{i:05d}.png" for i in range(1, 7)]  # numbered like the input frames
    for i in (1, 4, 6):
        fuse_files(model, [ir.parent / f"{i:04d}.png", vis.parent / f"{i:04d}.png"], tmp_path / "one.png")
        got, _ = read_image(tmp_path / "out" / f"{i:05d}.png")
        want, _ = read_image(tmp_path / "one.png")
        assert torch.equal(got, want)


def test_16bit_sequence_frames_equal_fuse(model, tmp_path):
    """Raw 14-bit thermal frames in 16-bit PNGs: each fused frame is what fuse makes of its pair
    (the default stretch applied per frame), with one note."""
    (tmp_path / "ir").mkdir()
    (tmp_path / "vis").mkdir()
    for i, (ir, vis) in enumerate(_frames(3)):
        cv2.imwrite(str(tmp_path / "ir" / f"{i}.png"), (ir.astype(np.uint16) * 40 + 3000))
        cv2.imwrite(str(tmp_path / "vis" / f"{i}.png"), vis)
    result = fuse_videos(model, tmp_path / "ir" / "%d.png", tmp_path / "vis" / "%d.png", tmp_path / "f" / "%d.png")
    assert result.frames == 3 and len(result.notes) == 1 and "16-bit" in result.notes[0]
    fuse_files(model, [tmp_path / "ir" / "2.png", tmp_path / "vis" / "2.png"], tmp_path / "one.png")
    assert torch.equal(read_image(tmp_path / "f" / "2.png")[0], read_image(tmp_path / "one.png")[0])


def test_batch_size_does_not_change_the_frames(model, tmp_path):
    ir, vis = _sequences(tmp_path / "data", n=7)
    fuse_videos(model, ir, vis, tmp_path / "b1" / "%03d.png", batch_size=1)
    fuse_videos(model, ir, vis, tmp_path / "b3" / "%03d.png", batch_size=3)
    for name in _entries(tmp_path / "b1"):
        assert torch.equal(read_image(tmp_path / "b1" / name)[0], read_image(tmp_path / "b3" / name)[0])


def test_sequence_without_frame_rate_gets_default_or_fps(model, tmp_path):
    ir, vis = _sequences(tmp_path / "data", n=3)
    result = fuse_videos(model, ir, vis, tmp_path / "a.avi")
    assert result.fps == 25 and any("frame rate" in n for n in result.notes)
    result = fuse_videos(model, ir, vis, tmp_path / "b.avi", fps=7.5)
    assert _read_all(tmp_path / "b.avi")[1] == pytest.approx(7.5) and not result.notes


# --- mismatched streams -----------------------------------------------------------------------------

def test_different_lengths_refused_nothing_written(model, tmp_path):
    ir, vis = _videos(tmp_path, n=8, n_vis=10)
    before = _entries(tmp_path)
    with pytest.raises(ShapeError, match="differ in length"):
        fuse_videos(model, ir, vis, tmp_path / "fused.mp4")
    assert _entries(tmp_path) == before


def test_stream_ending_early_found_while_streaming(model, tmp_path, monkeypatch):
    """Containers may not say their length: a stream that runs out mid-way is an error, no output."""
    ir, vis = _videos(tmp_path, n=8, n_vis=11)
    import fusecli.video as video

    real = video.FrameReader._open_video

    def no_count(self):
        info = real(self)
        return video.StreamInfo(info.path, info.kind, info.width, info.height, info.fps, None)

    monkeypatch.setattr(video.FrameReader, "_open_video", no_count)
    before = _entries(tmp_path)
    with pytest.raises(ShapeError, match="ir.avi ends after 8 frames"):
        fuse_videos(model, ir, vis, tmp_path / "fused.avi", batch_size=3)
    assert _entries(tmp_path) == before


def test_different_frame_sizes_refused_or_resized(model, tmp_path):
    ir, vis = _videos(tmp_path, n=4, vis_size=(96, 72))
    with pytest.raises(ShapeError, match="resize-to"):
        fuse_videos(model, ir, vis, tmp_path / "fused.avi")
    result = fuse_videos(model, ir, vis, tmp_path / "fused.avi", resize_to="vis")
    frames, _ = _read_all(tmp_path / "fused.avi")
    assert (result.width, result.height) == (96, 72) and frames[0].shape == (72, 96, 3) and len(frames) == 4
    result = fuse_videos(model, ir, vis, tmp_path / "small.avi", resize_to="ir")
    assert _read_all(tmp_path / "small.avi")[0][0].shape == (48, 64, 3)


# --- interruption and overwriting -------------------------------------------------------------------

@pytest.mark.parametrize("error", [KeyboardInterrupt(), RuntimeError("boom")])
@pytest.mark.parametrize("output", ["fused.mp4", "frames/%05d.png"])
def test_interrupted_leaves_nothing_half_written(tmp_path, error, output):
    ir, vis = _videos(tmp_path / "in", n=10)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "frames").mkdir()
    with pytest.raises(type(error)):
        fuse_videos(_Failing(error, after=3), ir, vis, out_dir / output, batch_size=2)
    assert _entries(out_dir) == {"frames"} and _entries(out_dir / "frames") == set()


def test_failed_run_keeps_the_old_output(model, tmp_path):
    ir, vis = _videos(tmp_path, n=6)
    out = tmp_path / "fused.avi"
    fuse_videos(model, ir, vis, out)
    old = out.read_bytes()
    with pytest.raises(KeyboardInterrupt):
        fuse_videos(_Failing(KeyboardInterrupt(), after=2), ir, vis, out)
    assert out.read_bytes() == old
    assert sorted(_entries(tmp_path)) == ["fused.avi", "ir.avi", "vis.avi"]


def test_output_that_is_an_input_is_refused(model, tmp_path):
    ir, vis = _videos(tmp_path / "v", n=3)
    for out in (ir, tmp_path / "v" / "." / "vis.avi"):
        with pytest.raises(ImageWriteError, match="one of the inputs"):
            fuse_videos(model, ir, vis, out)
    sir, svis = _sequences(tmp_path / "s", n=3)
    with pytest.raises(ImageWriteError, match="folder of the input frames"):
        fuse_videos(model, sir, svis, svis.parent / "f%03d.png")
    assert sorted(_entries(svis.parent)) == ["0001.png", "0002.png", "0003.png"]


def test_bad_options(model, tmp_path):
    ir, vis = _videos(tmp_path, n=2)
    with pytest.raises(ImageWriteError, match="use .mp4"):
        fuse_videos(model, ir, vis, tmp_path / "x.gif")
    with pytest.raises(ImageWriteError, match="videos are 8-bit"):
        fuse_videos(model, ir, vis, tmp_path / "x.mp4", bit_depth=16)
    with pytest.raises(ConfigError, match="batch-size"):
        fuse_videos(model, ir, vis, tmp_path / "x.mp4", batch_size=0)
    with pytest.raises(ConfigError, match="exactly one frame number"):
        fuse_videos(model, tmp_path / "%d_%d.png", vis, tmp_path / "x.mp4")
    (tmp_path / "gap").mkdir()
    for i in (0, 1, 3):
        cv2.imwrite(str(tmp_path / "gap" / f"{i}.png"), np.zeros((8, 8), np.uint8))
    with pytest.raises(Exception, match="gap: 2.png is missing"):
        fuse_videos(model, tmp_path / "gap" / "%d.png", vis, tmp_path / "x.mp4")


# --- memory ------------------------------------------------------------------------------------------

def test_streams_are_not_read_ahead(model, tmp_path, monkeypatch):
    """Frames are fused and written while the video is read: at any write, at most one batch of each
    stream has been decoded beyond what was written (memory flat in the video's length)."""
    import fusecli.video as video

    ir, vis = _videos(tmp_path, n=40)
    decoded = {"n": 0}
    lags = []
    real_raw = video.FrameReader._raw

    def counting_raw(self):
        for frame in real_raw(self):
            decoded["n"] += 1
            yield frame

    real_write = video.VideoWriterSink.write

    def watching_write(self, frame):
        lags.append(decoded["n"] - 2 * self.frames)
        real_write(self, frame)

    monkeypatch.setattr(video.FrameReader, "_raw", counting_raw)
    monkeypatch.setattr(video.VideoWriterSink, "write", watching_write)
    fuse_videos(model, ir, vis, tmp_path / "fused.avi", batch_size=5)
    assert len(lags) == 40 and max(lags) <= 2 * 5


# VmHWM, not ru_maxrss: Linux carries ru_maxrss over exec from the forking parent (this test process)
_RSS_SCRIPT = textwrap.dedent("""
    import re, sys
    import torch
    torch.set_num_threads(1)
    from fusecli import create_model
    from fusecli.video import fuse_videos
    ir, vis, out = sys.argv[1:4]
    fuse_videos(create_model("average", device="cpu"), ir, vis, out, batch_size=4)
    print(re.search(r"VmHWM:\\s*(\\d+) kB", open("/proc/self/status").read()).group(1))
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from Linux's /proc")
def test_peak_memory_flat_in_video_length(tmp_path):
    """400 frames of 160x120 cost no more peak memory than 100 (holding the video as decoded would
    add 300 frames x (57 KB + 77 KB) = 40 MB, as float32 tensors over 100 MB)."""
    peaks = {}
    for n in (100, 400):
        ir, vis = _videos(tmp_path / str(n), n=n, size=(160, 120))
        run = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(ir), str(vis), str(tmp_path / f"{n}.avi")],
                             capture_output=True, text=True, timeout=600, env={"OMP_NUM_THREADS": "1",
                                                                               "PATH": "/usr/bin:/bin"})
        assert run.returncode == 0, run.stderr
        peaks[n] = int(run.stdout.split()[-1]) / 1024  # MiB
        assert len(_read_all(tmp_path / f"{n}.avi")[0]) == n
    assert peaks[400] - peaks[100] < 16, peaks


# --- command line ------------------------------------------------------------------------------------

def test_cli_video_and_one_line_errors(tmp_path):
    ir, vis = _videos(tmp_path, n=5)
    result = runner.invoke(app, ["fuse", "-m", "average", str(ir), str(vis), "-o", str(tmp_path / "f.mp4"),
                                 "--batch-size", "2", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "5 frames" in result.output and len(_read_all(tmp_path / "f.mp4")[0]) == 5
    ir2, _ = _videos(tmp_path / "long", n=7)
    cases = [
        [str(ir2), str(vis), "-o", str(tmp_path / "g.mp4")],          # lengths differ
        [str(ir), str(vis), "-o", str(tmp_path / "g.png")],           # image output for videos
        [str(ir), str(vis), "-o", str(vis)],                          # output = input
        [str(tmp_path / "nope.mp4"), str(vis), "-o", str(tmp_path / "g.mp4")],
        [str(ir), str(vis), "-o", str(tmp_path / "g.mp4"), "--device", "banana"],
    ]
    for args in cases:
        result = runner.invoke(app, ["fuse", "-m", "average", *args])
        assert result.exit_code == 1, (args, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, result.output)
    assert not (tmp_path / "g.mp4").exists() and not (tmp_path / "g.png").exists()


def test_cli_video_options_need_videos(tmp_path):
    from .conftest import SAMPLES

    result = runner.invoke(app, ["fuse", "-m", "average", str(SAMPLES / "ir.png"), str(SAMPLES / "vis.png"),
                                 "-o", str(tmp_path / "f.png"), "--batch-size", "4"])
    assert result.exit_code == 1 and "videos only" in result.output
