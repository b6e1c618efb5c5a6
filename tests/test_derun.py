"""DeRUN and its classical solver derun-admm: shrinkage, the stage as one ADMM iteration, shapes,
borders, the CLI, checkpoints, and a tiny overfit run."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from fusecli import create_model
from fusecli.cli import app
from fusecli.errors import CheckpointError, ConfigError, ShapeError
from fusecli.inference import fuse_tensors
from fusecli.models import get_entry, model_summary
from fusecli.models.derun import (
    DeRUN,
    DeRUNADMM,
    DeRUNADMMConfig,
    DeRUNConfig,
    Shrinkage,
    Stage,
    State,
    _circ_conv,
    sobel_kernels,
    soft_threshold,
)

from .conftest import SAMPLES, load_benchmark

runner = CliRunner()


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors


def _pair(h: int, w: int, seed: int = 0, batch: int = 1, dtype=torch.float32):
    """A smooth 'infrared' blob and a textured 'visible' image, (batch, 1, h, w) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    u = (0.2 + 0.7 * torch.exp(-((xx - 0.2) ** 2 + yy**2) / 0.1)).expand(batch, 1, h, w)
    v = (0.5 + 0.3 * torch.sin(9 * xx) * torch.cos(7 * yy)).expand(batch, 1, h, w)
    noise = 0.05 * torch.rand(batch, 1, h, w, generator=g)
    return (u + noise).clamp(0, 1).to(dtype), (v - noise).clamp(0, 1).to(dtype)


# --- shrinkage ------------------------------------------------------------------------------------------

def test_shrinkage_has_101_knots_at_step_002_and_is_piecewise_linear():
    s = Shrinkage(3).double()
    assert s.values.shape == (3, 101)
    assert torch.allclose(s.points, torch.linspace(-1, 1, 101, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(s.points.diff(), torch.full((100,), 0.02, dtype=torch.float64), atol=1e-6)
    with torch.no_grad():
        s.values.add_(0.01 * torch.randn(3, 101, dtype=torch.float64).cumsum(1).abs())
    q = torch.cummax(s.values, dim=1).values.detach()
    # at the knots the map takes the (monotone) values; half-way between, their mean
    grid = torch.linspace(-1, 1, 101, dtype=torch.float64)
    knots = grid.view(1, 1, 1, -1).expand(1, 3, 1, 101)
    assert torch.allclose(s(knots)[0, :, 0], q, atol=1e-12)
    mids = (grid[:-1] + 0.01).view(1, 1, 1, -1).expand(1, 3, 1, 100)
    assert torch.allclose(s(mids)[0, :, 0], (q[:, :-1] + q[:, 1:]) / 2, atol=1e-12)
    # slope exactly 1 outside [-1, 1], continuous at +-1
    out = torch.tensor([-3.0, -1.0, 1.0, 2.5], dtype=torch.float64).view(1, 1, 1, 4).expand(1, 3, 1, 4)
    r = s(out)[0, :, 0]
    assert torch.allclose(r[:, 0] - r[:, 1], torch.full((3,), -2.0, dtype=torch.float64))
    assert torch.allclose(r[:, 3] - r[:, 2], torch.full((3,), 1.5, dtype=torch.float64))


def test_shrinkage_is_monotone_even_after_arbitrary_training_updates():
    s = Shrinkage(2)
    with torch.no_grad():
        s.values.copy_(torch.randn(2, 101))  # far from monotone
    a = torch.linspace(-1.5, 1.5, 3001).view(1, 1, 1, -1).expand(1, 2, 1, -1)
    out = s(a)[0, :, 0]
    assert (out.diff(dim=1) >= -1e-6).all()


@pytest.mark.parametrize("threshold", [0.02, 0.1, 0.36])
def test_shrinkage_is_the_exact_soft_threshold_at_init_on_grid_thresholds(threshold):
    s = Shrinkage(1, threshold=threshold).double()
    a = torch.linspace(-2, 2, 4001, dtype=torch.float64).view(1, 1, 1, -1)
    assert torch.allclose(s(a), soft_threshold(a, threshold), atol=1e-12)


def test_shrinkage_is_close_to_soft_threshold_off_grid_and_trains():
    s = Shrinkage(1, threshold=0.05)  # between knots: at most step / 2 away
    a = torch.linspace(-2, 2, 4001).view(1, 1, 1, -1).requires_grad_()
    out = s(a)
    err = (out - soft_threshold(a, 0.05)).abs().max().item()
    assert 1e-4 < err <= 0.01 + 1e-6
    out.sum().backward()
    assert s.values.grad is not None and s.values.grad.abs().sum() > 0
    assert a.grad is not None and (a.grad >= -1e-6).all() and (a.grad <= 1 + 1e-4).all()  # monotone, slope <= 1


# --- the stage is one ADMM iteration in the classical setting --------------------------------------------

def _classical_stage(config: DeRUNConfig, admm: DeRUNADMMConfig) -> Stage:
    """A DeRUN stage in its classical initialisation (Stage.init_classical) with the scalars of
    ``admm``; eta moved off its start (inert with lambda_h = 0)."""
    config = replace(config, init="classical", rho=admm.rho, tau=admm.tau, mu=admm.mu, theta=admm.theta,
                     sigma=admm.sigma, threshold=admm.lam / admm.rho, lambda_h=0.0)
    stage = Stage(config).double()
    with torch.no_grad():  # the scalars again in float64 (the init's are float32)
        for name in ("rho", "tau", "mu", "theta", "sigma", "phi", "omega"):
            getattr(stage, name).fill_(getattr(admm, name))
        stage.eta.copy_(torch.tensor([0.3, 0.4, 0.5]))
    stage.shrink.set_soft_threshold(admm.lam / admm.rho)
    return stage


def _random_state(b: int, h: int, w: int, seed: int) -> tuple[torch.Tensor, State]:
    g = torch.Generator().manual_seed(seed)

    def r(c: int, scale: float) -> torch.Tensor:
        return scale * torch.randn(b, c, h, w, generator=g, dtype=torch.float64)

    return r(1, 0.3), State(r(1, 0.3), r(2, 0.2), r(2, 0.05), r(2, 0.2), r(2, 0.05))


@pytest.mark.parametrize("mode,channels", [("cg", (1, 1)), ("fft", (1, 1)), ("cg", (4, 4)), ("cg", (0, 2)),
                                           ("cg", (2, 0))])
def test_one_classical_stage_equals_one_admm_iteration(mode, channels):
    admm_cfg = DeRUNADMMConfig(lam=0.024, rho=0.3, tau=0.7, mu=0.05, theta=20.0, sigma=0.3, phi=0.9, omega=1.1)
    assert (admm_cfg.lam / admm_cfg.rho / 0.02) % 1 < 1e-9  # the threshold 0.08 lies on the knot grid
    config = DeRUNConfig(specific_channels=channels[0], shared_channels=channels[1], stages=1, cg_steps=200,
                         activation="prelu" if mode == "cg" else "none", dfm_inverse=mode)
    stage = _classical_stage(config, admm_cfg)
    admm = DeRUNADMM(admm_cfg).double()
    m, state = _random_state(2, 13, 15, seed=3)
    wide = State(state.y, *(_embed(z, channels) for z in state[1:]))
    with torch.no_grad():
        ours = stage(m, wide)
        ref = admm.iterate(m, state)
    for name, a, b in zip(State._fields, ours, ref):
        if name != "y":  # the Sobel pair's channels of T_l / T_k; the other filters' stay zero
            a = _sobel_channels(a, channels)
            assert a.shape == b.shape, name
        assert torch.allclose(a, b, atol=1e-9, rtol=0), f"{name}: max diff {(a - b).abs().max():.3g}"


def _sobel_index(channels: tuple[int, int]) -> list[int]:
    """Where the (x, y) Sobel outputs sit among T_l's (or T_k's) [specific, shared] channels."""
    spec, shared = channels
    return [spec, spec + 1] if shared >= 2 else [0, spec] if shared == 1 else [0, 1]


def _sobel_channels(z: torch.Tensor, channels: tuple[int, int]) -> torch.Tensor:
    """The Sobel channels of a stage variable; asserts the other filters' channels are 0."""
    idx = _sobel_index(channels)
    assert not z[:, [i for i in range(z.shape[1]) if i not in idx]].any()
    return z[:, idx]


def _embed(z: torch.Tensor, channels: tuple[int, int]) -> torch.Tensor:
    """A (B, 2, H, W) ADMM variable as a stage variable: the Sobel channels, zeros elsewhere."""
    wide = z.new_zeros(z.shape[0], sum(channels), *z.shape[-2:])
    wide[:, _sobel_index(channels)] = z
    return wide


def test_classical_derun_equals_admm_end_to_end():
    admm_cfg = DeRUNADMMConfig(iterations=3, lam=0.012, boundary="reflect", margin=3)
    config = DeRUNConfig(specific_channels=1, shared_channels=1, stages=3, activation="none", dfm_inverse="fft",
                         boundary="reflect", margin=3)
    model = DeRUN(config).double()
    stage = _classical_stage(config, admm_cfg)
    for i in range(3):
        model.stages[i].load_state_dict(stage.state_dict())
    u, v = _pair(13, 16, dtype=torch.float64)
    with torch.no_grad():
        a, b = model(u, v), DeRUNADMM(admm_cfg).double()(u, v)
    assert torch.allclose(a, b, atol=1e-8)


def _luminance_pair(ir_path, vis_path) -> tuple[torch.Tensor, torch.Tensor]:
    from fusecli import read_image
    from fusecli.color import rgb_to_y
    u, v = read_image(ir_path)[0], read_image(vis_path)[0]
    return tuple(x if x.shape[1] == 1 else rgb_to_y(x) for x in (u, v))


def _untrained_vs_admm(u: torch.Tensor, v: torch.Tensor) -> float:
    """Largest difference, in grey levels, of the untrained default DeRUN from derun-admm."""
    with torch.no_grad():
        return float((DeRUN().eval()(u, v) - DeRUNADMM()(u, v)).abs().max() * 255)


def test_untrained_derun_is_the_classical_solver():
    """LISTA starts at ISTA: create_model("derun", weights=None) is derun-admm, within a grey level."""
    model = create_model("derun", weights=None)
    stage = model.stages[0]
    assert model.config.init == "classical" and model.config.stages == DeRUNADMMConfig().iterations
    assert stage.lambda_h.item() == 0 and torch.equal(stage.T.share.act.weight, torch.ones(4))
    assert model.weights_info == "untrained (classical initialisation)"  # what `fusecli fuse` reports
    assert create_model("derun", weights=None, init="random").weights_info == "untrained (random initialisation)"
    assert _untrained_vs_admm(*_luminance_pair(SAMPLES / "ir.png", SAMPLES / "vis_color.png")) <= 1.0


@pytest.mark.slow
def test_untrained_derun_is_the_classical_solver_at_tno_size(ivf_pairs):
    """As above on TNO pairs 01 and 14 (without ../shared: the samples mirrored to TNO 01's 576x768)."""
    for pair in ivf_pairs("01", "14", size=(576, 768)):
        assert _untrained_vs_admm(*_luminance_pair(pair.ir, pair.vis)) <= 1.0, pair.source


def test_random_initialisation_stays_selectable():
    model = DeRUN(DeRUNConfig(init="random", stages=2))
    assert torch.equal(model.stages[0].T.share.act.weight, torch.full((4,), 0.25))
    assert model.stages[0].T.share.conv2.abs().sum() > 0 and model.stages[0].T.spec_l.conv2.abs().sum() > 0
    with pytest.raises(ConfigError, match="init"):
        DeRUNConfig(init="sobel")
    with pytest.raises(ConfigError, match="two filters"):
        DeRUNConfig(specific_channels=0, shared_channels=1)


def test_silent_filters_of_the_classical_start_get_no_gradient():
    """From the classical start the filters other than the Sobel pair are silent, and a training step
    leaves them so: their zero weights' gradients are exactly zero (why the shipped weights have 2 live
    filters of 8, and what the fast inference path skips; docs/derun-training.md, "Silent filters")."""
    from fusecli.train import RECIPES

    model = create_model("derun", weights=None).train()
    g = torch.Generator().manual_seed(0)
    u, v = torch.rand(2, 1, 32, 32, generator=g), torch.rand(2, 1, 32, 32, generator=g)
    RECIPES["derun"].loss(model, (u, v))[0].backward()
    for stage in model.stages:
        for fwd, back in ((stage.T.spec_l, stage.Tt.spec_l), (stage.T.spec_k, stage.Tt.spec_k),
                          (stage.T.share, stage.Tt.share)):
            silent = (fwd.conv2.flatten(1) == 0).all(1)  # T's zero output channels
            assert torch.equal(fwd.conv2.grad[silent], torch.zeros_like(fwd.conv2[silent]))
            assert torch.equal(back.conv1.grad[:, silent], torch.zeros_like(back.conv1[:, silent]))
        assert int((stage.T.share.conv2.flatten(1) != 0).any(1).sum()) == 2  # the live pair
        assert stage.T.share.conv2.grad.abs().sum() > 0  # the live filters do learn


def test_admm_operators_are_sobel_and_adjoint():
    admm = DeRUNADMM().double()
    x = torch.rand(2, 1, 11, 14, dtype=torch.float64)
    z = torch.rand(2, 2, 11, 14, dtype=torch.float64)
    assert torch.allclose(admm._grad(x), _circ_conv(x, sobel_kernels(torch.float64)), atol=1e-12)
    lhs = (admm._grad(x) * z).sum()
    rhs = (x * admm._grad_t(z)).sum()
    assert torch.allclose(lhs, rhs, atol=1e-10)


def _hifm_energy(y, m, cfg: DeRUNADMMConfig, admm: DeRUNADMM) -> float:
    d = admm._grad(y - m)
    return float(0.5 * ((y - m) ** 2).sum() + cfg.lam * admm._grad(y).abs().sum()
                 + cfg.mu * torch.log1p(cfg.theta * d**2).sum())


def test_admm_lowers_the_hifm_energy():
    cfg = DeRUNADMMConfig(iterations=60, boundary="circular")
    admm = DeRUNADMM(cfg).double()
    u, v = _pair(24, 30, dtype=torch.float64)
    m = u - v
    x = admm(u, v)
    y = x - v  # the clip to [0, 1] does not act on this pair's range
    assert x.min() > 0 and x.max() < 1
    energy = _hifm_energy(y, m, cfg, admm)
    assert energy < _hifm_energy(m, m, cfg, admm) * 0.9
    assert energy < _hifm_energy(torch.zeros_like(m), m, cfg, admm)


def test_cg_converges_to_the_fft_inverse_for_linear_learned_extractors():
    """Random linear PWSM (transposes initialised as adjoints): CG on the learned operator and the
    exact Fourier inverse give the same Y."""
    torch.manual_seed(0)
    fft = Stage(DeRUNConfig(activation="none", dfm_inverse="fft")).double()
    cg = Stage(DeRUNConfig(activation="none", dfm_inverse="cg", cg_steps=150)).double()
    cg.load_state_dict(fft.state_dict())
    m, _ = _random_state(1, 10, 12, seed=1)
    g = torch.Generator().manual_seed(5)
    state = State(m, *(0.1 * torch.randn(1, 8, 10, 12, generator=g, dtype=torch.float64) for _ in range(4)))
    with torch.no_grad():
        exact = fft.dfm(m, state, fft.T.k(m))
        approx = cg.dfm(m, state, cg.T.k(m))
        few = Stage(DeRUNConfig(activation="none", cg_steps=2)).double()
        few.load_state_dict(fft.state_dict())
        rough = few.dfm(m, state, few.T.k(m))
    assert torch.allclose(approx, exact, atol=1e-8)
    assert (rough - exact).abs().max() > 1e-6  # two steps are not the exact inverse: the test can fail


# --- the model: shapes, borders, batches, config ---------------------------------------------------------

@pytest.mark.parametrize("boundary", ["reflect", "mirror", "circular"])
def test_equal_sources_give_the_texture_source_back(boundary):
    """M = 0 keeps Y = 0, so X = V exactly: checks the extension and the crop (odd size)."""
    model = DeRUN(DeRUNConfig(stages=2, boundary=boundary))
    _, v = _pair(37, 53)
    with torch.no_grad():
        assert torch.equal(model(v, v), v)
        assert torch.equal(DeRUNADMM(DeRUNADMMConfig(iterations=3, boundary=boundary))(v, v), v)


def test_shapes_range_and_batch_independence():
    torch.manual_seed(0)
    model = DeRUN(DeRUNConfig(stages=2)).eval()
    u, v = _pair(37, 53, batch=3)
    u = u + 0.05 * torch.rand_like(u)  # distinct samples
    with torch.no_grad():
        out = model(u, v)
        one = model(u[1:2], v[1:2])
    assert out.shape == (3, 1, 37, 53)
    assert out.min() >= 0 and out.max() <= 1
    assert torch.allclose(out[1:2], one, atol=1e-5)


def test_bad_inputs_and_configs_are_refused():
    model = DeRUN(DeRUNConfig(stages=1))
    with pytest.raises(ShapeError):
        model(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 9))
    with pytest.raises(ShapeError):
        model(torch.rand(1, 1, 3, 8), torch.rand(1, 1, 3, 8))
    with pytest.raises(ConfigError):
        DeRUNConfig(dfm_inverse="fft")  # PReLU extractors are not linear
    with pytest.raises(ConfigError):
        DeRUNConfig(boundary="zeros")
    with pytest.raises(ConfigError):
        DeRUNADMMConfig(rho=0)


def _detail_coefficients(fused: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """benchmarks/source_share.py's coefficients of the fused detail on the two sources' details."""
    arrays = [t[0, 0].double().numpy() for t in (fused, a, b)]
    return load_benchmark("source_share").share(*arrays)[2:]


def test_shipped_ir_vis_weights_fuse_instead_of_copying_the_infrared_image():
    """derun.roadscene keeps at least (nine tenths of) the classical solver's share of the visible
    detail on the sample pair: the weights shipped until 2026-12-04 returned the infrared image
    (visible detail coefficient 0.01 here, derun-admm 0.09)."""
    from fusecli.train.data import load_luma

    u, v = load_luma(SAMPLES / "ir.png")[None], load_luma(SAMPLES / "vis.png")[None]
    with torch.no_grad():
        start = create_model("derun", weights=None)(u, v).clamp(0, 1)
        trained = create_model("derun")(u, v).clamp(0, 1)
    _, vis0 = _detail_coefficients(start, u, v)
    ir1, vis1 = _detail_coefficients(trained, u, v)
    assert vis0 > 0.05 and vis1 >= 0.9 * vis0
    assert ir1 >= 0.5  # and it is still a fusion with the infrared image's detail


def test_shipped_medical_weights_keep_the_pet_detail(shared_dir):
    """derun.harvard on the first three held-out MRI-PET pairs keeps a fifth or more of the PET detail
    (0.24-0.30 here; derun-admm 0.90 with 0.07 of the MRI's): the weights shipped until 2026-12-04
    returned the MRI's luminance (PET detail 0.08-0.09 on these pairs)."""
    from fusecli.pairs import scan_pairs
    from fusecli.train.data import load_luma
    from fusecli.train.splits import select_pairs

    data = shared_dir / "datasets" / "harvard_mri_pet"
    model = create_model("derun", weights="derun.harvard")
    for pair in select_pairs(data, scan_pairs(data).pairs, "test")[:3]:
        pet, mri = load_luma(pair.paths[0])[None], load_luma(pair.paths[1])[None]
        with torch.no_grad():
            fused = model(pet, mri).clamp(0, 1)
        pet_share, mri_share = _detail_coefficients(fused, pet, mri)
        assert pet_share >= 0.2 and mri_share >= 0.5, (pair.stem, pet_share, mri_share)


def test_registry_weights_and_checkpoint_roundtrip(tmp_path):
    # shipped weights: infrared-visible by default, medical by name; both checked against their sha256
    assert create_model("derun").weights_info.startswith("derun.roadscene (sha256 ")
    assert create_model("derun", weights="derun.harvard").weights_info.startswith("derun.harvard (sha256 ")
    admm = create_model("derun-admm")
    assert isinstance(admm, DeRUNADMM) and "fixed parameters" in admm.weights_info
    assert model_summary(get_entry("derun-admm"))["parameters"] == 0
    assert model_summary(get_entry("derun"))["parameters"] == sum(p.numel() for p in DeRUN().parameters())
    from safetensors.torch import save_file

    torch.manual_seed(1)
    model = create_model("derun", weights=None, stages=2)
    path = tmp_path / "derun.safetensors"
    save_file(model.state_dict(), str(path))
    loaded = create_model("derun", checkpoint=path, stages=2)
    u, v = _pair(20, 24)
    with torch.no_grad():
        assert torch.equal(model(u, v), loaded(u, v))
    with pytest.raises(CheckpointError, match="no code and no checkpoint"):
        create_model("derun", checkpoint=path)  # 9 stages expected: keys missing


def test_tiled_inference_runs_and_stays_close():
    model = create_model("derun-admm", iterations=10)
    u, v = _pair(50, 70)
    whole = fuse_tensors(model, [u, v])
    tiles = fuse_tensors(model, [u, v], tile=32, overlap=12)
    assert tiles.shape == whole.shape
    assert (tiles - whole).abs().mean() < 0.01


# --- the command line ------------------------------------------------------------------------------------

def _odd_colour_pair(tmp_path):
    ir = cv2.imread(str(SAMPLES / "ir.png"), cv2.IMREAD_GRAYSCALE)[40:77, 60:113]
    vis = cv2.imread(str(SAMPLES / "vis_color.png"), cv2.IMREAD_COLOR)[40:77, 60:113]
    cv2.imwrite(str(tmp_path / "ir.png"), ir)
    cv2.imwrite(str(tmp_path / "vis.png"), vis)
    return tmp_path / "ir.png", tmp_path / "vis.png", vis


def test_cli_fuses_odd_colour_with_derun_checkpoint(tmp_path):
    from safetensors.torch import save_file

    ir, vis, _ = _odd_colour_pair(tmp_path)
    torch.manual_seed(2)
    ckpt = tmp_path / "derun.safetensors"
    save_file(DeRUN().state_dict(), str(ckpt))  # the default config: 9 stages
    out = tmp_path / "fused.png"
    result = runner.invoke(app, ["fuse", str(ir), str(vis), "-o", str(out), "--model", "derun",
                                 "--checkpoint", str(ckpt), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).shape == (37, 53, 3)
    # without --checkpoint: the shipped weights; a model that ships none asks for --checkpoint
    result = runner.invoke(app, ["fuse", str(ir), str(vis), "-o", str(tmp_path / "x.png"), "--model", "derun",
                                 "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert cv2.imread(str(tmp_path / "x.png"), cv2.IMREAD_UNCHANGED).shape == (37, 53, 3)
    result = runner.invoke(app, ["fuse", str(ir), str(vis), "-o", str(tmp_path / "y.png"), "--model", "cscfuse-msf"])
    assert result.exit_code == 1 and "pass --checkpoint" in result.output


def test_batch_runs_the_fixed_parameter_solver_on_a_medical_layout(tmp_path):
    """derun-admm needs no weights in `batch` either; pet/ + mri/ puts PET first (U), MRI second (V),
    and the PET colour is kept."""
    import json

    from fusecli.batch import run_batch

    data = tmp_path / "data"
    (data / "pet").mkdir(parents=True)
    (data / "mri").mkdir()
    rng = np.random.default_rng(0)
    for stem in ("a", "b"):
        pet = np.zeros((29, 31, 3), np.uint8)
        pet[8:20, 8:22] = (40, 60, 220)  # a red (BGR) hot spot
        mri = rng.integers(60, 200, (29, 31), dtype=np.uint8)
        cv2.imwrite(str(data / "pet" / f"{stem}.png"), pet)
        cv2.imwrite(str(data / "mri" / f"{stem}.png"), mri)
    result = run_batch(data, tmp_path / "out", "derun-admm", device="cpu")
    assert result.roles == ("pet", "mri") and not result.failures
    manifest = json.loads(result.manifest.read_text())
    assert manifest["weights"] == "fixed parameters (no training)"
    fused = cv2.imread(str(tmp_path / "out" / "a.png"), cv2.IMREAD_COLOR)
    assert fused.shape == (29, 31, 3)
    b, g, r = (fused[10:18, 10:20].astype(int).mean(axis=(0, 1)))
    assert r > b + 30  # the PET hot spot stays red


# --- training ---------------------------------------------------------------------------------------------

def test_tiny_overfit_run_lowers_the_loss():
    try:
        from fusecli.losses import lgde_loss
    except ImportError:  # pragma: no cover - until the LGDE loss lands

        def lgde_loss(x, v, softness=0.1):
            def grad(t):
                return torch.cat([t.diff(dim=-1)[..., :-1, :], t.diff(dim=-2)[..., :, :-1]], 1)
            return F.mse_loss(grad(x), grad(v))

    torch.manual_seed(0)
    model = DeRUN(DeRUNConfig(stages=1, margin=2)).train()
    u, v = _pair(16, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)

    def loss_fn():
        x = model(u, v)
        return F.mse_loss(x, u) + 10 * lgde_loss(x, v, softness=0.1)

    first = loss_fn().item()
    for _ in range(12):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
    last = loss_fn().item()
    assert np.isfinite(last) and last < 0.8 * first, (first, last)


def test_a_constant_crop_trains_with_finite_gradients():
    """A crop where U = V (black background of a medical scan: the residual M = 0) starts the DFM's
    conjugate gradient at its solution. With the shipped derun.harvard weights the backward pass once
    divided by tiny**2 = 0 there and its training met NaN (fusecli.solvers.conjugate_gradient)."""
    from fusecli.train import RECIPES
    model = create_model("derun", weights="derun.harvard").train()
    g = torch.Generator().manual_seed(0)
    u, v = torch.rand(2, 1, 64, 64, generator=g), torch.rand(2, 1, 64, 64, generator=g)
    u[0], v[0] = 0, 0
    loss, _ = RECIPES["derun"].loss(model, (u, v))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
