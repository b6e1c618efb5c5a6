"""The model registry: name -> implementation, config, official-checkpoint converter, default weights.

Every model module registers itself here with one :func:`register_model` call at import time; the
modules are imported explicitly at the bottom of this file (no filesystem scanning), so
``grep register_model`` finds every model.

Models share one calling convention: ``model(*sources)`` with each source a (B, 1, H, W) float32
tensor in [0, 1] in the order its spec's ``inputs`` names (e.g. ``("ir", "vis")``), returning the
fused (B, 1, H, W) tensor in [0, 1]. Every model class subclasses :class:`FusionModel` and declares a
:class:`ModelSpec` (roles and number of sources, colour mode, pad multiple, smallest size, receptive
radius, whether it tiles); :func:`register_model` refuses a class without one. Callers read it with
:func:`spec_of` and a model's device with :func:`device_of` (see :mod:`fusecli.models._contract`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, ConfigError, UnknownNameError
from ._contract import ColourStep, FusionModel, ModelSpec, check_model_class, device_of, spec_of
from ._weights import Card, find_card, load_state_dict, read_card

__all__ = ["DEFAULT_MODEL", "ModelEntry", "register_model", "get_entry", "list_models", "model_summary", "create_model",
           "Card", "ModelSpec", "FusionModel", "ColourStep", "spec_of", "device_of"]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one model.

    Attributes:
        name: registry name (``fusecli fuse --model NAME``).
        cls: the model class (a :class:`FusionModel` declaring its :class:`ModelSpec`); built as
            ``cls(config)``.
        config_cls: its frozen config dataclass.
        tasks: fusion tasks it is meant for (``"ir-vis"``, ``"medical"``, ...).
        paper: short citation of the source paper.
        convert_official: maps an official checkpoint's state dict onto ``cls``'s keys.
        default_weights: name of the card in ``weights/`` used when no checkpoint is given.
        official_hint: how the official checkpoint is laid out (shown when loading fails).
        needs_weights: False for a fixed-parameter model (a classical solver such as
            ``derun-admm``): it is complete from its config, so without a checkpoint or card it is
            built as it is instead of demanding ``--checkpoint``.
    """

    name: str
    cls: type[nn.Module]
    config_cls: type
    tasks: tuple[str, ...]
    paper: str
    convert_official: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
    default_weights: str | None = None
    official_hint: str = ""
    needs_weights: bool = True


_MODELS: dict[str, ModelEntry] = {}

#: the model of ``fusecli fuse`` / ``batch`` / ``robustness`` without ``--model``: the infrared-visible
#: default, chosen by ``benchmarks/ivf_default.py`` (day and night pairs, the lowlight sweep)
DEFAULT_MODEL = "auif-fusion"


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add ``entry`` to the registry (at import of the model's module).

    Raises:
        ValueError: the name is taken.
        TypeError: ``entry.cls`` is not a :class:`FusionModel` declaring its :class:`ModelSpec`.
    """
    if entry.name in _MODELS:
        raise ValueError(f"model {entry.name!r} registered twice")
    check_model_class(entry.cls)
    _MODELS[entry.name] = entry
    return entry


def get_entry(name: str) -> ModelEntry:
    """The registry entry of ``name`` (case-insensitive). Raises UnknownNameError."""
    entry = _MODELS.get(name.lower())
    if entry is None:
        raise UnknownNameError("model", name, _MODELS)
    return entry


def list_models() -> list[ModelEntry]:
    return [_MODELS[k] for k in sorted(_MODELS)]


def model_summary(entry: ModelEntry) -> dict[str, Any]:
    """Name, tasks, trainable-parameter count (of the default config), default weights and paper of a model."""
    n_params = sum(p.numel() for p in entry.cls(entry.config_cls()).parameters() if p.requires_grad)
    return {"name": entry.name, "tasks": entry.tasks, "parameters": n_params,
            "default_weights": entry.default_weights, "needs_weights": entry.needs_weights, "paper": entry.paper}


def build_config(entry: ModelEntry, values: dict[str, Any] | None = None, **overrides: Any):
    """``entry.config_cls`` from a dict (e.g. a card's ``config``) plus overrides; unknown keys are errors."""
    merged = {**(values or {}), **{k: v for k, v in overrides.items() if v is not None}}
    known = {f.name for f in dataclasses.fields(entry.config_cls)}
    unknown = sorted(set(merged) - known)
    if unknown:
        raise ConfigError(f"{entry.name} has no config option(s) {', '.join(unknown)}; "
                          f"valid: {', '.join(sorted(known))}")
    return entry.config_cls(**merged)


def create_model(
    name: str,
    *,
    checkpoint: str | Path | None = None,
    weights: str | None = "default",
    device: str | torch.device = "cpu",
    **config_overrides: Any,
) -> nn.Module:
    """Build a registered model in eval mode, with weights.

    Args:
        name: registry name, e.g. ``"auif"``.
        checkpoint: a checkpoint file or folder: fusecli's own (``.safetensors`` / ``.pt``), a weights
            card (``.yaml``, as ``fusecli train`` writes), or the authors' official file(s); takes
            precedence over ``weights``.
        weights: name of a card in ``weights/`` (``"default"``: the model's default card; ``None``:
            untrained: the config's initialisation, random or, for DeRUN, its classical solver).
        device: where to put the model.
        **config_overrides: config fields to change (e.g. ``fusion="l1"``); ``None`` values ignored.

    Returns:
        The model, on ``device``, in eval mode, with attribute ``weights_info`` (a short string
        naming the weights and their sha256) for manifests and logs, and ``colour_step``: the
        :class:`ColourStep` its weights card names (FRUFN / EFRUFN multi-exposure weights with a
        trained ColorNet, the card's ``colornet`` section), else None.

    Raises:
        UnknownNameError, CheckpointError, ConfigError.
    """
    entry = get_entry(name)
    card: Card | None = None
    if checkpoint is not None and Path(checkpoint).suffix.lower() in (".yaml", ".yml"):
        card, checkpoint = read_card(Path(checkpoint)), None  # a card (e.g. from `fusecli train`)
    elif checkpoint is None and weights is not None:
        card_name = entry.default_weights if weights == "default" else weights
        if card_name is None and entry.needs_weights:
            raise CheckpointError(f"model {entry.name!r} ships no default weights; pass --checkpoint")
        if card_name is not None:
            card = find_card(card_name)
    if card is not None and card.model != entry.name:  # a card given by name or as --checkpoint CARD.yaml
        raise CheckpointError(f"weights card {card.name!r} ({card.path}) is for model {card.model!r}, "
                              f"not {entry.name!r}")
    config = build_config(entry, card.config if card else None, **config_overrides)
    model = entry.cls(config)
    if checkpoint is not None:
        state, info = load_state_dict(checkpoint)
        _load_into(model, entry, entry.convert_official(state), source=str(checkpoint))
        model.weights_info = info
    elif card is not None:
        state = card.load_state_dict()
        _load_into(model, entry, state, source=str(card.path))
        model.weights_info = f"{card.name} (sha256 {card.sha256[:12]})"
        if card.extra.get("colornet") is not None:  # FRUFN/EFRUFN multi-exposure weights: chroma network
            from .colornet import load_from_card
            net = load_from_card(card.extra["colornet"], card.path).to(device)
            model.colour_step = ColourStep(net=net, sources=2, name="ColorNet")
            model.weights_info += f" + {model.colour_step.name}"
    else:
        init = getattr(getattr(model, "config", None), "init", "random")  # e.g. DeRUN starts at its classical solver
        model.weights_info = (f"untrained ({init} initialisation)" if entry.needs_weights
                              else "fixed parameters (no training)")
    return model.to(device).eval()


def _load_into(model: nn.Module, entry: ModelEntry, state: dict[str, torch.Tensor], source: str) -> None:
    """Strict load with an error that lists the missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
             for k in sorted(set(own) & set(state)) if own[k].shape != state[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                more = f" (+{len(keys) - 3} more)" if len(keys) > 3 else ""
                parts.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
        hint = f" {entry.official_hint}" if entry.official_hint else ""
        raise CheckpointError(f"checkpoint {source} does not fit model {entry.name!r}: {'; '.join(parts)}.{hint}")
    model.load_state_dict(state, strict=True)


# --- the models ---------------------------------------------------------------------------------
from . import auif as _auif  # noqa: E402

register_model(ModelEntry(
    name="auif",
    cls=_auif.AUIF,
    config_cls=_auif.AUIFConfig,
    tasks=("ir-vis",),
    paper="Zhao et al., Efficient and Model-Based IR-VIS Fusion via Algorithm Unrolling, TCSVT 2021",
    convert_official=_auif.convert_official,
    default_weights="auif.roadscene",
    official_hint="The official AUIF checkpoint is three files (TCSVT_Encoder_Base.model, "
                  "TCSVT_Encoder_Detail.model, TCSVT_Decoder.model): pass the folder that holds them.",
))


from . import auif_fusion as _auif_fusion  # noqa: E402

register_model(ModelEntry(
    name="auif-fusion",
    cls=_auif_fusion.AUIFFusion,
    config_cls=_auif_fusion.AUIFFusionConfig,
    tasks=("ir-vis",),
    paper="fusecli: AUIF's unrolled encoders (Zhao et al., TCSVT 2021) with a learned fusion step, trained end "
          "to end as a fusion network (intensity + gradient loss, darkened visible images)",
    convert_official=_auif_fusion.convert_official,
    default_weights="auif-fusion.roadscene",
    official_hint="auif-fusion is fusecli's model: only checkpoints written by `fusecli train auif-fusion` load.",
))


from . import cscfuse_ivf as _cscfuse_ivf  # noqa: E402

register_model(ModelEntry(
    name="cscfuse-ivf",
    cls=_cscfuse_ivf.CSCIVF,
    config_cls=_cscfuse_ivf.CSCIVFConfig,
    tasks=("ir-vis",),
    paper="Zhao et al., Deep Convolutional Sparse Coding Networks for Interpretable Image Fusion, CVPRW 2023",
    convert_official=_cscfuse_ivf.convert_official,
    default_weights="cscfuse-ivf.roadscene",
    official_hint="The official CSC-IVF checkpoint is three files (LISTA_Base_Train.model, "
                  "LISTA_Detail_Train.model, LISTA_Decoder.model; IF-CSCFuse/CSC-IVF/Train_result): "
                  "pass the folder that holds them.",
))


from . import derun as _derun  # noqa: E402

register_model(ModelEntry(
    name="derun",
    cls=_derun.DeRUN,
    config_cls=_derun.DeRUNConfig,
    tasks=("ir-vis", "medical"),
    paper="He et al., Degradation-Resistant Unfolding Network for Heterogeneous Image Fusion, ICCV 2023",
    convert_official=_derun.convert_official,
    default_weights="derun.roadscene",
    official_hint="The DeRUN authors released no code and no checkpoint: only checkpoints written by fusecli "
                  "(`fusecli train derun`, or a state dict of fusecli's DeRUN) load.",
))

register_model(ModelEntry(
    name="derun-admm",
    cls=_derun.DeRUNADMM,
    config_cls=_derun.DeRUNADMMConfig,
    tasks=("ir-vis", "medical"),
    paper="He et al., ICCV 2023: the HIFM model solved by plain ADMM with Sobel operators (Table 3a PM+OS)",
    convert_official=_derun.convert_official,
    default_weights=None,
    official_hint="derun-admm is a classical solver with fixed parameters: it needs no checkpoint.",
    needs_weights=False,
))


from . import efrufn as _efrufn  # noqa: E402
from . import frufn as _frufn  # noqa: E402

register_model(ModelEntry(
    name="frufn",
    cls=_frufn.FRUFN,
    config_cls=_frufn.FRUFNConfig,
    tasks=("ir-vis", "multi-exposure", "multi-focus", "medical"),
    paper="Wang et al., A General Image Fusion Approach Exploiting Gradient Transfer Learning and "
          "Fusion Rule Unfolding, TPAMI 2026 (FRUFN)",
    convert_official=_frufn.convert_official,
    default_weights="frufn.ivf",
    official_hint="The official FRUFN weights (ufnet_deeper_ivf_sd.pth, keys encoder1/encoder2/u1..u5/decoder) "
                  "are not public; the one official file, ufnet_deq_deeper_ivf.pth, is EFRUFN: use --model efrufn.",
))

register_model(ModelEntry(
    name="efrufn",
    cls=_efrufn.EFRUFN,
    config_cls=_efrufn.EFRUFNConfig,
    tasks=("ir-vis", "multi-exposure", "multi-focus", "medical"),
    paper="Wang et al., A General Image Fusion Approach Exploiting Gradient Transfer Learning and "
          "Fusion Rule Unfolding, TPAMI 2026 (EFRUFN, the DEQ form)",
    convert_official=_efrufn.convert_official,
    default_weights="efrufn.ivf",
    official_hint="The official EFRUFN checkpoint is one file, ufnet_deq_deeper_ivf.pth "
                  "(wwhappylife/FRUFN models/model/): pass that file.",
))


from . import cscfuse_mef as _cscfuse_mef  # noqa: E402
from . import cscfuse_msf as _cscfuse_msf  # noqa: E402

register_model(ModelEntry(
    name="cscfuse-mef",
    cls=_cscfuse_mef.CSCMEF,
    config_cls=_cscfuse_mef.CSCMEFConfig,
    tasks=("multi-exposure",),
    paper="Zhao et al., Deep Convolutional Sparse Coding Networks for Interpretable Image Fusion, CVPRW 2023 "
          "(CSC-MEF)",
    convert_official=_cscfuse_mef.convert_official,
    default_weights="cscfuse-mef.mefb",
    official_hint="The official CSC-MEF checkpoint is one file, best_net.pth (IF-CSCFuse/CSC-MEF, keys main.0-5.*): "
                  "pass that file (or its folder).",
))

register_model(ModelEntry(
    name="cscfuse-msf",
    cls=_cscfuse_msf.CSCMSF,
    config_cls=_cscfuse_msf.CSCMSFConfig,
    tasks=("spectral-sr",),
    paper="Zhao et al., Deep Convolutional Sparse Coding Networks for Interpretable Image Fusion, CVPRW 2023 "
          "(CSC-MSF: 31-band cube x2, RGB-guided)",
    convert_official=_cscfuse_msf.convert_official,
    default_weights=None,
    official_hint="The official CSC-MSF checkpoint is one file, best_net.pth (IF-CSCFuse/CSC-MSF, 256 channels, "
                  "keys backbone_guide.*, backbone_lr.*, decoder.conv0.weight): pass that file (or its folder).",
))


from . import classical as _classical  # noqa: E402

for _name, _cls, _cfg, _rule in (
    ("average", _classical.AverageFusion, _classical.ClassicalConfig, "F = (A + B) / 2 per pixel"),
    ("max", _classical.MaxFusion, _classical.ClassicalConfig, "F = max(A, B) per pixel"),
    ("laplacian", _classical.LaplacianFusion, _classical.LaplacianConfig,
     "Laplacian pyramid (Burt & Adelson 1983): average of the coarsest level, larger-magnitude detail "
     "coefficient per level, 4 levels"),
):
    register_model(ModelEntry(
        name=_name,
        cls=_cls,
        config_cls=_cfg,
        tasks=("ir-vis", "medical"),
        paper=f"classical rule: {_rule}",
        convert_official=_classical.convert_official,
        default_weights=None,
        official_hint="The classical rules have no weights.",
        needs_weights=False,
    ))
