"""CSC-MSF: deep convolutional sparse coding network for RGB-guided spectral super-resolution (CSCFuse).

Paper: Z. Zhao et al., "Deep Convolutional Sparse Coding Networks for Interpretable Image Fusion",
CVPR Workshops 2023, sec. 3.3. Official code:
github.com/Zhaozixiang1228/IF-CSCFuse @ cc50059, folder ``CSC-MSF`` (``networks.py``, ``ModelA``;
weights ``best_net.pth``: 256 channels, trained on CAVE at scale 2).

What is unrolled
----------------
A low-resolution 31-band cube ``x_LR`` and a high-resolution RGB guide ``x_G`` are each coded by
convolutional sparse coding (:class:`Backbone`): a 3x3 convolution (reflect padding) + soft
threshold, then three dictionary convolution units (:class:`~fusecli.models.layers.DCU`,
``z <- SST(BN(z + E(x - D z)))``, each fed the branch's own image as data; SST thresholds clamped
at 0). The code of the cube is super-resolved with a fast guided filter (r = 1, eps = 1e-4) whose
guide is the RGB code: the guide code is resized to low resolution (bilinear, align_corners), the
per-channel linear model ``z_LR ~ A * z_G + b`` is fitted there (box means over the window's pixels
inside the image), ``A`` and ``b`` are upsampled bilinearly and applied to the full-resolution guide
code. A 3x3 convolution (256 -> 31) decodes it, and the bilinear upsampling of ``x_LR`` is added
(the network learns the residual): paper eq. 8, ``x_F = d_F * (z_LR)^``.

Deviations from the official code
---------------------------------
* Non-square images: the official code upsamples the cube to ``(H_guide, H_guide)`` (it only
  works for square images); here to ``(H_guide, W_guide)``.
* Parameters are device-agnostic; the official ``test.py`` builds the model with 64 channels,
  which does not fit its own 256-channel checkpoint (the config default here is 256).

Interface: ``forward(cube, guide)`` with ``cube`` (B, 31, h, w) and ``guide`` (B, 3, H, W), both in
[0, 1], ``h, w = H // scale, W // scale`` (scale 2 for the checkpoint, which was trained at 2);
returns the (B, 31, H, W) cube (unclamped; inference clamps to
[0, 1]). Files: :func:`fusecli.io.read_cube` / :func:`fusecli.io.write_cube`, and
:func:`fusecli.inference.fuse_cube_files`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, ShapeError
from ._contract import FusionModel, ModelSpec
from . import _csc_fast as _fast
from .layers import DCU, SoftThreshold, guided_filter_coefficients

__all__ = ["CSCMSFConfig", "CSCMSF", "Backbone", "fast_guided_upsample", "convert_official"]


@dataclass(frozen=True)
class CSCMSFConfig:
    """Hyper-parameters of CSC-MSF; the defaults are the official checkpoint's.

    Attributes:
        bands: spectral bands of the cube (31: CAVE, 400-700 nm in 10 nm steps).
        guide_channels: channels of the guide (3: RGB).
        channels: code channels (256 in the checkpoint).
        units: DCUs per backbone after the input convolution (official ``num_csc - 1`` = 3).
        radius, eps: the fast guided filter's window radius and regularisation (1, 1e-4).
        scale: resolution ratio guide / cube the weights were trained for (2); checked on input.
        path: ``"fast"`` (inference on the CPU in eval mode without autograd runs the backbones in
            the matrix form of :mod:`fusecli.models._csc_fast`, the two side by side) or
            ``"reference"`` (module by module everywhere, the test oracle). Training, autograd and
            other devices always take the reference path.
    """

    bands: int = 31
    guide_channels: int = 3
    channels: int = 256
    units: int = 3
    radius: int = 1
    eps: float = 1e-4
    scale: int = 2
    path: str = "fast"

    def __post_init__(self) -> None:
        if self.path not in ("fast", "reference"):
            raise ConfigError(f"CSC-MSF path must be fast or reference, got {self.path!r}")
        if min(self.bands, self.guide_channels, self.channels) < 1 or self.units < 0:
            raise ConfigError("CSC-MSF needs at least one band, guide channel and code channel")
        if self.radius < 1 or self.eps <= 0 or self.scale < 1:
            raise ConfigError("CSC-MSF radius and scale must be >= 1 and eps > 0")


class Backbone(nn.Module):
    """One CSC encoder (official ``set_backbone``): conv + SST, then ``units`` DCUs fed the image.

    ``(B, image_channels, H, W) -> (B, channels, H, W)``.
    """

    def __init__(self, image_channels: int, channels: int = 256, units: int = 3):
        super().__init__()
        self.conv0 = nn.Conv2d(image_channels, channels, 3, padding=1, padding_mode="reflect", bias=False)
        self.act0 = SoftThreshold(channels, 1e-3, clamp=True)
        self.units = nn.ModuleList(DCU(channels, "sst", image_channels, sst_init=1e-3, sst_clamp=True)
                                   for _ in range(units))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        code = self.act0(self.conv0(x))
        for unit in self.units:
            code = unit(x, code)
        return code


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


def fast_guided_upsample(lr_guide: torch.Tensor, lr_src: torch.Tensor, hr_guide: torch.Tensor,
                         radius: int = 1, eps: float = 1e-4) -> torch.Tensor:
    """Fast guided filter (Wu et al., official ``FastGuidedFilter``): fit ``src ~ A * guide + b`` at
    low resolution, upsample ``A``, ``b`` bilinearly (align_corners) and apply them to ``hr_guide``.

    Args:
        lr_guide: (B, C, h, w) guide at low resolution.
        lr_src: (B, C, h, w) image to upsample.
        hr_guide: (B, C, H, W) guide at high resolution.
        radius, eps: window radius (means over the window's pixels inside the image) and
            regularisation.

    Returns:
        (B, C, H, W).
    """
    a, b = guided_filter_coefficients(lr_guide, lr_src, radius, eps, border="clip")
    size = hr_guide.shape[-2:]
    return _resize(a, size) * hr_guide + _resize(b, size)


class CSCMSF(FusionModel):
    """CSC-MSF: RGB-guided spectral super-resolution of a cube (see the module docstring).

    ``forward(cube, guide)``: cube (B, bands, h, w), guide (B, guide_channels, H, W) in [0, 1]
    with ``(h, w) == (H // scale, W // scale)``; returns (B, bands, H, W).
    """

    #: a cube and its guide in, a cube out (fusecli.inference.fuse_cube_files, not the image
    #: pipeline); the guided filter at low resolution needs 2r + 2 pixels per side, reflect padding
    #: 2; bilinear resizing and the global shape of the problem: no finite radius, no tiling
    spec = ModelSpec(inputs=("cube", "guide"), min_inputs=2, max_inputs=2, colour="cube", pad_multiple=1,
                     min_size=4, receptive_radius=None, tileable=False)

    def __init__(self, config: CSCMSFConfig | None = None):
        super().__init__()
        self.config = config or CSCMSFConfig()
        c = self.config
        self.guide_backbone = Backbone(c.guide_channels, c.channels, c.units)
        self.cube_backbone = Backbone(c.bands, c.channels, c.units)
        self.decoder = nn.Conv2d(c.channels, c.bands, 3, padding=1, padding_mode="reflect", bias=False)

    def check_inputs(self, cube: torch.Tensor, guide: torch.Tensor) -> None:
        """Raise ShapeError unless ``cube`` and ``guide`` fit the model and each other."""
        c = self.config
        if cube.dim() != 4 or cube.shape[1] != c.bands:
            raise ShapeError(f"CSC-MSF takes a (B, {c.bands}, h, w) cube, got {tuple(cube.shape)}")
        if guide.dim() != 4 or guide.shape[1] != c.guide_channels:
            raise ShapeError(f"CSC-MSF takes a (B, {c.guide_channels}, H, W) guide (RGB), got {tuple(guide.shape)}"
                             + ("; the guide is gray: pass an RGB image" if guide.dim() == 4 and guide.shape[1] == 1
                                else ""))
        if cube.shape[0] != guide.shape[0]:
            raise ShapeError(f"cube and guide batch sizes differ: {cube.shape[0]} vs {guide.shape[0]}")
        h, w = cube.shape[-2:]
        gh, gw = guide.shape[-2:]
        if (gh // c.scale, gw // c.scale) != (h, w):
            raise ShapeError(f"the guide must be {c.scale}x the cube's size: cube {w}x{h} needs a "
                             f"{c.scale * w}x{c.scale * h} guide, got {gw}x{gh}")
        if min(h, w) < self.min_size:
            raise ShapeError(f"cube is {w}x{h} pixels; CSC-MSF needs at least {self.min_size}x{self.min_size}")

    def uses_fast_path(self, x: torch.Tensor) -> bool:
        """Whether ``forward`` takes the fast path for input ``x``: ``path="fast"``, eval mode, no
        autograd, a float32 CPU tensor."""
        return (self.config.path == "fast" and not self.training and not torch.is_grad_enabled()
                and x.device.type == "cpu" and x.dtype == torch.float32)

    def forward(self, cube: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        self.check_inputs(cube, guide)
        if self.uses_fast_path(cube):
            with _fast.task_threads():
                return self._forward_fast(cube, guide)
        code_guide = self.guide_backbone(guide)
        code_cube = self.cube_backbone(cube)
        code_guide_lr = _resize(code_guide, tuple(code_cube.shape[-2:]))
        code = fast_guided_upsample(code_guide_lr, code_cube, code_guide, self.config.radius, self.config.eps)
        return self.decoder(code) + _resize(cube, tuple(guide.shape[-2:]))


    def _forward_fast(self, cube: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        """``forward`` with the backbones in matrix form, codes channels last.

        The two backbones run side by side, in bands of rows; the guided filter's coefficients are fitted at low
        resolution as in the reference; the full-resolution code ``up(A) * z_G + up(b)`` and the
        decoder (its tap projections, one matrix product, summed with their shifts) are then
        computed band of rows by band of rows, bands side by side, without a full-size code.
        """
        c = self.config
        b, _, h, w = cube.shape
        gh, gw = guide.shape[-2:]
        folded = {}
        for name in ("guide_backbone", "cube_backbone"):
            backbone = getattr(self, name)
            folded[name] = (_fast.fold_first(backbone.conv0.weight, backbone.act0),
                            [_fast.fold_dcu(u) for u in backbone.units])
        guide, cube = guide.contiguous(), cube.contiguous()
        # each backbone in bands of rows (exact, with context rows), all bands side by side: the
        # two backbones' costs differ, bands balance the workers
        parts = _fast.workers()
        jobs, finishers = [], []
        for n in range(b):
            for x, name in ((cube[n], "cube_backbone"), (guide[n], "guide_backbone")):
                band_jobs, finish = _fast.split_chain(x, x, *folded[name], parts=parts)
                jobs += band_jobs
                finishers.append(finish)
        _fast.run_parallel(jobs)
        codes = [finish() for finish in finishers]
        # the guided filter's coefficients at low resolution, (B, h, w, C), bands of rows side by side
        code_cube = torch.stack([codes[2 * n].view(h, w, c.channels) for n in range(b)]) if b > 1 \
            else codes[0].view(1, h, w, c.channels)
        code_guide = torch.stack([codes[2 * n + 1].view(gh, gw, c.channels) for n in range(b)]) if b > 1 \
            else codes[1].view(1, gh, gw, c.channels)
        a, shift = torch.empty_like(code_cube), torch.empty_like(code_cube)
        down_rows, down_cols = _upsample_index(gh, h, cube.device), _upsample_index(gw, w, cube.device)
        step = max(8, -(-h // 4))
        _fast.run_parallel([lambda n=n, y0=y0: _coefficient_rows(
            a[n], shift[n], code_guide[n], code_cube[n], down_rows, down_cols, c.radius, c.eps, y0, min(y0 + step, h))
            for n in range(b) for y0 in range(0, h, step)])
        out = _resize(cube, (gh, gw))
        # decoder tap projections, tap major: column 31 k + band for tap k = 3 u + v
        dec = self.decoder.weight.permute(1, 2, 3, 0).reshape(c.channels, -1).contiguous()
        rows, cols = _upsample_index(h, gh, cube.device), _upsample_index(w, gw, cube.device)
        parts = 4
        step = -(-gh // parts)
        _fast.run_parallel([lambda n=n, y0=y0: _decode_rows(out[n], code_guide[n], a[n], shift[n],
                                                             dec, rows, cols, y0, min(y0 + step, gh))
                            for n in range(b) for y0 in range(0, gh, step)])
        return out


def _upsample_index(size_in: int, size_out: int, device: torch.device) -> tuple[list[int], list[int], list[float]]:
    """Bilinear align-corners upsampling along one axis: lower index, upper index and weight of
    the upper for every output position, as ``F.interpolate(..., align_corners=True)`` computes them."""
    scale = (size_in - 1) / (size_out - 1) if size_out > 1 else 0.0
    src = torch.arange(size_out, dtype=torch.float32, device=device) * scale
    lo = src.long().clamp_(max=size_in - 1)
    return lo, (lo + 1).clamp_(max=size_in - 1), src - lo


#: rows of the low-resolution coefficients computed per step by :func:`_coefficient_rows`
COEFFICIENT_BAND = 16


def _box_sum_(x: torch.Tensor, radius: int, top: int, bottom: int, out: torch.Tensor,
              tmp: torch.Tensor) -> torch.Tensor:
    """Window sums of radius ``radius`` over (rows, w, C) ``x``, pixels outside the image left out.

    ``x`` holds the output rows plus ``top`` / ``bottom`` rows of context above / below (fewer than
    ``radius`` at the image border: the missing rows are outside the image). Returns ``out``
    (rows - top - bottom, w, C); ``tmp`` is scratch of that shape.
    """
    n = x.shape[0] - top - bottom
    out.copy_(x[top:top + n])
    for d in range(1, radius + 1):  # rows: y - d (where it exists), y + d
        if top - d >= 0:
            out += x[top - d:top - d + n]
        elif n > d - top:
            out[d - top:] += x[:n - (d - top)]
        rest = x.shape[0] - (top + d)
        if rest >= n:
            out += x[top + d:top + d + n]
        elif rest > 0:
            out[:rest] += x[top + d:]
    tmp.copy_(out)
    for d in range(1, radius + 1):  # columns
        out[:, d:] += tmp[:, :-d]
        out[:, :-d] += tmp[:, d:]
    return out


def _coefficient_rows(a: torch.Tensor, shift: torch.Tensor, guide_code: torch.Tensor, code: torch.Tensor,
                      rows: tuple, cols: tuple, radius: int, eps: float, y_start: int, y_end: int) -> None:
    """Rows ``y_start:y_end`` of the guided filter's ``A``, ``b`` (:func:`fast_guided_upsample`) at low
    resolution, a band at a time.

    ``guide_code`` (H, W, C) is resampled to the low resolution of ``code`` (h, w, C) (``rows``,
    ``cols``: its bilinear align-corners indices); the box means are over the window's pixels inside
    the image (``border="clip"``). Writes ``a``, ``shift`` (h, w, C).
    """
    height, width, channels = code.shape
    lo_y, hi_y, wy = (t.tolist() for t in rows)
    lo_x, hi_x, wx = cols[0], cols[1], cols[2].view(-1, 1)
    k = COEFFICIENT_BAND
    rows_counts = [min(y + radius, height - 1) - max(y - radius, 0) + 1 for y in range(height)]
    col_counts = torch.tensor([min(x + radius, width - 1) - max(x - radius, 0) + 1 for x in range(width)],
                              dtype=code.dtype, device=code.device)
    guide = code.new_empty(k + 2 * radius, width, channels)
    product = torch.empty_like(guide)
    vertical = guide_code.new_empty(guide_code.shape[1], channels)
    left, right = torch.empty_like(vertical[:width]), torch.empty_like(vertical[:width])
    mean_i, mean_p, cov, var, tmp = (code.new_empty(k, width, channels) for _ in range(5))
    for y0 in range(y_start, y_end, k):
        y1 = min(y0 + k, y_end)
        n = y1 - y0
        r0, r1 = max(y0 - radius, 0), min(y1 + radius, height)
        top, bottom = y0 - r0, r1 - y1
        g = guide[:r1 - r0]
        for i, y in enumerate(range(r0, r1)):  # the guide code resampled to low resolution
            torch.lerp(guide_code[lo_y[y]], guide_code[hi_y[y]], wy[y], out=vertical)
            torch.index_select(vertical, 0, lo_x, out=left)
            torch.index_select(vertical, 0, hi_x, out=right)
            torch.lerp(left, right, wx, out=g[i])
        count = torch.tensor(rows_counts[y0:y1], dtype=code.dtype, device=code.device).view(-1, 1, 1) \
            * col_counts.view(1, -1, 1)
        p = code[r0:r1]
        mi = _box_sum_(g, radius, top, bottom, mean_i[:n], tmp[:n]).div_(count)
        mp = _box_sum_(p, radius, top, bottom, mean_p[:n], tmp[:n]).div_(count)
        c = _box_sum_(torch.mul(g, p, out=product[:r1 - r0]), radius, top, bottom, cov[:n], tmp[:n]).div_(count)
        v = _box_sum_(torch.mul(g, g, out=product[:r1 - r0]), radius, top, bottom, var[:n], tmp[:n]).div_(count)
        c.sub_(mi * mp)
        v.sub_(mi * mi).add_(eps)
        out_a = torch.div(c, v, out=a[y0:y1])
        torch.sub(mp, out_a * mi, out=shift[y0:y1])


#: rows of the full-resolution code decoded per step by :func:`_decode_rows`
DECODE_BAND = 8


def _decode_rows(out: torch.Tensor, guide_code: torch.Tensor, a: torch.Tensor, shift: torch.Tensor,
                 dec: torch.Tensor, rows: tuple, cols: tuple, y_start: int, y_end: int) -> None:
    """Add the decoder's output on rows ``y_start:y_end`` to ``out`` (bands, H, W).

    The code ``up(a) * guide_code + up(shift)`` (``guide_code`` (H, W, C), ``a`` and ``shift``
    (h, w, C), channels last; ``up`` the bilinear align-corners upsampling given by ``rows``,
    ``cols``) is formed a few rows at a time and projected on the decoder's taps (``dec``
    (C, 9 bands), one matrix product); the projections of three consecutive rows (the first and last
    reflected at the image border) are summed with their shifts (reflect padding of the columns).
    """
    height, width, channels = guide_code.shape
    bands = dec.shape[1] // 9
    lo_y, hi_y, wy = (t.tolist() for t in rows)
    lo_x, hi_x, wx = cols[0], cols[1], cols[2].view(-1, 1)
    k = DECODE_BAND
    code = guide_code.new_empty(k, width, channels)
    up_shift = torch.empty_like(code)
    vertical = a.new_empty(a.shape[1], channels)
    left, right = guide_code.new_empty(width, channels), guide_code.new_empty(width, channels)
    proj = guide_code.new_empty(k + 2, width, 9, bands)  # projections of code rows y0 - 1 .. y1
    acc = guide_code.new_empty(k, width, bands)

    def upsample(source: torch.Tensor, y: int, target: torch.Tensor) -> None:
        torch.lerp(source[lo_y[y]], source[hi_y[y]], wy[y], out=vertical)
        torch.index_select(vertical, 0, lo_x, out=left)
        torch.index_select(vertical, 0, hi_x, out=right)
        torch.lerp(left, right, wx, out=target)

    def project(ys: list[int], into: torch.Tensor) -> None:  # into: (len(ys), W, 9, bands)
        for i, y in enumerate(ys):
            upsample(a, y, code[i])
            upsample(shift, y, up_shift[i])
            code[i].mul_(guide_code[y]).add_(up_shift[i])
        torch.mm(code[:len(ys)].view(-1, channels), dec, out=into.view(-1, 9 * bands))

    def row(y: int) -> int:  # reflect padding of the rows
        return 1 if y < 0 else height - 2 if y >= height else y

    have = 0  # rows of proj valid from the previous band (code rows y0 - 1 and y0)
    for y0 in range(y_start, y_end, k):
        y1 = min(y0 + k, y_end)
        n = y1 - y0
        needed = [row(y) for y in range(y0 - 1 + have, y1 + 1)]
        for i in range(0, len(needed), k):
            project(needed[i:i + k], proj[have + i:have + min(i + k, len(needed))])
        p = proj[:n + 2]
        s = acc[:n]
        s.copy_(p[1:n + 1, :, 4])
        for tap in range(9):
            u, v = divmod(tap, 3)
            src = p[u:u + n, :, tap]
            if v == 1:
                if tap != 4:
                    s += src
            elif v == 0:  # column x - 1 (reflect: column 1 for x = 0)
                s[:, 1:] += src[:, :-1]
                s[:, 0] += src[:, 1]
            else:  # column x + 1 (reflect: column W - 2 for x = W - 1)
                s[:, :-1] += src[:, 1:]
                s[:, -1] += src[:, -2]
        out[:, y0:y1] += s.permute(2, 0, 1)
        proj[:2].copy_(proj[n:n + 2].clone())  # rows y1 - 1, y1 (clone: overlap for n = 1)
        have = 2


_UNIT_PARTS = {
    "conv.conv_decoder.de_conv0.conv2d.weight": "dec.weight",
    "conv.conv_encoder.en_conv0.conv2d.weight": "enc.weight",
    "activation.theta": "act.theta",
}
_BRANCHES = {"backbone_guide": "guide_backbone", "backbone_lr": "cube_backbone"}


def convert_official(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map the official ``ModelA`` keys onto :class:`CSCMSF`'s.

    ``backbone_{guide,lr}.conv0.weight`` -> ``{guide,cube}_backbone.conv0.weight``,
    ``.relu0.theta`` -> ``.act0.theta``, ``.csc{i}.conv.conv_{de,en}coder.*`` / ``.norm.*`` /
    ``.activation.theta`` -> ``.units.{i-1}.{dec,enc,norm,act}``, ``decoder.conv0.weight`` ->
    ``decoder.weight``. Keys already in fusecli's layout pass through.

    Raises:
        CheckpointError: a key of neither layout (e.g. another model's checkpoint).
    """
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = None
        head, _, rest = key.partition(".")
        if head in ("guide_backbone", "cube_backbone") or key == "decoder.weight":
            target = key
        elif key == "decoder.conv0.weight":
            target = "decoder.weight"
        elif head in _BRANCHES:
            branch = _BRANCHES[head]
            if rest == "conv0.weight":
                target = f"{branch}.conv0.weight"
            elif rest == "relu0.theta":
                target = f"{branch}.act0.theta"
            elif rest.startswith("csc"):
                unit, _, part = rest.partition(".")
                number = unit[3:]
                if number.isdigit() and int(number) >= 1:
                    mapped = part if part.startswith("norm.") else _UNIT_PARTS.get(part)
                    target = f"{branch}.units.{int(number) - 1}.{mapped}" if mapped else None
        if target is None:
            raise CheckpointError(f"key {key!r} is not a CSC-MSF key (expected backbone_guide.*, backbone_lr.*, "
                                  "decoder.conv0.weight from the official best_net.pth, or guide_backbone.*, "
                                  "cube_backbone.*, decoder.weight from fusecli)")
        out[target] = value
    return out
