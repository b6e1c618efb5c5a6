"""One test per property, parametrised over every registered model (timm's tests/test_models.py):
it builds from its default config, fuses odd sizes, refuses an input below its ``min_size``, passes
gradients to every trainable parameter, its official converter round-trips its own state dict
through a checkpoint file, tiled equals untiled where its receptive radius is finite, and
``fusecli fuse`` runs it once. A newly registered model is tested by these without a line here.

Every model runs its default config from a fixed random initialisation (each fuses a 33x37 pair in
well under a second, so no test here is slow); the CLI fuse uses the shipped weights (for
``cscfuse-msf``, which ships none, a checkpoint of the random model). Needs neither ../shared nor a
GPU. The quick subset of the whole suite: ``pytest -m "not slow"``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from fusecli.cli import app
from fusecli.color import rgb_to_ycbcr
from fusecli.errors import CheckpointError, ShapeError
from fusecli.inference import fuse_tensors
from fusecli.io import read_cube, read_image, write_image
from fusecli.models import FusionModel, create_model, get_entry, list_models, spec_of

from .conftest import SAMPLES

pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors

NAMES = [entry.name for entry in list_models()]

#: parameters that by design get no gradient: CSC-IVF's first unit computes E(x) directly (its decoder
#: would act on a zero code); DeRUN's output is its last stage's x-update, so that stage's later updates
#: and their parameters do not reach it; EFRUFN's DEQ starting point is computed without autograd, as
#: in the official training (test_frufn checks the rest of its one-step gradient)
NO_GRADIENT: dict[str, set[str]] = {
    "cscfuse-ivf": {"base.units.0.dec.weight", "detail.units.0.dec.weight"},
    "derun": {f"stages.{get_entry('derun').config_cls().stages - 1}.{k}"
              for k in ("phi", "omega", "mu", "theta", "sigma", "eta", "lambda_h", "shrink.values")},
    "efrufn": {"init_conv.weight"},
}


def _default(name: str) -> FusionModel:
    """``name`` with its default config and a fixed random initialisation, in eval mode."""
    torch.manual_seed(0)
    return create_model(name, weights=None)


def _sources(model: FusionModel, h: int, w: int, batch: int = 1, seed: int = 0) -> list[torch.Tensor]:
    """Random inputs of ``model``'s kind at (h, w): ``min_inputs`` luminance (B, 1, h, w) or RGB
    (B, 3, h, w) tensors; for a cube model a (B, bands, h, w) cube and its (B, 3, 2h + 1, 2w) guide."""
    g = torch.Generator().manual_seed(seed)
    spec = spec_of(model)
    if spec.colour == "cube":
        c = model.config
        return [torch.rand(batch, c.bands, h, w, generator=g),
                torch.rand(batch, c.guide_channels, c.scale * h + 1, c.scale * w, generator=g)]
    channels = 3 if spec.colour == "model" else 1
    return [torch.rand(batch, channels, h, w, generator=g) for _ in range(spec.min_inputs)]


def _fuse(model: FusionModel, sources: list[torch.Tensor], **tiling) -> torch.Tensor:
    """The library's path: fuse_tensors (padding, size checks, tiling); a cube model's forward."""
    if spec_of(model).colour == "cube":
        with torch.no_grad():
            return model(*sources)
    return fuse_tensors(model, sources, **tiling)


def _finite_radius(name: str) -> bool:
    return spec_of(_default(name)).receptive_radius is not None


@pytest.mark.parametrize("name", NAMES)
def test_builds_from_its_default_config(name):
    entry = get_entry(name)
    model = entry.cls(entry.config_cls())
    assert isinstance(model, FusionModel)
    assert type(create_model(name, weights=None)) is entry.cls
    if entry.default_weights is not None:  # the shipped card loads, checked against its sha256
        assert create_model(name).weights_info.startswith(f"{entry.default_weights} (sha256 ")
    elif entry.needs_weights:
        with pytest.raises(CheckpointError, match="no default weights"):
            create_model(name)


@pytest.mark.parametrize("name, size", [
    pytest.param(name, size, id=f"{name}-{size[0]}x{size[1]}")  # 33 rows: CSC-MSF's one-row decoder band
    for name in NAMES for size in ((33, 37), (11, 20))])
def test_odd_sizes_give_full_size_outputs_in_range(name, size):
    model = _default(name)
    sources = _sources(model, *size, batch=2)
    out = _fuse(model, sources)
    if spec_of(model).colour == "cube":
        assert out.shape == (2, sources[0].shape[1], *sources[1].shape[-2:])
    else:
        assert out.shape == sources[0].shape
        assert out.min() >= 0 and out.max() <= 1
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


@pytest.mark.parametrize("name", NAMES)
def test_too_small_input_is_refused(name):
    model = _default(name)
    least = spec_of(model).min_size
    with pytest.raises(ShapeError, match=f"at least {least}x{least}"):
        _fuse(model, _sources(model, least - 1, 24))
    with pytest.raises(ShapeError, match=f"at least {least}x{least}"):
        _fuse(model, _sources(model, 24, least - 1))


@pytest.mark.parametrize("name", NAMES)
def test_gradients_reach_every_trainable_parameter(name):
    model = _default(name).train()
    trainable = {k: p for k, p in model.named_parameters() if p.requires_grad}
    if not trainable:  # a classical rule: complete from its config, nothing to train
        assert not get_entry(name).needs_weights
        return
    out = model(*_sources(model, 19, 23))
    (out * torch.linspace(0, 1, out.shape[-1])).mean().backward()  # not a constant: every path counts
    # reached: in the graph (a gradient can be zero at an initialisation that is a classical rule:
    # untrained auif-fusion is the average, untrained DeRUN the ADMM solver)
    reached = {k for k, p in trainable.items() if p.grad is not None}
    assert sorted(trainable.keys() - reached - NO_GRADIENT.get(name, set())) == []
    assert reached.isdisjoint(NO_GRADIENT.get(name, set()))  # the list stays true
    assert all(torch.isfinite(trainable[k].grad).all() for k in reached)


@pytest.mark.parametrize("name", NAMES)
def test_official_converter_round_trips_through_a_checkpoint(name, tmp_path):
    entry = get_entry(name)
    model = _default(name)
    state = model.state_dict()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    try:
        converted = entry.convert_official(state)  # fusecli's own keys pass through the converter
    except CheckpointError:  # a classical rule: no weights, any checkpoint refused
        assert not entry.needs_weights
        with pytest.raises(CheckpointError, match="no weights"):
            create_model(name, checkpoint=path)
        return
    assert converted.keys() == state.keys() and all(converted[k] is state[k] for k in state)
    loaded = create_model(name, checkpoint=path)
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in state.items())
    sources = _sources(model, 11, 20)
    assert torch.equal(_fuse(model, sources), _fuse(loaded, sources))


@pytest.mark.parametrize("name", [n for n in NAMES if _finite_radius(n)])
def test_tiled_equals_untiled_within_the_receptive_radius(name):
    model = _default(name)
    sources = _sources(model, 70, 83)
    whole = _fuse(model, sources)
    for tile in (32, 45):
        assert torch.equal(_fuse(model, sources, tile=tile, overlap=0), whole), tile


def _cli_inputs(model: FusionModel, tmp_path) -> tuple[list[str], tuple[int, ...]]:
    """Input files for one `fusecli fuse` of ``model`` (odd-sized crops of the samples), and the
    shape the output must have."""
    vis = read_image(SAMPLES / "vis_color.png")[0][..., 40:69, 60:97]  # (1, 3, 29, 37)
    ir = read_image(SAMPLES / "ir.png")[0][..., 40:69, 60:97]
    colour = spec_of(model).colour
    if colour == "cube":  # a 35x37 cube (larger than its 31 bands: .npy layout auto), a 70x75 guide
        guide = read_image(SAMPLES / "vis_color.png")[0][..., 40:110, 60:135]
        cube = guide.mean(1, keepdim=True).expand(1, model.config.bands, 70, 75)[..., ::2, :74:2]
        np.save(tmp_path / "cube.npy", cube[0].numpy())
        write_image(tmp_path / "guide.png", guide)
        return [str(tmp_path / "cube.npy"), str(tmp_path / "guide.png")], (1, model.config.bands, 70, 75)
    images = [vis * 0.4, (vis * 1.6).clamp(0, 1)] if colour == "model" else [ir, vis]
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"in{i}.png"))
        write_image(paths[-1], image)
    return paths, (1, 3, 29, 37)


@pytest.mark.parametrize("name", NAMES)
def test_cli_fuses_one_image(name, tmp_path):
    """Default weights (a checkpoint of the random model where none ship); odd size, colour kept."""
    entry = get_entry(name)
    model = _default(name)
    inputs, shape = _cli_inputs(model, tmp_path)
    checkpoint = []
    if entry.needs_weights and entry.default_weights is None:
        save_file(model.state_dict(), str(tmp_path / "random.safetensors"))
        checkpoint = ["--checkpoint", str(tmp_path / "random.safetensors")]
    out = tmp_path / ("fused.tif" if len(shape) == 4 and shape[1] > 3 else "fused.png")
    result = CliRunner().invoke(app, ["fuse", *inputs, "-o", str(out), "--model", name, *checkpoint,
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    fused = read_cube(out)[0] if out.suffix == ".tif" else read_image(out)[0]
    assert tuple(fused.shape) == shape
    if spec_of(model).colour == "luma":  # the chroma of the colour source is kept (where no channel clips)
        vis = read_image(inputs[1])[0]
        inside = ((fused > 0.02) & (fused < 0.98)).all(1)[0]
        assert (rgb_to_ycbcr(fused)[0, 1:] - rgb_to_ycbcr(vis)[0, 1:])[:, inside].abs().mean() < 2 / 255
