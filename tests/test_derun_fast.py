"""DeRUN's fast path (fused convolution chains, fusecli.models._derun_fast) against the reference
path (``path="reference"``): every fused operator, the whole model in float64 and float32, the
band-parallel inference, the gradients of a training step, the shrinkage in clamped form, and the
8-bit outputs users get on the samples and at TNO's size (shipped weights)."""

from __future__ import annotations

import pytest
import torch

from fusecli import create_model
from fusecli.errors import ConfigError
from fusecli.inference import fuse_tensors
from fusecli.io import read_image
from fusecli.models import _derun_fast, _tasks
from fusecli.models.derun import DeRUN, DeRUNConfig, Shrinkage
from fusecli.train import RECIPES

from .conftest import SAMPLES


def _perturb(model: torch.nn.Module, seed: int, scale: float = 0.05) -> None:
    """Move every parameter off its initial value (the transposes stop being exact adjoints, PReLU
    slopes differ per channel, eta3 != 0) so that no term of a stage is trivially zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g, dtype=p.dtype) * scale * (p.abs().mean() + 0.01))


def _models(dtype=torch.float64, seed: int = 0, **config) -> tuple[DeRUN, DeRUN]:
    torch.manual_seed(seed)
    fast = DeRUN(DeRUNConfig(stages=3, **config)).to(dtype)
    _perturb(fast, seed)
    ref = DeRUN(DeRUNConfig(stages=3, path="reference", **config)).to(dtype)
    ref.load_state_dict(fast.state_dict())
    return fast.eval(), ref.eval()


def _pair(h: int, w: int, batch: int = 1, dtype=torch.float64, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, h, w, generator=g, dtype=dtype),
            torch.rand(batch, 1, h, w, generator=g, dtype=dtype))


def test_path_is_validated():
    with pytest.raises(ConfigError, match="path"):
        DeRUNConfig(path="quick")


@pytest.mark.parametrize("config", [{}, {"specific_channels": 0}, {"shared_channels": 0},
                                    {"specific_channels": 2, "shared_channels": 3}, {"activation": "none"}])
def test_fused_operators_equal_the_branch_by_branch_ones(config):
    fast, _ = _models(**config)
    stage = fast.stages[1]
    ops = _derun_fast.fuse_stage(stage)
    n = stage.filters
    g = torch.Generator().manual_seed(1)
    y = torch.randn(2, 1, 11, 13, generator=g, dtype=torch.float64)
    z = torch.randn(2, 2 * n, 11, 13, generator=g, dtype=torch.float64)
    run = _derun_fast.run_chain
    with torch.no_grad():
        tl, tk = stage.T(y)
        assert torch.allclose(run(y, ops.t), torch.cat([tl, tk], 1), atol=1e-12)
        assert torch.allclose(run(y, ops.t_l), stage.T.l(y), atol=1e-12)
        assert torch.allclose(run(y, ops.t_k), stage.T.k(y), atol=1e-12)
        expected = stage.Tt.sum_lk(stage.rho * z[:, :n], stage.tau * z[:, n:])
        assert torch.allclose(run(z, ops.tt), expected, atol=1e-12)
        assert torch.allclose(run(z[:, :n], ops.tt_l), stage.Tt.l(z[:, :n]), atol=1e-12)
        assert torch.allclose(y + run(y, ops.qa), stage.apply_qa(y), atol=1e-12)


@pytest.mark.parametrize("config", [{}, {"shared_channels": 0}, {"boundary": "mirror"}, {"boundary": "circular"}])
def test_fast_model_equals_reference_in_float64(config):
    fast, ref = _models(**config)
    u, v = _pair(23, 30, batch=2)
    with torch.no_grad():
        assert torch.allclose(fast(u, v), ref(u, v), atol=1e-10)


def test_pruned_chain_is_the_same_map_with_fewer_channels():
    """Silent hidden channels (zero weights in, or zero weights out, also once a neighbour's are
    dropped) go; the map stays, in float64."""
    g = torch.Generator().manual_seed(3)
    w = [torch.randn(6, 1, 3, 3, generator=g, dtype=torch.float64),
         torch.randn(5, 6, 3, 3, generator=g, dtype=torch.float64),
         torch.randn(1, 5, 3, 3, generator=g, dtype=torch.float64)]
    w[0][1] = 0                    # first hidden 1 silent: its own weights are zero
    w[1][:, 4] = 0                 # first hidden 4 unread by the next layer
    w[2][0, 2] = 0                 # second hidden 2 unread: its row goes, and with it ...
    w[1][:, 5] = 0
    w[1][2, 5] = 1.0               # ... the only reader of first hidden 5 (a cascade)
    prelu = torch.rand(6, generator=g, dtype=torch.float64)
    chain = [_derun_fast.Conv(w[0], prelu), _derun_fast.Conv(w[1], torch.rand(5, generator=g, dtype=torch.float64)),
             _derun_fast.Conv(w[2])]
    pruned = _derun_fast.prune_chain(chain)
    assert [c.weight.shape[:2] for c in pruned] == [(3, 1), (4, 3), (1, 4)]
    x = torch.randn(2, 1, 9, 12, generator=g, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(_derun_fast.run_chain(x, pruned), _derun_fast.run_chain(x, chain), atol=1e-12)


@pytest.mark.parametrize("weights", [None, "derun.roadscene"])
def test_inference_on_the_live_filters_equals_the_reference_in_float64(weights):
    """Classical start and shipped weights have silent filters (zero second layers, zero transposes):
    CPU inference runs on the live ones only (``live_filters``; 2 of 8 here) and its pruned chains,
    and gives the reference path's result, in float64."""
    fast = create_model("derun", weights=weights).double().eval()
    ref = create_model("derun", weights=weights, path="reference").double().eval()
    ops, live = _derun_fast.inference_stages(list(fast.stages))
    assert 0 < live.numel() < fast.stages[0].filters
    dense = _derun_fast.fuse_stage(fast.stages[0]).qa
    assert sum(c.weight.numel() for c in ops[0].qa) < 0.2 * sum(c.weight.numel() for c in dense)
    u, v = _pair(37, 45, batch=2, dtype=torch.float64, seed=4)
    with torch.no_grad():
        assert torch.allclose(fast(u, v), ref(u, v), atol=1e-10)


@pytest.mark.slow
def test_tiled_inference_equals_the_whole_image_chains(monkeypatch):
    fast, ref = _models(torch.float32)
    u, v = _pair(70, 90, dtype=torch.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            with _tasks.task_threads():
                assert _tasks.workers() == 2
                x = torch.rand(1, 8, 70, 90)
                ops = _derun_fast.fuse_stage(fast.stages[0])
                monkeypatch.setattr(_derun_fast, "TILE_ROWS", 32)  # three tiles (the last short) on two workers
                tiles = _derun_fast.run_chain(x, ops.tt_l)
                whole = _derun_fast._convolve(_derun_fast.circular_pad(x, 2), ops.tt_l)
                assert torch.allclose(tiles, whole, atol=1e-6)
            torch.set_num_threads(1)  # the tiles one after the other
            assert torch.allclose(_derun_fast.run_chain(x, ops.tt_l), whole, atol=1e-6)
            torch.set_num_threads(2)
            a, b = fast(u, v), ref(u, v)
    finally:
        torch.set_num_threads(before)
    assert torch.allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_training_gradients_equal_the_reference():
    fast, ref = _models()
    loss = RECIPES["derun"].loss
    u, v = _pair(24, 28, batch=2)
    grads = []
    for model in (ref, fast):
        model.train()
        model.zero_grad()
        loss(model, (u, v))[0].backward()
        grads.append({n: p.grad for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name, g in grads[0].items():
        assert torch.allclose(grads[1][name], g, rtol=1e-8, atol=1e-12 * (1 + g.abs().max().item())), name


def test_training_gradients_in_float32_stay_close():
    fast, ref = _models(torch.float32)
    loss = RECIPES["derun"].loss
    u, v = _pair(24, 28, batch=2, dtype=torch.float32)
    out = []
    for model in (ref, fast):
        model.train()
        model.zero_grad()
        loss(model, (u, v))[0].backward()
        out.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(out[1], out[0], atol=1e-3 * out[0].abs().max().item())


def test_shrinkage_clamped_form_equals_the_branches():
    s = Shrinkage(3).double()
    with torch.no_grad():
        s.values.add_(torch.randn(3, 101, dtype=torch.float64) * 0.05)  # not monotone: cummax acts
    a = (torch.randn(2, 3, 17, 19, dtype=torch.float64) * 1.5).requires_grad_()
    x, y = s(a), s.forward_clamped(a.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(x, y, atol=1e-12)
    gx = torch.autograd.grad((x * 1.3).sum(), [a, s.values])
    gy = torch.autograd.grad((y * 1.3).sum(), [a, s.values])
    assert all(torch.allclose(p, q, atol=1e-10) for p, q in zip(gx, gy))
    with torch.no_grad():  # the inference form (grid_sample), either memory layout, inside and outside the grid
        for layout in (torch.contiguous_format, torch.channels_last):
            assert torch.allclose(s.forward_sampled(a.detach().contiguous(memory_format=layout)), x, atol=1e-12)


def _assert_8bit_close(fast: torch.Tensor, ref: torch.Tensor) -> None:
    diff = ((fast * 255).round() - (ref * 255).round()).abs()
    assert diff.max() <= 1
    assert (diff == 0).float().mean() >= 0.999


def test_samples_fuse_the_same_in_8_bits():
    ir, _ = read_image(SAMPLES / "ir.png")
    vis, _ = read_image(SAMPLES / "vis.png")
    fast, ref = create_model("derun"), create_model("derun", path="reference")
    _assert_8bit_close(fuse_tensors(fast, [ir, vis]), fuse_tensors(ref, [ir, vis]))


@pytest.mark.slow
def test_full_size_pairs_with_the_shipped_weights_fuse_the_same_in_8_bits(ivf_pairs):
    """TNO pairs 01 (576x768) and 12 (328x595) with the shipped weights (the fast path skipping their
    silent filters); without ../shared the samples mirrored to 576x768."""
    fast, ref = create_model("derun"), create_model("derun", path="reference")
    for pair in ivf_pairs("01", "12", size=(576, 768)):
        ir, vis = read_image(pair.ir)[0], read_image(pair.vis)[0]
        _assert_8bit_close(fuse_tensors(fast, [ir, vis]), fuse_tensors(ref, [ir, vis]))
