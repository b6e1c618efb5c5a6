"""The pixel limit: image sizes are read from the file header (PNG, JPEG, BMP, TIFF) and images
above the limit are refused before anything is decoded, so no decompression bomb exhausts memory."""

from __future__ import annotations

import functools
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

import fusecli.io as fio
from fusecli.cli import app
from fusecli.errors import ImageReadError
from fusecli.io import image_size, read_cube, read_image

runner = CliRunner()
BOMB_SIDE = 30000


# --- files made by hand ----------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=1)
def _bomb_bytes(width: int, height: int) -> bytes:
    """A valid 8-bit gray PNG of ``width x height`` zeros, compressed to about 1/1000 of that size.

    The zlib stream is built without compressing every byte: one deflate block of 1000 zero rows,
    flushed to a byte boundary, repeated (its back-references only ever see zeros), then an empty
    final block and the Adler-32 of n zero bytes, which is ``(n mod 65521) << 16 | 1``.
    """
    row = width + 1  # a filter byte per row
    rows = 1000 if height % 1000 == 0 else 1
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(row * rows)
    first = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    middle = compressor.compress(block) + compressor.flush(zlib.Z_SYNC_FLUSH)
    total = row * height
    stream = (b"\x78\xda" + first + middle * (height // rows - 1) + b"\x03\x00"
              + struct.pack(">I", (total % 65521) << 16 | 1))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", stream)
            + _png_chunk(b"IEND", b""))


def bomb_png(path: Path, width: int = BOMB_SIDE, height: int = BOMB_SIDE) -> Path:
    """The issue's decompression bomb: an 875 KB PNG that decodes to 30000 x 30000 pixels (0.9 GB as
    uint8, 3.6 GB as float32). Decoding it took 11 s and 1.8 GB with OpenCV alone."""
    path.write_bytes(_bomb_bytes(width, height))
    return path


def _tiff(order: str, pages: list[tuple[int, int, int]], big: bool = False) -> bytes:
    """A TIFF header with one IFD per page ``(width, height, type)`` (type 3 SHORT, 4 LONG, 16 LONG8)
    holding only ImageWidth and ImageLength: enough for the header parser, not for a decoder."""
    mark = b"II" if order == "<" else b"MM"
    value = {3: "H", 4: "I", 16: "Q"}
    if big:
        head = mark + struct.pack(order + "HHHQ", 43, 8, 0, 16)
        count_fmt, entry_fmt, next_fmt, slot = "Q", "HHQ", "Q", 8
    else:
        head = mark + struct.pack(order + "HI", 42, 8)
        count_fmt, entry_fmt, next_fmt, slot = "H", "HHI", "I", 4
    out = bytearray(head)
    for index, (width, height, kind) in enumerate(pages):
        ifd = bytearray(struct.pack(order + count_fmt, 2))
        for tag, number in ((256, width), (257, height)):
            field = struct.pack(order + value[kind], number).ljust(slot, b"\0")
            ifd += struct.pack(order + entry_fmt, tag, kind, 1) + field
        size = len(ifd) + struct.calcsize(next_fmt)
        following = len(out) + size if index + 1 < len(pages) else 0
        out += ifd + struct.pack(order + next_fmt, following)
    return bytes(out)


def _bmp_core(width: int, height: int) -> bytes:
    """A BMP with the old 12-byte BITMAPCOREHEADER (16-bit sizes)."""
    return b"BM" + struct.pack("<IHHI", 26, 0, 0, 26) + struct.pack("<IHHHH", 12, width, height, 1, 24)


def _encoded(ext: str, array: np.ndarray, params: tuple[int, ...] = ()) -> bytes:
    ok, data = cv2.imencode(ext, array, list(params))
    assert ok
    return data.tobytes()


# --- the header parser ---------------------------------------------------------------------------------

H, W = 24, 40
RNG = np.random.default_rng(0)
GRAY8 = RNG.integers(0, 256, (H, W), dtype=np.uint8)
RGB16 = RNG.integers(0, 65536, (H, W, 3), dtype=np.uint16)

ENCODED = {
    "png-gray8": lambda: _encoded(".png", GRAY8),
    "png-rgb16": lambda: _encoded(".png", RGB16),
    "jpeg-baseline": lambda: _encoded(".jpg", cv2.cvtColor(GRAY8, cv2.COLOR_GRAY2BGR)),
    "jpeg-progressive": lambda: _encoded(".jpg", GRAY8, (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)),
    "bmp-gray-palette": lambda: _encoded(".bmp", GRAY8),
    "bmp-rgb": lambda: _encoded(".bmp", cv2.cvtColor(GRAY8, cv2.COLOR_GRAY2BGR)),
    "tiff-gray8": lambda: _encoded(".tif", GRAY8),
    "tiff-rgb16": lambda: _encoded(".tiff", RGB16),
}


@pytest.mark.parametrize("name", sorted(ENCODED))
def test_header_size_matches_the_decoded_size(tmp_path, name):
    path = tmp_path / f"{name}.img"
    path.write_bytes(ENCODED[name]())
    decoded = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    assert image_size(path) == (decoded.shape[1], decoded.shape[0]) == (W, H)


def test_jpeg_size_skips_segments_before_the_frame(tmp_path):
    # an APP1 segment (EXIF) whose payload contains a fake start-of-frame must be skipped by length
    jpeg = _encoded(".jpg", GRAY8)
    fake = b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff" + bytes(8)
    app1 = b"\xff\xe1" + struct.pack(">H", 2 + len(fake)) + fake
    path = tmp_path / "exif.jpg"
    path.write_bytes(jpeg[:2] + app1 + jpeg[2:])
    assert image_size(path) == (W, H)
    assert read_image(path)[1].width == W


@pytest.mark.parametrize("order", ["<", ">"], ids=["little-endian", "big-endian"])
@pytest.mark.parametrize("kind", [3, 4], ids=["SHORT", "LONG"])
@pytest.mark.parametrize("big", [False, True], ids=["classic", "BigTIFF"])
def test_tiff_sizes_in_either_byte_order_and_type(order, kind, big):
    data = _tiff(order, [(W, H, kind), (70000 if kind == 4 else 7, 3, kind)], big=big)
    assert fio._header_sizes(Path("x.tif"), data) == [(W, H), (70000 if kind == 4 else 7, 3)]


def test_bigtiff_long8_and_bmp_headers():
    assert fio._header_sizes(Path("x.tif"), _tiff("<", [(5, 6, 16)], big=True)) == [(5, 6)]
    assert fio._header_sizes(Path("x.bmp"), _bmp_core(300, 200)) == [(300, 200)]
    top_down = bytearray(_encoded(".bmp", GRAY8))
    top_down[22:26] = struct.pack("<i", -H)  # a negative height: rows stored top-down
    assert fio._header_sizes(Path("x.bmp"), bytes(top_down)) == [(W, H)]


def test_a_tiff_whose_directories_loop_is_read_once():
    data = bytearray(_tiff("<", [(W, H, 3)]))
    data[-4:] = struct.pack("<I", 8)  # the next-IFD offset points back at the first IFD
    assert fio._header_sizes(Path("x.tif"), bytes(data)) == [(W, H)]


@pytest.mark.parametrize(("name", "data", "words"), [
    ("text.png", b"this is not an image\nsecond line\n", "not a PNG, JPEG, BMP or TIFF"),
    ("cut.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00\x00", "PNG header is cut short"),
    ("cut.jpg", b"\xff\xd8\xff\xe0\x00\x10JFIF", "JPEG header is cut short"),
    ("noframe.jpg", b"\xff\xd8\xff\xda\x00\x02", "JPEG header"),
    ("cut.tif", b"II*\x00\x08\x00\x00\x00\x05\x00", "TIFF header"),
    ("cut.bmp", b"BM\x00\x00", "BMP header"),
    ("image.gif", b"GIF89a\x01\x00\x01\x00", "not a PNG, JPEG, BMP or TIFF"),
])
def test_unreadable_headers_are_one_line_errors(tmp_path, name, data, words):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert words in message and name in message and "\n" not in message


# --- the pixel limit in the library ----------------------------------------------------------------------

def test_a_bomb_is_refused_before_decoding(tmp_path, monkeypatch):
    path = bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 900_000
    decoded = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(a))
    with pytest.raises(ImageReadError) as caught:
        read_image(path)
    message = str(caught.value)
    assert "bomb.png" in message and "30000x30000" in message and "--max-pixels" in message
    assert not decoded


def test_the_limit_is_the_default_and_max_pixels_moves_it(tmp_path, monkeypatch):
    path = tmp_path / "small.png"
    cv2.imwrite(str(path), GRAY8)
    assert fio.MAX_PIXELS == 89_478_485
    assert read_image(path)[1].width == W
    with pytest.raises(ImageReadError, match=f"{W}x{H} = {W * H:,} pixels, above the limit of 959"):
        read_image(path, max_pixels=W * H - 1)
    assert read_image(path, max_pixels=W * H)[1].width == W  # the limit itself is allowed
    monkeypatch.setattr(fio, "MAX_PIXELS", 100)  # the module default applies when no limit is given
    with pytest.raises(ImageReadError):
        read_image(path)
    assert read_image(path, max_pixels=0)[1].width == W  # 0: no limit


def test_cube_readers_count_every_band(tmp_path):
    _, tiff = cv2.imencodemulti(".tiff", [GRAY8] * 4)
    (tmp_path / "cube.tif").write_bytes(tiff.tobytes())
    with pytest.raises(ImageReadError, match=f"4 bands of {W}x{H}"):
        read_cube(tmp_path / "cube.tif", max_pixels=3 * W * H)
    assert read_cube(tmp_path / "cube.tif", max_pixels=4 * W * H)[0].shape == (1, 4, H, W)
    folder = tmp_path / "bands"
    folder.mkdir()
    for index in range(3):
        cv2.imwrite(str(folder / f"band_{index}.png"), GRAY8)
    with pytest.raises(ImageReadError, match="above the limit"):
        read_cube(folder, max_pixels=2 * W * H)
    assert read_cube(folder)[0].shape == (1, 3, H, W)
    bomb_png(folder / "band_9.png")
    with pytest.raises(ImageReadError, match="above the limit"):
        read_cube(folder)


# --- the pixel limit on the command line: a real process, its time and memory ---------------------------

#: runs ``python -m fusecli ARGS`` as its own child and prints that child's exit code, CPU time and peak
#: RSS. The launcher is a small fresh process: Linux keeps ru_maxrss across exec, so a child forked
#: straight from a large pytest process would report pytest's size as its own peak.
_LAUNCHER = """
import json, os, subprocess, sys
p = subprocess.Popen([sys.executable, "-m", "fusecli", *sys.argv[1:]], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(p.pid, 0)
print(json.dumps([os.waitstatus_to_exitcode(status), usage.ru_utime + usage.ru_stime, usage.ru_maxrss]))
"""


def _run_measured(args: list[str], cwd: Path) -> tuple[int, str, float, float]:
    """Run ``fusecli ARGS`` in a fresh process; return (exit code, stderr, CPU seconds, peak RSS in MiB)
    of that process alone (measured by a small launcher process, see :data:`_LAUNCHER`)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "300"}
    done = subprocess.run([sys.executable, "-c", _LAUNCHER, *args], cwd=cwd, env=env, capture_output=True)
    code, cpu, maxrss = json.loads(done.stdout.decode().strip().splitlines()[-1])
    return code, done.stderr.decode(), cpu, maxrss / 1024  # KiB on Linux


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def bomb_site(tmp_path):
    """A folder with the 30000x30000 bomb, a small gray image and a dataset whose one pair holds the bomb."""
    bomb_png(tmp_path / "bomb.png")
    cv2.imwrite(str(tmp_path / "small.png"), GRAY8)
    for role in ("ir", "vis"):
        (tmp_path / "data" / role).mkdir(parents=True)
    bomb_png(tmp_path / "data" / "ir" / "0001.png")
    cv2.imwrite(str(tmp_path / "data" / "vis" / "0001.png"), GRAY8)
    return tmp_path


COMMANDS = {
    "fuse": ["fuse", "bomb.png", "small.png", "-o", "out/fused.png"],
    "metrics": ["metrics", "small.png", "--ir", "bomb.png", "--vis", "small.png", "--json", "out/m.json"],
    "degrade": ["degrade", "bomb.png", "-o", "out/hazy.png", "--kind", "haze", "--level", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_the_bomb_is_refused_fast_in_little_memory(bomb_site, command):
    (bomb_site / "out").mkdir()
    before = _files(bomb_site)
    code, errors, cpu, peak = _run_measured(COMMANDS[command], bomb_site)
    assert code == 1
    lines = errors.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "30000x30000" in lines[0]
    assert "--max-pixels" in lines[0] and "bomb.png" in lines[0]
    assert cpu < 5.0 and peak < 1024, f"{command}: {cpu:.1f} s CPU, {peak:.0f} MiB peak"
    assert _files(bomb_site) == before  # nothing written, inputs unchanged


def test_batch_records_the_bomb_as_a_failed_pair(bomb_site):
    # batch treats it as any unreadable pair: recorded in the manifest, no output, exit code 1
    code, errors, cpu, peak = _run_measured(["batch", "data", "-o", "out", "-q"], bomb_site)
    assert code == 1
    assert cpu < 5.0 and peak < 1024, f"batch: {cpu:.1f} s CPU, {peak:.0f} MiB peak"
    assert "30000x30000" in errors and "Traceback" not in errors
    manifest = json.loads((bomb_site / "out" / "manifest.json").read_text())
    (record,) = manifest["pairs"]
    assert record["status"] == "failed" and "30000x30000" in record["error"]
    # no output image: the manifest, and batch's hidden lock file (.fusecli.lock), are all there is
    assert sorted(p.name for p in (bomb_site / "out").iterdir() if not p.name.startswith(".")) == ["manifest.json"]


def test_max_pixels_option_raises_and_lowers_the_limit(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), GRAY8)
    cv2.imwrite(str(tmp_path / "b.png"), GRAY8[::-1].copy())
    low, enough = str(W * H - 1), str(W * H)
    cases = {
        "fuse": ["fuse", "a.png", "b.png", "-o", "{out}.png"],
        "degrade": ["degrade", "a.png", "-o", "{out}.png", "-k", "noise", "-l", "1"],
        "metrics": ["metrics", "a.png", "--ir", "a.png", "--vis", "b.png", "--json", "{out}.json", "-m", "EN"],
    }
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for name, args in cases.items():
            refused = runner.invoke(app, [a.format(out=f"{name}-low") for a in args] + ["--max-pixels", low])
            assert refused.exit_code == 1 and "above the limit" in refused.output, (name, refused.output)
            assert not list(tmp_path.glob(f"{name}-low*"))
            allowed = runner.invoke(app, [a.format(out=f"{name}-ok") for a in args] + ["--max-pixels", enough])
            assert allowed.exit_code == 0, (name, allowed.output)
            assert list(tmp_path.glob(f"{name}-ok*"))
        usage = runner.invoke(app, ["fuse", "a.png", "b.png", "-o", "x.png", "--max-pixels", "-1"])
        assert usage.exit_code == 2
    finally:
        os.chdir(cwd)


def test_batch_max_pixels_option(tmp_path):
    for role in ("ir", "vis"):
        (tmp_path / "data" / role).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "data" / role / "0001.png"), GRAY8)
    refused = runner.invoke(app, ["batch", str(tmp_path / "data"), "-o", str(tmp_path / "a"), "-q",
                                  "--max-pixels", str(W * H - 1)])
    assert refused.exit_code == 1 and "above the limit" in refused.output
    assert not (tmp_path / "a" / "0001.png").exists()
    allowed = runner.invoke(app, ["batch", str(tmp_path / "data"), "-o", str(tmp_path / "b"), "-q",
                                  "--max-pixels", str(W * H)])
    assert allowed.exit_code == 0 and (tmp_path / "b" / "0001.png").exists()
