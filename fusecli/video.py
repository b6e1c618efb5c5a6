"""Fusing videos frame by frame: stream readers and writers, and :func:`fuse_videos`.

A *stream* is a video file that OpenCV's FFmpeg backend reads (``.mp4``, ``.avi``, ``.mov``,
``.mkv``, ...) or a frame sequence named by a printf pattern (``ir/%05d.png``: ``ir/00000.png``,
``ir/00001.png``, ...; any image format :func:`fusecli.io.read_image` reads, 16-bit included).
Each pair of frames goes through :func:`fusecli.inference.fuse_images`, the colour path of
``fusecli fuse``: a frame of a sequence fused alone is the same image ``fuse`` writes for it.

Memory stays flat in the video's length: frames are decoded, fused in batches of ``batch_size``
and written one batch at a time; nothing holds more than one batch.

Writes are atomic: a video is encoded into a hidden temporary file beside the output and renamed
onto it at the end; a frame sequence is written into a hidden temporary folder beside its frames
and moved into place at the end. An error or Ctrl-C removes the temporary file or folder, so
nothing half-written ever appears under the output's name.

Tensor contract: frames are (1, C, H, W) float32 tensors in [0, 1] (C = 1 gray, 3 RGB).
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from .errors import ConfigError, ImageReadError, ImageWriteError, ShapeError
from .inference import check_source_count, check_tiling, fuse_images, prepare_16bit, resolve_precision
from .io import IMAGE_EXTENSIONS, MAX_PIXELS, _same_file, read_image, write_image
from .models import device_of, spec_of
from .runs import resample, resize_index

__all__ = ["VIDEO_EXTENSIONS", "WRITE_CODECS", "DEFAULT_FPS", "StreamInfo", "VideoResult", "is_video_path",
           "is_sequence_pattern", "FrameReader", "open_stream", "VideoWriterSink", "SequenceSink", "open_sink",
           "fuse_videos"]

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".mts", ".m2ts", ".3gp", ".ogv")
"""Extensions (lower case) read as video files through ``cv2.VideoCapture`` (whatever its FFmpeg decodes)."""

WRITE_CODECS = {".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v", ".avi": "MJPG", ".mkv": "MJPG"}
"""Output video extensions and the FourCC each is encoded with (codecs OpenCV's wheels can write)."""

DEFAULT_FPS = 25.0
"""Frame rate of the output when no input stream has one (frame sequences)."""

#: the one printf conversion a frame pattern holds: %d, %5d, %05d
_PATTERN = re.compile(r"%(0?)(\d*)d")
#: a gray-looking colour video (R, G, B within this many levels everywhere in its first frame) is gray:
#: lossy codecs leave a level or two of chroma noise on gray content
_GRAY_TOLERANCE = 2

ProgressFn = Callable[[int, "int | None"], None]


def _pattern_match(path: str | os.PathLike[str]) -> re.Match[str] | None:
    """The %d conversion in the file name of ``path`` (not its folders), or None."""
    return _PATTERN.search(Path(path).name)


def is_sequence_pattern(path: str | os.PathLike[str]) -> bool:
    """True when the file name of ``path`` holds a ``%d``-style frame number (``ir/%05d.png``)."""
    return "%" in Path(path).name


def is_video_path(path: str | os.PathLike[str]) -> bool:
    """True for a video file name (see :data:`VIDEO_EXTENSIONS`) or a frame pattern (``%05d``)."""
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS or is_sequence_pattern(path)


def _check_pattern(path: Path) -> re.Match[str]:
    """The pattern's one %d conversion; ImageReadError/ImageWriteError-free ConfigError otherwise."""
    matches = list(_PATTERN.finditer(path.name))
    if len(matches) != 1 or path.name.count("%") != 1:
        raise ConfigError(f"frame pattern '{path}': name exactly one frame number with %d or %0Nd in the file "
                          "name, e.g. frames/%05d.png")
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise ConfigError(f"frame pattern '{path}': frames must be {', '.join(IMAGE_EXTENSIONS)} images")
    return matches[0]


def _frame_name(match: re.Match[str], name: str, index: int) -> str:
    """``name`` with its %d conversion replaced by ``index``."""
    zero, width = match.group(1), match.group(2)
    number = f"{index:{'0' if zero else ''}{width}d}" if width else str(index)
    return name[:match.start()] + number + name[match.end():]


@dataclass(frozen=True)
class StreamInfo:
    """One input stream: ``kind`` is ``"video"`` or ``"sequence"``; ``fps`` is None for sequences
    (and videos that do not say); ``frames`` is None when the container does not say; ``first``:
    the number of a sequence's first frame (0 for videos)."""

    path: Path
    kind: str
    width: int
    height: int
    fps: float | None
    frames: int | None
    first: int = 0


class FrameReader:
    """Iterate over the frames of one stream as (1, C, H, W) float32 tensors in [0, 1].

    ``C`` is fixed for the stream by its first frame: 1 when it is gray (a colour video whose
    channels differ by at most two levels is gray: codec noise), 3 for colour; later frames are
    converted to it (gray frames repeated to RGB, colour frames to BT.601 luminance).

    Videos are decoded with ``cv2.VideoCapture`` (8-bit). Frame sequences are read with
    :func:`fusecli.io.read_image`, so 16-bit frames keep their depth, and ``stretch_16bit`` applies
    to each frame as in ``fusecli fuse`` (see :func:`fusecli.inference.prepare_16bit`).

    Raises (on opening): ImageReadError for a missing, unreadable or empty stream, a sequence with a
    gap, or a frame above ``max_pixels``.
    """

    def __init__(self, path: str | os.PathLike[str], *, max_pixels: int | None = None,
                 stretch_16bit: bool | None = None):
        self.path = Path(path)
        self.max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
        self.stretch_16bit = stretch_16bit
        self.notes: list[str] = []
        self._capture = None
        self._files: list[Path] = []
        if is_sequence_pattern(self.path):
            self.info = self._open_sequence()
        else:
            self.info = self._open_video()
        self.channels: int | None = None

    # --- opening -------------------------------------------------------------------------------
    def _open_sequence(self) -> StreamInfo:
        match = _check_pattern(self.path)
        folder, name = self.path.parent, self.path.name
        if not folder.is_dir():
            raise ImageReadError(f"cannot read frames '{self.path}': the folder '{folder}' does not exist")
        zero, width = match.group(1), match.group(2)
        digits = rf"\d{{{width}}}" if zero and width else (rf" *\d+" if width else r"\d+")
        regex = re.compile(re.escape(name[:match.start()]) + f"({digits})" + re.escape(name[match.end():]) + "$")
        numbered = {}
        for entry in folder.iterdir():
            found = regex.match(entry.name)
            if found and not entry.name.startswith(".") and entry.is_file():
                index = int(found.group(1))
                if _frame_name(match, name, index) == entry.name:
                    numbered[index] = entry
        if not numbered:
            raise ImageReadError(f"cannot read frames '{self.path}': no file in '{folder}' matches the pattern")
        first, last = min(numbered), max(numbered)
        missing = next((i for i in range(first, last + 1) if i not in numbered), None)
        if missing is not None:
            raise ImageReadError(f"frame sequence '{self.path}' has a gap: {_frame_name(match, name, missing)} is "
                                 f"missing between frames {first} and {last}; renumber the frames")
        self._files = [numbered[i] for i in range(first, last + 1)]
        _, info = read_image(self._files[0], max_pixels=self.max_pixels)
        return StreamInfo(self.path, "sequence", info.width, info.height, None, len(self._files), first)

    def _open_video(self) -> StreamInfo:
        if not self.path.is_file():
            what = "is a folder" if self.path.is_dir() else "does not exist"
            raise ImageReadError(f"cannot read video '{self.path}': the file {what}; check the path")
        capture = cv2.VideoCapture(str(self.path), cv2.CAP_FFMPEG)
        if not capture.isOpened():
            capture.release()
            raise ImageReadError(f"cannot read video '{self.path}': OpenCV's FFmpeg cannot decode it; convert "
                                 "it to MP4 or AVI, or to a frame sequence (frames/%05d.png)")
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if self.max_pixels and width * height > self.max_pixels:
            capture.release()
            raise ImageReadError(f"cannot read video '{self.path}': its frames are {width}x{height} = "
                                 f"{width * height:,} pixels, above the limit of {self.max_pixels:,}; raise it "
                                 "with --max-pixels N (0: no limit)")
        fps = capture.get(cv2.CAP_PROP_FPS)
        frames = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self._capture = capture
        return StreamInfo(self.path, "video", width, height, fps if fps and math.isfinite(fps) and fps > 0 else None,
                          frames if frames > 0 else None)

    # --- reading -------------------------------------------------------------------------------
    def _raw(self) -> Iterator[torch.Tensor]:
        """Frames as read: (1, C, H, W) float32 in [0, 1], C as stored (1 or 3)."""
        if self._capture is None:
            for path in self._files:
                image, info = read_image(path, max_pixels=self.max_pixels)
                if (info.width, info.height) != (self.info.width, self.info.height):
                    raise ShapeError(f"frame '{path}' is {info.width}x{info.height}, the sequence's first frame "
                                     f"{self.info.width}x{self.info.height}; all frames must have one size")
                image, note = prepare_16bit(image, info, self.stretch_16bit)
                if note and not self.notes:
                    self.notes.append(f"{self.path}: 16-bit frames stretched to the full range, each on its own "
                                      "(--no-stretch-16bit keeps the raw values)")
                yield image
            return
        while True:
            ok, bgr = self._capture.read()
            if not ok:
                return
            if bgr.ndim == 2:
                bgr = bgr[:, :, None]
            if self.channels is None:  # decide the stream's channels from its first frame
                spread = 0 if bgr.shape[2] == 1 else int(np.ptp(bgr[:, :, :3].astype(np.int16), axis=2).max())
                self.channels = 1 if spread <= _GRAY_TOLERANCE else 3
            if bgr.shape[2] == 1:
                array = bgr
            elif self.channels == 1:
                array = cv2.cvtColor(bgr[:, :, :3], cv2.COLOR_BGR2GRAY)[:, :, None]
            else:
                array = bgr[:, :, 2::-1]
            scale = np.float32(65535 if array.dtype == np.uint16 else 255)
            chw = np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / scale
            yield torch.from_numpy(chw).unsqueeze(0)

    def __iter__(self) -> Iterator[torch.Tensor]:
        try:
            for frame in self._raw():
                if self.channels is None:
                    self.channels = frame.shape[1]
                if frame.shape[1] != self.channels:
                    frame = frame.expand(-1, 3, -1, -1) if self.channels == 3 else _luma(frame)
                yield frame
        finally:
            self.close()

    def close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    from .color import rgb_to_y
    return rgb_to_y(rgb).clamp(0, 1)


def open_stream(path: str | os.PathLike[str], *, max_pixels: int | None = None,
                stretch_16bit: bool | None = None) -> FrameReader:
    """A :class:`FrameReader` for a video file or a frame pattern."""
    return FrameReader(path, max_pixels=max_pixels, stretch_16bit=stretch_16bit)


# --- writers -----------------------------------------------------------------------------------------

class VideoWriterSink:
    """Encode frames into a hidden temporary video beside ``path``; :meth:`commit` renames it onto
    ``path``, :meth:`abort` deletes it. The codec follows the extension (:data:`WRITE_CODECS`);
    frames are written as 8-bit BGR (gray repeated), at ``fps``."""

    def __init__(self, path: Path, fps: float):
        self.path = path
        self.fps = fps
        self.temporary = path.with_name(f".{path.stem}.{secrets.token_hex(8)}.tmp{path.suffix}")
        self._writer = None
        self.frames = 0

    def write(self, frame: torch.Tensor) -> None:
        """Append one (1, C, H, W) float frame in [0, 1]."""
        from .io import quantize

        samples = quantize(frame, 8)
        bgr = cv2.cvtColor(samples, cv2.COLOR_GRAY2BGR) if samples.ndim == 2 else np.ascontiguousarray(
            samples[:, :, ::-1])
        if self._writer is None:
            height, width = bgr.shape[:2]
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ImageWriteError(f"cannot write '{self.path}': {exc.strerror}; choose a writable folder") from exc
            codec = WRITE_CODECS[self.path.suffix.lower()]
            self._writer = cv2.VideoWriter(str(self.temporary), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*codec),
                                           self.fps, (width, height), True)
            if not self._writer.isOpened():
                self.abort()
                raise ImageWriteError(f"cannot write '{self.path}': OpenCV cannot encode {codec} video into this "
                                      "folder; check that it is writable, or write a frame sequence "
                                      "(-o frames/%05d.png)")
        self._writer.write(bgr)
        self.frames += 1

    def commit(self) -> Path:
        if self._writer is None:
            raise ImageWriteError(f"cannot write '{self.path}': no frames to write")
        self._writer.release()
        self._writer = None
        try:
            if not self.temporary.is_file() or self.temporary.stat().st_size == 0:
                raise ImageWriteError(f"cannot write '{self.path}': the encoder wrote nothing (disk full?)")
            with open(self.temporary, "rb+") as file:
                os.fsync(file.fileno())
            os.replace(self.temporary, self.path)
        except BaseException:
            self.abort()
            raise
        return self.path

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self.temporary.unlink(missing_ok=True)


class SequenceSink:
    """Write frames as numbered images (``frames/%05d.png``) into a hidden temporary folder beside
    them; :meth:`commit` moves them into place, :meth:`abort` deletes the folder."""

    def __init__(self, pattern: Path, *, first: int = 0, bit_depth: int = 8):
        self.match = _check_pattern(pattern)
        self.pattern = pattern
        self.folder = pattern.parent
        self.index = first
        self.bit_depth = bit_depth
        self.temporary = self.folder / f".fusecli-frames.{secrets.token_hex(8)}.tmp"
        self.names: list[str] = []

    @property
    def frames(self) -> int:
        return len(self.names)

    def write(self, frame: torch.Tensor) -> None:
        """Write one (1, C, H, W) float frame in [0, 1] as the next numbered image."""
        name = _frame_name(self.match, self.pattern.name, self.index)
        if not self.names:
            try:
                self.temporary.mkdir(parents=True)
            except OSError as exc:
                raise ImageWriteError(f"cannot write frames '{self.pattern}': {exc.strerror}; choose a writable "
                                      "folder") from exc
        write_image(self.temporary / name, frame, bit_depth=self.bit_depth)
        self.names.append(name)
        self.index += 1

    def commit(self) -> Path:
        if not self.names:
            raise ImageWriteError(f"cannot write frames '{self.pattern}': no frames to write")
        try:
            for name in self.names:
                os.replace(self.temporary / name, self.folder / name)
            self.temporary.rmdir()
        except BaseException:
            self.abort()
            raise
        return self.pattern

    def abort(self) -> None:
        shutil.rmtree(self.temporary, ignore_errors=True)


def open_sink(output: str | os.PathLike[str], *, fps: float, first: int = 0, bit_depth: int = 8
              ) -> VideoWriterSink | SequenceSink:
    """The writer for ``output``: a video (:data:`WRITE_CODECS`) or a frame pattern (``out/%05d.png``).

    Raises:
        ImageWriteError: an extension that is neither, or ``bit_depth`` 16 for a video.
    """
    output = Path(output)
    if is_sequence_pattern(output):
        try:
            _check_pattern(output)
        except ConfigError as exc:
            raise ImageWriteError(str(exc)) from None
        if bit_depth == 16 and output.suffix.lower() not in (".png", ".tif", ".tiff"):
            raise ImageWriteError(f"cannot write '{output}': 16-bit frames need .png or .tif")
        return SequenceSink(output, first=first, bit_depth=bit_depth)
    if output.suffix.lower() not in WRITE_CODECS:
        raise ImageWriteError(f"cannot write video '{output}': use {', '.join(WRITE_CODECS)}, or a frame pattern "
                              "such as fused/%05d.png")
    if bit_depth != 8:
        raise ImageWriteError(f"cannot write '{output}': videos are 8-bit; write 16-bit frames as a sequence "
                              "(-o fused/%05d.png --bit-depth 16)")
    return VideoWriterSink(output, fps)


# --- fusing ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class VideoResult:
    """What :func:`fuse_videos` did: ``frames`` fused and written, ``fps`` of the output,
    ``seconds`` of wall time, and one-line ``notes`` for the user."""

    output: Path
    frames: int
    width: int
    height: int
    channels: int
    fps: float
    seconds: float
    notes: tuple[str, ...] = ()

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _check_output(output: Path, inputs: Sequence[Path]) -> None:
    """Refuse an output that would overwrite an input: the same file, or a frame pattern writing into
    the folder of an input frame sequence."""
    for source in inputs:
        if is_sequence_pattern(output) and is_sequence_pattern(source):
            if _same_file(output.parent, source.parent):
                raise ImageWriteError(f"refusing to write frames '{output}' into the folder of the input frames "
                                      f"'{source}'; write them to another folder")
        elif _same_file(output, source):
            raise ImageWriteError(f"refusing to write '{output}': it is one of the inputs; choose another output")


def _batches(reader: FrameReader, size: int) -> Iterator[list[torch.Tensor]]:
    frames = iter(reader)
    while batch := list(islice(frames, size)):
        yield batch


def fuse_videos(
    model: nn.Module,
    ir: str | os.PathLike[str],
    vis: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    batch_size: int = 1,
    fps: float | None = None,
    resize_to: str | None = None,
    gray: bool = False,
    bit_depth: int = 8,
    tile: int = 0,
    overlap: int = 32,
    stretch_16bit: bool | None = None,
    max_pixels: int | None = None,
    progress: ProgressFn | None = None,
    precision: str = "fp32",
) -> VideoResult:
    """Fuse two aligned streams frame by frame and write the fused stream atomically.

    Args:
        model: a registered model that fuses two sources (luminance models through the colour path
            of :func:`fusecli.inference.fuse_images`; ``colour = "model"`` models too).
        ir, vis: the streams in the order of ``model.inputs`` (infrared, visible): video files
            (:data:`VIDEO_EXTENSIONS`) or frame patterns (``ir/%05d.png``).
        output: a video (:data:`WRITE_CODECS`: .mp4/.m4v/.mov as mp4v, .avi/.mkv as MJPG) or a frame
            pattern (``fused/%05d.png``, numbered from the first input sequence's first frame, or 0).
        batch_size: fuse this many frame pairs in one forward pass (GPU); memory grows with it, not
            with the video's length.
        fps: output frame rate; default: the visible stream's, else the infrared's, else
            :data:`DEFAULT_FPS` (with a note).
        resize_to: frames of different sizes: resample the other stream's frames to this one's
            (``ir``/``vis``, as ``batch --resize-to``). Default: refused.
        gray, bit_depth, tile, overlap, stretch_16bit, max_pixels, precision: as for
            :func:`fusecli.inference.fuse_files` (``bit_depth`` 16: frame sequences only).
        progress: called as ``progress(frames_done, total)`` once before the first frame (0) and after
            each batch; ``total`` is None when the containers do not give their frame counts.

    Returns:
        A :class:`VideoResult`.

    Raises:
        ImageReadError, ImageWriteError, ShapeError (streams of different length, or sizes without
        ``resize_to``), ConfigError, DeviceError. Nothing is left under ``output``'s name then.
    """
    start = time.perf_counter()
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {batch_size}")
    if bit_depth not in (8, 16):
        raise ConfigError(f"--bit-depth must be 8 or 16, got {bit_depth}")
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise ConfigError(f"--fps must be a positive number, got {fps}")
    check_tiling(tile, overlap)
    resolve_precision(precision, device_of(model))
    spec = spec_of(model)
    if spec.colour == "cube":
        raise ConfigError("this model super-resolves a spectral cube; it does not fuse videos")
    check_source_count(model, 2)
    resize = resize_index(resize_to, spec.inputs)
    sources, output = [Path(ir), Path(vis)], Path(output)
    _check_output(output, sources)
    readers = [open_stream(p, max_pixels=max_pixels, stretch_16bit=stretch_16bit) for p in sources]
    try:
        infos = [r.info for r in readers]
        notes: list[str] = []
        sizes = [(i.width, i.height) for i in infos]
        if sizes[0] != sizes[1] and resize is None:
            raise ShapeError(f"the streams differ in frame size ({sources[0].name} {sizes[0][0]}x{sizes[0][1]}, "
                             f"{sources[1].name} {sizes[1][0]}x{sizes[1][1]}); register them, or pass "
                             "--resize-to ir (or vis) to resample the other one")
        counts = [i.frames for i in infos]
        if None not in counts and counts[0] != counts[1]:
            raise ShapeError(f"the streams differ in length ({sources[0].name}: {counts[0]} frames, "
                             f"{sources[1].name}: {counts[1]}); trim them to the same frames first")
        if fps is None:
            fps = infos[1].fps or infos[0].fps
            if fps is None:
                fps = DEFAULT_FPS
                if not is_sequence_pattern(output):
                    notes.append(f"no input stream gives a frame rate; wrote {DEFAULT_FPS:g} frames/s (--fps to "
                                 "choose)")
        first = next((i.first for i in infos[::-1] if i.kind == "sequence"), 0)
        width, height = sizes[resize or 0]
        total = None if None in counts else counts[0]
        sink = open_sink(output, fps=fps, first=first, bit_depth=bit_depth)
        channels = 0
        try:
            if progress:
                progress(0, total)
            done = 0
            streams = [_batches(r, batch_size) for r in readers]
            while True:
                batches = [next(s, None) for s in streams]
                if batches[0] is None and batches[1] is None:
                    break
                lengths = [done + (len(b) if b else 0) for b in batches]
                if batches[0] is None or batches[1] is None or lengths[0] != lengths[1]:
                    shorter = int(lengths[1] < lengths[0])
                    raise ShapeError(f"the streams differ in length: {sources[shorter].name} ends after "
                                     f"{min(lengths)} frames, {sources[1 - shorter].name} goes on; trim them to "
                                     "the same frames first")
                if resize is not None:
                    batches = [[f if (f.shape[-1], f.shape[-2]) == (width, height) else resample(f, width, height)
                                for f in b] for b in batches]
                fused = fuse_images(model, [torch.cat(b) for b in batches], gray=gray, tile=tile,
                                    overlap=overlap, precision=precision).cpu()
                channels = fused.shape[1]
                for k in range(fused.shape[0]):
                    sink.write(fused[k:k + 1])
                done += fused.shape[0]
                if progress:
                    progress(done, total)
            path = sink.commit()
        except BaseException:
            sink.abort()
            raise
    finally:
        for r in readers:
            r.close()
    notes += [n for r in readers for n in r.notes]
    return VideoResult(path, done, width, height, channels, fps, time.perf_counter() - start, tuple(notes))
