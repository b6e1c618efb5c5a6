"""The model contract (fusecli.models._contract): every registered model declares a ModelSpec, the
registry refuses a class without one, device_of, and the colour step a weights card brings."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from fusecli.color import merge_luma, split_luma
from fusecli.errors import ConfigError
from fusecli.inference import fuse_images, fuse_tensors
from fusecli.models import (ColourStep, FusionModel, ModelEntry, ModelSpec, create_model, device_of, list_models,
                            model_summary, register_model, spec_of)
from fusecli.models.frufn import FRUFN, FRUFNConfig

PAIR = dict(inputs=("ir", "vis"), min_inputs=2, max_inputs=2, colour="luma", pad_multiple=1, min_size=1,
            receptive_radius=None, tileable=True)


@pytest.mark.parametrize("entry", list_models(), ids=lambda e: e.name)
def test_every_registered_model_declares_its_spec(entry):
    model = entry.cls(entry.config_cls())
    spec = spec_of(model)
    assert isinstance(spec, ModelSpec)
    # the names batch, video and training code read are the spec's fields
    assert (model.inputs, model.min_size, model.pad_multiple, model.receptive_radius) == (
        spec.inputs, spec.min_size, spec.pad_multiple, spec.receptive_radius)
    assert model.colour_step is None
    assert device_of(model) == torch.device("cpu")


def test_specs_that_depend_on_the_config():
    small = dict(channels=8, heads=2, cells=1)
    assert spec_of(FRUFN(FRUFNConfig(**small))).pad_multiple == 8
    assert spec_of(FRUFN(FRUFNConfig(**small, mask_window=6, reference_size=24))).pad_multiple == 24
    assert spec_of(create_model("auif", weights=None, fusion="l1")).receptive_radius == 31


def test_every_field_is_required_and_checked():
    for name in PAIR:
        with pytest.raises(TypeError):
            ModelSpec(**{k: v for k, v in PAIR.items() if k != name})
    for bad in (dict(colour="rgb"), dict(inputs=()), dict(inputs=["ir", "vis"]), dict(min_inputs=0),
                dict(max_inputs=1), dict(pad_multiple=0), dict(min_size=0), dict(receptive_radius=-1),
                dict(receptive_radius=3, tileable=False)):
        with pytest.raises(ConfigError):
            ModelSpec(**{**PAIR, **bad})
    spec = ModelSpec(**PAIR)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.min_size = 4


def _entry(cls) -> ModelEntry:
    return ModelEntry(name="no-spec-test", cls=cls, config_cls=dict, tasks=("ir-vis",), paper="-",
                      convert_official=lambda state: state)


def test_the_registry_refuses_a_model_without_a_spec():
    class Forgot(FusionModel):
        def forward(self, a, b):
            return a

    with pytest.raises(TypeError, match="Forgot declares no ModelSpec"):
        register_model(_entry(Forgot))
    with pytest.raises(TypeError, match="FusionModel"):
        register_model(_entry(nn.Conv2d))
    assert "no-spec-test" not in [e.name for e in list_models()]


def test_a_module_that_is_not_a_fusecli_model_is_refused_not_defaulted():
    class Plain(nn.Module):
        inputs = ("ir", "vis")

        def forward(self, a, b):
            return a

    with pytest.raises(ConfigError, match="declares no ModelSpec"):
        spec_of(Plain())
    with pytest.raises(ConfigError, match="declares no ModelSpec"):
        fuse_tensors(Plain(), [torch.rand(1, 1, 8, 8)] * 2)


def test_device_of_reads_parameters_then_buffers():
    class BufferOnly(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("k", torch.ones(3, dtype=torch.float64))

    assert device_of(BufferOnly()) == torch.device("cpu")
    assert device_of(nn.Identity()) == torch.device("cpu")  # no tensors at all
    assert device_of(nn.Conv2d(1, 1, 3)) == torch.device("cpu")


def test_classical_models_count_no_trainable_parameters():
    for entry in list_models():
        if not entry.needs_weights:
            assert model_summary(entry)["parameters"] == 0


class _HalfGrey(nn.Module):
    """A stand-in ColorNet: chroma 0.25 + a tenth of the sources' mean chroma."""

    def forward(self, y, *cbcr):
        return 0.25 + 0.1 * torch.stack(cbcr).mean(0) + 0 * y


def test_a_colour_step_is_applied_by_fuse_images_and_stays_out_of_the_state_dict():
    torch.manual_seed(0)
    model = FRUFN(FRUFNConfig(channels=8, heads=2, cells=1)).eval()
    keys = set(model.state_dict())
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    plain = fuse_images(model, [a, b])
    model.colour_step = ColourStep(net=_HalfGrey(), sources=2, name="stand-in")
    assert set(model.state_dict()) == keys  # not a submodule: the fusion network's weights only
    fused, y = fuse_images(model, [a, b]), fuse_images(model, [a, b], gray=True)
    want = (0.25 + 0.1 * (split_luma(a)[1] + split_luma(b)[1]) / 2).clamp(0, 1)
    assert fused.shape == (1, 3, 16, 16) and torch.allclose(fused, merge_luma(y, want), atol=1e-6)
    assert not torch.allclose(fused, plain, atol=1e-3)
    # gray sources (no chroma) and a gray output do not use it
    assert fuse_images(model, [a[:, :1], b[:, :1]]).shape == (1, 1, 16, 16)
