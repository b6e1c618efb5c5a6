"""FRUFN / EFRUFN fast path (fusecli.models.swin_fast, impl="fast") against the reference path
(impl="reference", the Swin2SR formulation as first written): outputs, gradients, real weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fusecli import create_model, read_image
from fusecli.color import split_luma
from fusecli.errors import ConfigError
from fusecli.inference import fuse_images
from fusecli.models.efrufn import EFRUFN, EFRUFNConfig
from fusecli.models.frufn import FRUFN, FRUFNConfig, GlobalLocalTransform
from fusecli.models.swin_fast import swin_layer_fast

TINY = dict(channels=8, heads=2, depth=2)
SAMPLES = Path(__file__).resolve().parents[1] / "samples"


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _pair(ref_cls, cfg_cls, **kw):
    """The same random weights in a reference-path and a fast-path model."""
    torch.manual_seed(0)
    ref = ref_cls(cfg_cls(impl="reference", **kw)).eval()
    fast = ref_cls(cfg_cls(impl="fast", **kw)).eval()
    fast.load_state_dict(ref.state_dict())
    return ref, fast


def _randomise(module: torch.nn.Module, std: float = 0.3) -> None:
    """Weights far from their initialisation, so attention is not near-uniform."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.mark.parametrize("window, shape, chunk", [
    (2, (1, 8, 16, 24), 4096),   # one chunk
    (4, (2, 8, 24, 40), 64),     # one window row per chunk, two images
    (4, (3, 8, 8, 16), 100),     # chunks spanning image boundaries (last-row masks inside a chunk)
    (2, (2, 8, 6, 10), 8),       # odd window counts
])
def test_fast_layer_equals_reference_outputs_and_gradients(window, shape, chunk):
    torch.manual_seed(0)
    glt = GlobalLocalTransform(shape[1], 2, 2, window, 3.0, 128, impl="reference")
    _randomise(glt)
    x = torch.randn(*shape)
    with torch.no_grad():
        want = glt(x)
        got = swin_layer_fast(glt.glo, x, glt.in_ln, glt.out_ln, chunk)
    assert torch.allclose(got, want, atol=1e-5, rtol=1e-5)
    # training: the same gradients for the input and every parameter
    weight = torch.randn_like(want)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    params = list(glt.parameters())
    g_ref = torch.autograd.grad((glt(x1) * weight).sum(), [x1, *params])
    g_fast = torch.autograd.grad((swin_layer_fast(glt.glo, x2, glt.in_ln, glt.out_ln, chunk) * weight).sum(),
                                 [x2, *params])
    for a, b in zip(g_ref, g_fast):
        assert torch.allclose(a, b, atol=1e-4 * max(1.0, a.abs().max().item()), rtol=1e-4)


def test_fast_layer_with_worker_threads_equals_one_thread():
    torch.manual_seed(0)
    glt = GlobalLocalTransform(8, 2, 2, 4, 3.0, 128, impl="reference")
    _randomise(glt)
    x = torch.randn(2, 8, 32, 48)
    with torch.inference_mode():
        one = swin_layer_fast(glt.glo, x, glt.in_ln, glt.out_ln, 64)
        torch.set_num_threads(2)  # chunks shared out over two worker threads
        two = swin_layer_fast(glt.glo, x, glt.in_ln, glt.out_ln, 64)
        torch.set_num_threads(1)
    assert torch.equal(one, two)


@pytest.mark.parametrize("model", ["frufn", "efrufn"])
def test_fast_model_equals_reference_at_odd_size_and_batch(model):
    cls, cfg = (FRUFN, FRUFNConfig) if model == "frufn" else (EFRUFN, EFRUFNConfig)
    extra = dict(cells=2) if model == "frufn" else dict(tol=0.0)
    ref, fast = _pair(cls, cfg, **TINY, **extra)
    _randomise(ref, 0.2)
    fast.load_state_dict(ref.state_dict())
    torch.manual_seed(2)
    ir, vis = torch.rand(2, 1, 21, 35), torch.rand(2, 1, 21, 35)
    with torch.no_grad():
        want, got = ref(ir, vis), fast(ir, vis)
    assert got.shape == want.shape == (2, 1, 21, 35)
    assert torch.allclose(got, want, atol=1e-4)


def test_efrufn_training_step_gradients_equal_reference():
    """The 1-step (phantom) gradient of EFRUFN through the fast path equals the reference path's."""
    ref, fast = _pair(EFRUFN, EFRUFNConfig, **TINY, tol=0.0)
    _randomise(ref, 0.2)
    fast.load_state_dict(ref.state_dict())
    ref.train(), fast.train()
    torch.manual_seed(3)
    ir, vis, target = torch.rand(2, 1, 16, 24), torch.rand(2, 1, 16, 24), torch.rand(2, 1, 16, 24)
    grads = []
    for model in (ref, fast):
        out = model(ir, vis)
        ((out - target) ** 2).mean().backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and len(grads[0]) > 100
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, atol=1e-5 + 1e-3 * g.abs().max().item(), rtol=1e-3), name


def test_frufn_training_gradients_equal_reference():
    ref, fast = _pair(FRUFN, FRUFNConfig, **TINY, cells=2)
    _randomise(ref, 0.2)
    fast.load_state_dict(ref.state_dict())
    ref.train(), fast.train()
    torch.manual_seed(4)
    ir, vis = torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    grads = []
    for model in (ref, fast):
        model(ir, vis).square().mean().backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(b, a, atol=1e-5 + 1e-3 * a.abs().max().item(), rtol=1e-3)


def test_impl_is_validated():
    with pytest.raises(ConfigError, match="impl"):
        FRUFNConfig(impl="quick")
    with pytest.raises(ConfigError, match="impl"):
        EFRUFNConfig(impl="quick")


def _uint8(x: torch.Tensor) -> torch.Tensor:
    return (x.clamp(0, 1) * 255).round()


def _assert_same_image(a: torch.Tensor, b: torch.Tensor) -> None:
    """The issue's bar: at most 1 grey level apart, >= 99.9 % of the pixels identical."""
    diff = (_uint8(a) - _uint8(b)).abs()
    assert diff.max() <= 1
    assert (diff == 0).float().mean() >= 0.999


def _fast_equals_reference(model: str, ir: torch.Tensor, vis: torch.Tensor, **kw) -> None:
    outs, iters = [], []
    for impl in ("reference", "fast"):
        m = create_model(model, impl=impl, **kw)
        outs.append(fuse_images(m, [ir, vis]))
        iters.append(getattr(m, "last_solver_info", None) and m.last_solver_info.iterations)
    _assert_same_image(*outs)
    assert iters[0] == iters[1]  # the solver takes the same number of steps


@pytest.mark.slow
@pytest.mark.parametrize("model", ["frufn", "efrufn"])
def test_shipped_weights_fast_equals_reference_on_samples(model):
    """The shipped default weights (frufn.ivf / efrufn.ivf) on the bundled 320x240 colour pair (the
    issue's benchmark is 640x480 TNO pairs: half of it)."""
    ir, vis = read_image(SAMPLES / "ir.png")[0], read_image(SAMPLES / "vis_color.png")[0]
    _fast_equals_reference(model, ir, vis)


@pytest.mark.slow
def test_tno_pair_fast_equals_reference_with_official_layout_efrufn(official_checkpoints, ivf_pairs):
    """TNO pair 10 (640x480, the issue's benchmark size, cropped to 320x240 to keep the test short)
    with the official EFRUFN checkpoint (FRUFN's are not public: its shipped weights are checked on
    the samples above); without ../shared, the shipped efrufn.ivf in the official file's layout on
    the samples mirrored to 640x480 and cropped the same way."""
    (pair,) = ivf_pairs("10", size=(480, 640))
    ir = split_luma(read_image(pair.ir)[0])[0][..., 120:360, 160:480]
    vis = split_luma(read_image(pair.vis)[0])[0][..., 120:360, 160:480]
    _fast_equals_reference("efrufn", ir, vis, checkpoint=official_checkpoints / "frufn" / "ufnet_deq_deeper_ivf.pth")


def test_window_plans_made_during_inference_serve_training():
    """The cached gather indices are built outside inference mode: inference first, then a backward
    pass at the same size (a tensor made in inference mode cannot be saved for backward)."""
    torch.manual_seed(5)
    model = FRUFN(FRUFNConfig(channels=8, heads=2, cells=1, impl="fast"))
    ir, vis = torch.rand(1, 1, 40, 24), torch.rand(1, 1, 40, 24)
    with torch.inference_mode():
        model.eval()(ir, vis)
    model.train()(ir, vis).mean().backward()
    assert all(p.grad is not None for p in model.cells[0].glt.parameters())
