"""FRUFN and EFRUFN: the UF cell, Swin-V2 masks, padding, the 1-step gradient's
flat memory, the official EFRUFN checkpoint and the command line."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from fusecli import create_model
from fusecli.cli import app
from fusecli.errors import CheckpointError, ConfigError, ShapeError
from fusecli.models.efrufn import EFRUFN, EFRUFNConfig, default_init_std
from fusecli.models.frufn import FRUFN, FRUFNConfig, MaskGenerator, UFCell
from fusecli.models.swin_v2 import shifted_window_mask

TINY = dict(channels=8, heads=2, depth=2)


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors


def _tiny_frufn(cells: int = 2) -> FRUFN:
    torch.manual_seed(0)
    return FRUFN(FRUFNConfig(cells=cells, **TINY)).eval()


def _tiny_efrufn(**kw) -> EFRUFN:
    torch.manual_seed(0)
    return EFRUFN(EFRUFNConfig(**TINY, **kw)).eval()


# ------------------------------------------------------------------ UF cell and Swin-V2 pieces


def test_uf_cell_shapes_and_mask_range():
    torch.manual_seed(0)
    cell = UFCell(dim=8, depth=2, heads=2).eval()
    f, f1 = torch.randn(2, 8, 16, 24), torch.randn(2, 8, 16, 24)
    m = torch.zeros(2, 1, 16, 24)
    with torch.no_grad():
        f_new, m_new = cell(f, f1, m)
    assert f_new.shape == (2, 8, 16, 24) and m_new.shape == (2, 1, 16, 24)
    assert (m_new > 0).all() and (m_new < 1).all()
    # eq. 14: the update is the mask times T(relu(F1 - F)); where F already exceeds F1 everywhere,
    # the residual is zero and the update is M * T(0)
    with torch.no_grad():
        upd, m0 = cell(f1 + 10, f1, m)
        t0 = cell.transform(torch.zeros_like(f1))
    assert torch.allclose(upd - (f1 + 10), m0 * t0, atol=1e-5)


def test_mask_generator_needs_multiple_of_8():
    gen = MaskGenerator(8, 2, 2, 4, 3.0, 128)
    with pytest.raises(ShapeError, match="multiple of 8"):
        gen(torch.zeros(1, 8, 12, 12), torch.zeros(1, 1, 12, 12))


def test_shifted_window_mask_matches_region_labels():
    h, w, ws, s = 8, 12, 4, 2
    mask = shifted_window_mask(h, w, ws, s)
    # independent construction: label each pixel of the *rolled* image by the region it came from
    rows = [0 if r < h - ws else (1 if r < h - s else 2) for r in range(h)]
    cols = [0 if c < w - ws else (1 if c < w - s else 2) for c in range(w)]
    labels = np.array([[3 * rows[r] + cols[c] for c in range(w)] for r in range(h)])
    k = 0
    for wr in range(h // ws):
        for wc in range(w // ws):
            lab = labels[wr * ws:(wr + 1) * ws, wc * ws:(wc + 1) * ws].reshape(-1)
            expected = np.where(lab[:, None] == lab[None, :], 0.0, -100.0)
            np.testing.assert_array_equal(mask[k].numpy(), expected)
            k += 1
    assert k == mask.shape[0]


def test_frufn_parameter_counts_match_paper():
    # paper: FRUFN 0.864M, EFRUFN 0.236M parameters
    n_frufn = sum(p.numel() for p in FRUFN().parameters())
    n_efrufn = sum(p.numel() for p in EFRUFN().parameters())
    assert round(n_frufn / 1e6, 3) == 0.864
    assert round(n_efrufn / 1e6, 3) == 0.236


def test_config_errors():
    with pytest.raises(ConfigError):
        EFRUFNConfig(init="random")
    with pytest.raises(ConfigError):
        EFRUFNConfig(update="average")


# ------------------------------------------------------------------ padding, shapes, errors


@pytest.mark.parametrize("make", [_tiny_frufn, _tiny_efrufn])
def test_odd_sizes_give_full_size_outputs_equal_to_explicit_padding(make):
    model = make()
    torch.manual_seed(1)
    ir, vis = torch.rand(1, 1, 13, 21), torch.rand(1, 1, 13, 21)
    with torch.no_grad():
        out = model(ir, vis)
        padded = model(F.pad(ir, (0, 3, 0, 3), mode="reflect"), F.pad(vis, (0, 3, 0, 3), mode="reflect"))
    assert out.shape == (1, 1, 13, 21) and torch.isfinite(out).all()
    assert torch.allclose(out, padded[..., :13, :21], atol=1e-5)


def test_shape_errors():
    model = _tiny_frufn()
    with pytest.raises(ShapeError):
        model(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 24))
    with pytest.raises(ShapeError):
        model(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))


def test_efrufn_reports_solver_info():
    model = _tiny_efrufn(solver_iters=3, tol=0.0)
    with torch.no_grad():
        out, mask, info = model.forward_with_info(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8))
        assert model.last_solver_info is info
        _, _, info5 = model.forward_with_info(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), solver_iters=5)
    assert out.shape == mask.shape == (2, 1, 8, 8)
    assert info.iterations == 3 and info5.iterations == 5
    assert math.isfinite(info.residual) and info.residual >= 0


# ------------------------------------------------------------------ training: 1-step gradient, flat memory


def _saved_bytes(model: EFRUFN, iters: int) -> int:
    """Bytes autograd keeps for the backward pass of one training step (the activation memory)."""
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    torch.manual_seed(3)
    ir, vis = torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _, info = model.forward_with_info(ir, vis, solver_iters=iters)
    out.mean().backward()
    assert info.iterations == iters
    return total


def test_one_step_gradient_reaches_cell_and_encoders_but_not_the_starting_point():
    model = _tiny_efrufn(init="conv-vis-ir", tol=0.0).train()
    _saved_bytes(model, 3)
    for p in (model.cell.in_conv.weight, model.cell.mask.proj_in.weight, model.enc_ir[0].weight,
              model.enc_vis[0].weight, model.decoder[1].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the starting point is computed without autograd (as the official training): no gradient
    assert model.init_conv.weight.grad is None


def test_training_activation_memory_does_not_grow_with_solver_iterations():
    model = _tiny_efrufn(tol=0.0).train()
    b5, b20 = _saved_bytes(model, 5), _saved_bytes(model, 20)
    assert b5 > 0 and b5 == b20
    # control: the same measure grows with unrolled depth (FRUFN, cells with own weights)
    torch.manual_seed(0)
    unrolled = [FRUFN(FRUFNConfig(cells=n, **TINY)).train() for n in (1, 4)]
    sizes = []
    for m in unrolled:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            m(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 16)).mean().backward()
        sizes.append(total)
    assert sizes[1] > 2.5 * sizes[0]


_RSS_SCRIPT = textwrap.dedent("""
    import sys, threading, time, torch
    torch.set_num_threads(1)
    from fusecli.models.efrufn import EFRUFN, EFRUFNConfig
    page = 4096

    def resident():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    torch.manual_seed(0)
    model = EFRUFN(EFRUFNConfig(solver_iters=int(sys.argv[1]), tol=0.0)).train()
    ir, vis = torch.rand(1, 1, 128, 128), torch.rand(1, 1, 128, 128)
    base, peak, done = resident(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], resident())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    out, _, info = model.forward_with_info(ir, vis)
    out.mean().backward()
    done.set()
    sampler.join()
    print(info.iterations, max(peak[0], resident()) - base)
""")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc to sample the RSS")
def test_peak_memory_of_a_training_step_is_flat_in_iterations():
    """Peak RSS increase of a training step (sampled from /proc in a fresh process each, with
    glibc returning large blocks to the OS so the RSS follows live memory) at 5 vs 20 iterations."""
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    peaks = {}
    for iters in (5, 20):
        proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(iters)], capture_output=True, text=True,
                              timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        n, grown = map(int, proc.stdout.split())
        assert n == iters
        peaks[iters] = grown
    assert peaks[5] > 10 * 2**20  # the step allocates tens of MB: the measure is not noise
    assert abs(peaks[20] - peaks[5]) / peaks[5] < 0.20, peaks


# ------------------------------------------------------------------ official checkpoint and CLI


def test_official_layout_efrufn_checkpoint_loads_strict(official_checkpoints):
    """The authors' EFRUFN file (../shared; else the shipped efrufn.ivf in its layout, trained with
    the same unused 64->32 convolution) loads strict with the stored Swin-V2 buffers."""
    official_efrufn_file = official_checkpoints / "frufn" / "ufnet_deq_deeper_ivf.pth"
    model = create_model("efrufn", checkpoint=official_efrufn_file)
    raw = torch.load(official_efrufn_file, map_location="cpu", weights_only=True)
    assert len(model.state_dict()) == len(raw) == 140
    # our Swin-V2 buffers (coordinates table, index, shifted-window mask at 128x128) equal the stored ones
    fresh = EFRUFN().state_dict()
    for key, value in model.state_dict().items():
        if "relative_" in key or "attn_mask" in key:
            assert torch.equal(fresh[key], value), key
    # the extra 64->32 convolution is at PyTorch's default initialisation: it never got a gradient
    w = model.init_conv.weight
    assert abs(w.std().item() / default_init_std(64 * 9) - 1) < 0.03
    assert w.abs().max().item() <= 1 / math.sqrt(64 * 9) + 1e-6


def test_official_efrufn_map_is_contractive_with_injection(official_checkpoints, ivf_pairs):
    """The evidence for the wiring: with the visible features injected at every step (the default),
    the official weights give a map that 5 Anderson steps solve to ~1 % relative residual and more
    iterations do not change the image; the literal eq. 17 update (F + M * T) does not converge.
    On a crop of TNO 08; without ../shared, the shipped efrufn.ivf in the official layout on the samples."""
    from fusecli import read_image
    from fusecli.color import split_luma

    (pair,) = ivf_pairs("08")
    ir = split_luma(read_image(pair.ir)[0])[0][..., 112:144, 112:144]
    vis = split_luma(read_image(pair.vis)[0])[0][..., 112:144, 112:144]
    infos, outs = {}, {}
    for update, iters in (("inject", 5), ("inject", 10), ("residual", 5)):
        model = create_model("efrufn", checkpoint=official_checkpoints / "frufn" / "ufnet_deq_deeper_ivf.pth",
                             update=update, tol=0.0)
        with torch.no_grad():
            out, _, infos[update, iters] = model.forward_with_info(ir, vis, solver_iters=iters)
        outs[update, iters] = out.clamp(0, 1)
    assert infos["inject", 5].relative_residual < 0.05
    assert infos["inject", 10].relative_residual < infos["inject", 5].relative_residual
    assert (outs["inject", 5] - outs["inject", 10]).abs().max() < 0.02
    assert infos["residual", 5].relative_residual > 0.2
    # the fused image follows the IVF training target max(ir, vis) closely
    assert (outs["inject", 5] - torch.maximum(ir, vis)).abs().mean() < 0.06


def test_frufn_rejects_efrufn_checkpoint():
    from fusecli.models._weights import weights_dir

    with pytest.raises(CheckpointError, match="efrufn"):
        create_model("frufn", checkpoint=weights_dir() / "efrufn.ivf.safetensors")


def _odd_colour_pair(tmp_path):
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:29, 0:37]
    ir = np.clip(60 + 150 * ((xx - 18) ** 2 + (yy - 14) ** 2 < 60) + rng.normal(0, 5, xx.shape), 0, 255)
    vis = np.stack([np.clip(40 + 5 * xx + rng.normal(0, 8, xx.shape), 0, 255),
                    np.clip(90 + 3 * yy, 0, 255), np.full(xx.shape, 120.0)], axis=-1)
    cv2.imwrite(str(tmp_path / "ir.png"), ir.astype(np.uint8))
    cv2.imwrite(str(tmp_path / "vis.png"), vis.astype(np.uint8))
    return tmp_path / "ir.png", tmp_path / "vis.png"


def test_cli_fuses_odd_colour_pair_with_shipped_efrufn(tmp_path):
    ir, vis = _odd_colour_pair(tmp_path)
    out = tmp_path / "fused.png"
    result = CliRunner().invoke(app, ["fuse", str(ir), str(vis), "-o", str(out), "--model", "efrufn",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert fused.shape == (29, 37, 3)
    # the hot disc of the infrared image shows in the fused luminance
    gray = cv2.cvtColor(fused, cv2.COLOR_BGR2GRAY).astype(float)
    yy, xx = np.mgrid[0:29, 0:37]
    disc = (xx - 18) ** 2 + (yy - 14) ** 2 < 40
    assert gray[disc].mean() > gray[~disc].mean() + 20


@pytest.mark.slow
def test_shipped_ivf_weights_reproduce_their_tno_figures(tno_dir, tmp_path):
    """weights/<model>.ivf (the default) on TNO pair 08, held out from training: the EN / SCD / VIF
    that the card's evaluation measured for this pair (runs/<model>-eval/tno8.json). Both models in
    one test: one skip without ../shared."""
    from fusecli import fuse_files
    from fusecli.metrics import evaluate_arrays

    for name, want in (("efrufn", {"EN": 6.7358, "SCD": 1.5185, "VIF": 0.8529}),
                       ("frufn", {"EN": 6.3735, "SCD": 1.4308, "VIF": 0.8596})):
        model = create_model(name)
        assert model.weights_info.startswith(f"{name}.ivf")
        out = tmp_path / f"{name}-08.png"
        fuse_files(model, [tno_dir / "ir" / "08.png", tno_dir / "vis" / "08.png"], out)
        fused, ir, vis = (cv2.imread(str(p), cv2.IMREAD_GRAYSCALE).astype(np.float64)
                          for p in (out, tno_dir / "ir" / "08.png", tno_dir / "vis" / "08.png"))
        got = evaluate_arrays(fused, [ir, vis], list(want))
        for metric, value in want.items():
            assert got[metric] == pytest.approx(value, abs=2e-3), (name, metric)
