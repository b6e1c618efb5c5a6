"""The model contract: what the inference core needs to know about a model, declared once per class.

Every registered model subclasses :class:`FusionModel` and declares a :class:`ModelSpec` as ``spec``:
a class attribute when it is fixed (``spec = ModelSpec(...)``), a property when it depends on the
config (AUIF's receptive radius, FRUFN's pad multiple). :func:`fusecli.models.register_model`
refuses a class without one, so a new model that forgets it fails at import instead of silently
getting defaults. Callers read a model's contract with :func:`spec_of` and its device with
:func:`device_of`.

A learned colour step that comes with a model's weights (a weights card's ``colornet`` section:
FRUFN / EFRUFN multi-exposure weights with a trained ColorNet) is a :class:`ColourStep`, which
:func:`fusecli.models.create_model` puts in ``model.colour_step`` and the inference core applies
(:func:`fusecli.inference.fuse_images`).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["COLOUR_MODES", "ModelSpec", "FusionModel", "ColourStep", "spec_of", "device_of", "check_model_class"]

#: how a model treats colour (:attr:`ModelSpec.colour`)
COLOUR_MODES = ("luma", "model", "cube")


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What the inference core needs to know about a model. Every field is required: a model states
    each one, none is assumed.

    Attributes:
        inputs: the roles of the sources, in the order ``model(*sources)`` takes them, e.g.
            ``("ir", "vis")``; fuse_images takes the chroma of the ``"vis"`` source when there is one.
        min_inputs: the fewest sources the model fuses (``len(inputs)`` for a fixed pair).
        max_inputs: the most sources it fuses; ``None``: no limit (CSC-MEF: any K >= 2 exposures).
        colour: ``"luma"`` (it fuses (B, 1, H, W) luminance; the inference core handles colour),
            ``"model"`` (it takes and returns (B, 3, H, W) RGB itself) or ``"cube"`` (a spectral cube
            and a guide image: :func:`fusecli.inference.fuse_cube_files`).
        pad_multiple: sources are reflect-padded to a multiple of this (H and W) before the model
            runs, and the output is cropped back; 1: no padding.
        min_size: the smallest height and width (pixels) the model accepts.
        receptive_radius: the pixels of context one output pixel depends on, when finite: tiled
            inference is then exact (each tile gets that much context, no blending); ``None``:
            unbounded (tiles overlap and are blended, close to but not equal to the whole image).
        tileable: False when the output depends on whole-image statistics, so tiles would differ
            (``--tile`` is refused).

    Raises:
        ConfigError: a field out of its range (a bug in the model's declaration).
    """

    inputs: tuple[str, ...]
    min_inputs: int
    max_inputs: int | None
    colour: str
    pad_multiple: int
    min_size: int
    receptive_radius: int | None
    tileable: bool

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, tuple) or not self.inputs or not all(isinstance(r, str) for r in self.inputs):
            raise ConfigError(f"ModelSpec.inputs must be a non-empty tuple of role names, got {self.inputs!r}")
        if self.min_inputs < 1 or (self.max_inputs is not None and self.max_inputs < self.min_inputs):
            raise ConfigError(f"ModelSpec: need 1 <= min_inputs <= max_inputs, got {self.min_inputs}, "
                              f"{self.max_inputs}")
        if self.colour not in COLOUR_MODES:
            raise ConfigError(f"ModelSpec.colour must be one of {', '.join(COLOUR_MODES)}, got {self.colour!r}")
        if self.pad_multiple < 1 or self.min_size < 1:
            raise ConfigError(f"ModelSpec: pad_multiple and min_size must be >= 1, got {self.pad_multiple}, "
                              f"{self.min_size}")
        if self.receptive_radius is not None and (self.receptive_radius < 0 or not self.tileable):
            raise ConfigError(f"ModelSpec: a finite receptive_radius must be >= 0 and the model tileable, got "
                              f"{self.receptive_radius} (tileable={self.tileable})")


@dataclass(frozen=True, eq=False)
class ColourStep:
    """A learned colour step named by a weights card: the chroma of the fused image predicted from its
    luminance and the sources' chroma, instead of copied from one source (FRUFN Remark 1, ColorNet).

    Not an ``nn.Module``: kept apart from the model's module tree, so the model's state dict stays the
    fusion network's (its weights load into, and copy from, any instance of the model class).

    Attributes:
        net: maps (fused Y (B, 1, H, W), then ``sources`` chroma tensors (B, 2, H, W) (Cb, Cr), all in
            [0, 1]) to the fused chroma (B, 2, H, W) (unclamped; neutral 0.5).
        sources: the number of colour sources it takes (ColorNet: 2).
        name: what it is, for ``weights_info`` and messages (``"ColorNet"``).
    """

    net: nn.Module
    sources: int
    name: str

    def __call__(self, fused: torch.Tensor, chroma: list[torch.Tensor]) -> torch.Tensor:
        """The fused chroma (B, 2, H, W) in [0, 1], float32, on ``fused``'s device (the net is moved there)."""
        net = self.net.to(fused.device)
        return net(fused, *[c.to(fused.device) for c in chroma]).float().clamp(0, 1)


class FusionModel(nn.Module):
    """Base class of every registered model.

    A subclass declares ``spec`` (a :class:`ModelSpec`, as a class attribute or a property) and
    ``forward(*sources)``: each source (B, 1, H, W) float32 in [0, 1] in the order of
    ``spec.inputs`` ((B, 3, H, W) RGB for ``colour="model"``), returning the fused image of the
    same size. A model whose output is ``forward_pointwise(forward_local(*sources))``, with
    ``forward_local`` confined to ``spec.receptive_radius``, sets both (the tiler then runs the
    pointwise head once on the whole image).

    ``inputs``, ``min_size``, ``pad_multiple`` and ``receptive_radius`` read the spec under the
    names callers used before :func:`spec_of` (batch, video and training code still read them).
    """

    spec: ModelSpec
    #: a learned colour step from the weights card (set by :func:`fusecli.models.create_model`);
    #: None: the inference core copies the chroma of one source
    colour_step: ColourStep | None = None
    #: the local part of ``forward`` (see the class docstring); None: ``forward`` is one piece
    forward_local: Callable[..., torch.Tensor] | None = None
    #: what the model's parameters are, one line for reports and manifests (set by
    #: :func:`fusecli.models.create_model`: a weights card and its sha256, a checkpoint file,
    #: ``"fixed parameters (no training)"``); a model built by its class alone has random ones
    weights_info: str = "random initialisation"

    @property
    def inputs(self) -> tuple[str, ...]:
        return self.spec.inputs

    @property
    def min_size(self) -> int:
        return self.spec.min_size

    @property
    def pad_multiple(self) -> int:
        return self.spec.pad_multiple

    @property
    def receptive_radius(self) -> int | None:
        return self.spec.receptive_radius


def check_model_class(cls: type) -> None:
    """Raise TypeError unless ``cls`` is a :class:`FusionModel` that declares ``spec`` (a
    :class:`ModelSpec` class attribute or a property); a fixed spec is checked here, a property when
    an instance reads it. Called by :func:`fusecli.models.register_model`, at import."""
    if not (isinstance(cls, type) and issubclass(cls, FusionModel)):
        raise TypeError(f"{cls!r} is not a fusecli.models.FusionModel subclass")
    declared = inspect.getattr_static(cls, "spec", None)
    if not isinstance(declared, (ModelSpec, property)):
        raise TypeError(f"{cls.__name__} declares no ModelSpec: add `spec = ModelSpec(inputs=..., min_inputs=..., "
                        "max_inputs=..., colour=..., pad_multiple=..., min_size=..., receptive_radius=..., "
                        "tileable=...)` (or a property returning one) to the class")


def spec_of(model: nn.Module) -> ModelSpec:
    """The :class:`ModelSpec` of ``model``.

    Raises:
        ConfigError: ``model`` is not a :class:`FusionModel` with a spec (not a fusecli model).
    """
    spec = model.spec if isinstance(model, FusionModel) else None
    if not isinstance(spec, ModelSpec):
        raise ConfigError(f"{type(model).__name__} is not a fusecli model: it declares no ModelSpec "
                          "(subclass fusecli.models.FusionModel and set `spec`)")
    return spec


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s tensors: its first parameter's, else its first buffer's; the CPU for a
    model that holds no tensor (a rule with no constants)."""
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        return tensor.device
    return torch.device("cpu")
