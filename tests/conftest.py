"""Shared test fixtures: paths to the project's samples and to ../shared, and stand-ins for ../shared.

A test of a property that is not about one file of ../shared runs anywhere: it takes the real data
when ../shared is here and otherwise a stand-in the project makes itself (``official_checkpoints``:
files in the authors' layouts written from the shipped or seeded weights; ``ivf_pairs``: the sample
pair for TNO's; ``cave_balloons``: a cube synthesised from the colour sample). Only figures measured
on a real file skip without it; test_shared_data.py checks that ../shared is what the stand-ins
stand for.

The quick subset: ``pytest -m "not slow"`` (``slow``: a test that takes seconds even on a quiet
machine, registered in pyproject.toml); the whole suite: ``pytest``."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SHARED = REPO.parent / "shared"
OFFICIAL = SHARED / "checkpoints" / "official"
TNO = SHARED / "datasets" / "tno"
CAVE_BALLOONS = SHARED / "datasets" / "cave" / "balloons_ms"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


def load_benchmark(name: str) -> ModuleType:
    """The script ``benchmarks/NAME.py`` as a module (imported once; the scripts import their
    neighbours by name, as they do when run from the command line)."""
    bench = str(REPO / "benchmarks")
    if bench not in sys.path:
        sys.path.insert(0, bench)
    return importlib.import_module(name)


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module of small tensors (``pytestmark = pytest.mark.usefixtures("one_thread")``):
    many small ops run fastest on one, and it avoids OpenMP spin-waiting on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared is absent in this checkout)")
    return path


@pytest.fixture
def shared_dir() -> Path:
    """../shared (skips without it): for pins of its own files (test_shared_data)."""
    return _need(SHARED)


@pytest.fixture
def tno_dir() -> Path:
    """../shared/datasets/tno (skips without it): for figures measured on TNO's files."""
    return _need(TNO)


@pytest.fixture
def mefb_dir() -> Path:
    return _need(SHARED / "datasets" / "mefb")


@pytest.fixture(scope="session")
def shipped_auif():
    """AUIF with its shipped weights (weights/auif.roadscene): the model of tests that need trained
    weights but not the official ones, so they run without ../shared."""
    from fusecli import create_model
    return create_model("auif")


# --- official checkpoints: ../shared's files, else the same layouts written from our weights ---------

_CSC_UNIT_PARTS = {"dec.weight": "conv.conv_decoder.de_conv0.conv2d.weight",
                   "enc.weight": "conv.conv_encoder.en_conv0.conv2d.weight",
                   "act.weight": "activation.weight", "act.theta": "activation.theta"}


def _csc_unit(key: str) -> tuple[int, str]:
    """``I.PART`` of a CSC DCU (fusecli) -> (I, the authors' PART)."""
    index, _, part = key.partition(".")
    return int(index), part if part.startswith("norm.") else _CSC_UNIT_PARTS[part]


def _official_key(model: str, key: str, n_units: int) -> tuple[str, str]:
    """(file, key) of fusecli's ``key`` of ``model`` in the authors' checkpoint."""
    head, _, rest = key.partition(".")
    if model == "auif":
        file, theirs = {"base": ("TCSVT_Encoder_Base.model", "conv1"),
                        "detail": ("TCSVT_Encoder_Detail.model", "conv2"),
                        "decoder": ("TCSVT_Decoder.model", "decoder")}[head]
        return file, f"{theirs}.{rest}"
    if model == "cscfuse-ivf":
        if head == "decoder":
            return "LISTA_Decoder.model", f"decode_last.{rest}"
        index, part = _csc_unit(rest.removeprefix("units."))
        layer = "convLayer0" if index == 0 else f"convLayer.{index - 1}"
        return {"base": "LISTA_Base_Train.model", "detail": "LISTA_Detail_Train.model"}[head], f"{layer}.{part}"
    if model == "cscfuse-mef":  # weight_net.{head, head_norm, head_act, units.I, tail}
        unit, _, rest = rest.partition(".")
        if unit == "units":
            index, part = _csc_unit(rest)
            return "best_net.pth", f"main.{index + 3}.{part}"
        return "best_net.pth", {"head": "main.0.conv2d.weight", "head_norm": f"main.1.{rest}",
                                "head_act": "main.2.theta", "tail": f"main.{n_units + 3}.conv2d.weight"}[unit]
    if model == "cscfuse-msf":  # {guide, cube}_backbone.{conv0, act0, units.I}, decoder.weight
        if head == "decoder":
            return "best_net.pth", "decoder.conv0.weight"
        branch = {"guide_backbone": "backbone_guide", "cube_backbone": "backbone_lr"}[head]
        if rest.startswith("units."):
            index, part = _csc_unit(rest.removeprefix("units."))
            return "best_net.pth", f"{branch}.csc{index + 1}.{part}"
        return "best_net.pth", f"{branch}.{rest.replace('act0.', 'relu0.')}"
    if model == "efrufn":
        from fusecli.models.frufn import _CELL_PREFIXES

        if head == "cell":
            old, new = next((old, new) for old, new in _CELL_PREFIXES if rest.startswith(new))
            return "ufnet_deq_deeper_ivf.pth", f"update_block.{old}{rest[len(new):]}"
        return "ufnet_deq_deeper_ivf.pth", {"enc_vis": f"encoder1.{rest}", "enc_ir": f"encoder2.{rest}", "decoder": key,
                                            "init_conv": f"update_block.trans.0.{rest}"}[head]
    raise ValueError(f"no official layout for {model}")


def official_layout(model: str, state: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    """fusecli's ``state`` of ``model`` (auif, cscfuse-ivf/-mef/-msf, efrufn) in the authors' layout,
    ``{file name: state dict}`` (../shared/reference/official-models.md): the inverse of the model
    module's ``convert_official``. test_shared_data checks it against the official files."""
    n_units = len({k.split(".")[2] for k in state if k.startswith("weight_net.units.")})
    files: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        file, name = _official_key(model, key, n_units)
        files.setdefault(file, {})[name] = value
    return files


def write_official_layout(folder: Path, model: str, state: dict[str, torch.Tensor]) -> Path:
    """``official_layout(model, state)`` saved as torch files in ``folder``; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for file, part in official_layout(model, state).items():
        torch.save(part, folder / file)
    return folder


def randomise_norms(model: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and some negative soft thresholds (as trained weights have)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                module.weight.copy_(torch.rand(n, generator=g) + 0.5)
                module.bias.copy_(torch.randn(n, generator=g) * 0.1)
            if hasattr(module, "theta") and isinstance(module.theta, torch.nn.Parameter):
                module.theta.copy_(torch.randn(module.theta.shape, generator=g) * 0.05)


def seeded_csc_msf_state() -> dict[str, torch.Tensor]:
    """CSC-MSF of the official architecture (256 channels) at seed 0 with ``randomise_norms``: no
    CSC-MSF weights are shipped."""
    from fusecli.models.cscfuse_msf import CSCMSF

    torch.manual_seed(0)
    model = CSCMSF()
    randomise_norms(model, 0)
    return model.state_dict()


#: the official checkpoints: (folder under ../shared/checkpoints/official, model, what stands in for it)
OFFICIAL_FILES = (("auif", "auif", "auif.roadscene"), ("cscfuse/CSC-IVF", "cscfuse-ivf", "cscfuse-ivf.roadscene"),
                  ("cscfuse/CSC-MEF", "cscfuse-mef", "cscfuse-mef.mefb"), ("cscfuse/CSC-MSF", "cscfuse-msf", None),
                  ("frufn", "efrufn", "efrufn.ivf"))


def stand_in_state(card: str | None) -> dict[str, torch.Tensor]:
    """The weights of an official checkpoint's stand-in: the shipped ``card``'s, or (None, CSC-MSF)
    ``seeded_csc_msf_state``."""
    from fusecli.models._weights import find_card

    return seeded_csc_msf_state() if card is None else find_card(card).load_state_dict()


@pytest.fixture(scope="session")
def official_checkpoints(tmp_path_factory) -> Path:
    """../shared/checkpoints/official, else a folder of the same files in the same layouts
    (``auif/``, ``cscfuse/CSC-IVF/``: three files each; ``cscfuse/CSC-{MEF,MSF}/best_net.pth``;
    ``frufn/ufnet_deq_deeper_ivf.pth``) written from the shipped auif.roadscene,
    cscfuse-ivf.roadscene, cscfuse-mef.mefb and efrufn.ivf weights and ``seeded_csc_msf_state``:
    what a test of "a checkpoint in the official layout" loads."""
    if OFFICIAL.exists():
        return OFFICIAL
    root = tmp_path_factory.mktemp("official")
    for folder, model, card in OFFICIAL_FILES:
        write_official_layout(root / folder, model, stand_in_state(card))
    return root


@pytest.fixture
def auif_official_layout(tmp_path) -> Path:
    """A folder in the official AUIF layout (``TCSVT_Encoder_Base.model`` with keys ``conv1.*``,
    ``TCSVT_Encoder_Detail.model`` with ``conv2.*``, ``TCSVT_Decoder.model`` with ``decoder.*``)
    written from the shipped ``auif.roadscene`` weights: what ``--checkpoint`` reads from the
    authors' code, without ../shared."""
    return write_official_layout(tmp_path / "official-layout", "auif", stand_in_state("auif.roadscene"))


@pytest.fixture(scope="session")
def official_csc_msf():
    """CSC-MSF with the authors' trained weights (skips without ../shared: no CSC-MSF weights are
    shipped, and its tests of trained behaviour have no stand-in)."""
    from fusecli import create_model
    return create_model("cscfuse-msf", checkpoint=_need(OFFICIAL / "cscfuse" / "CSC-MSF"))


# --- images: TNO's and CAVE's, else stand-ins made from the samples ----------------------------------

def mirrored(image: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``image`` (B, C, H, W), its mirror image and itself again side by side and one above the other,
    cut to (B, C, h, w) (h <= 3H, w <= 3W): the samples at a larger size, e.g. TNO's 576x768."""
    image = torch.cat([image, image.flip(-1), image], -1)
    return torch.cat([image, image.flip(-2), image], -2)[..., :h, :w].contiguous()


class IVFPair(NamedTuple):
    ir: Path
    vis: Path
    source: str  # "TNO 05" or "samples"


@pytest.fixture
def ivf_pairs(tmp_path):
    """``ivf_pairs("01", "17", size=(h, w))``: TNO's pairs with these stems (all 42 without stems) as
    files (IVFPair) when ../shared is here, else the one sample pair (samples/ir.png, vis.png;
    mirrored to h x w when a size is given: TNO's). For properties of any infrared-visible pair."""
    def pairs(*stems: str, size: tuple[int, int] | None = None) -> list[IVFPair]:
        if TNO.exists():
            stems = stems or tuple(sorted(p.stem for p in (TNO / "ir").iterdir()))
            return [IVFPair(TNO / "ir" / f"{s}.png", TNO / "vis" / f"{s}.png", f"TNO {s}") for s in stems]
        if size is None:
            return [IVFPair(SAMPLES / "ir.png", SAMPLES / "vis.png", "samples")]
        from fusecli.io import read_image, write_image

        paths = [write_image(tmp_path / f"{name}-{size[0]}x{size[1]}.png",
                             mirrored(read_image(SAMPLES / f"{name}.png")[0], *size)) for name in ("ir", "vis")]
        return [IVFPair(*paths, "samples")]
    return pairs


def synth_cube(rgb: torch.Tensor) -> torch.Tensor:
    """A 31-band cube (400-700 nm) from an RGB image: each channel times a smooth Gaussian spectrum
    (R 610 nm, G 545 nm, B 450 nm, sigma 40 nm), scaled to a maximum of 1. (1, 31, H, W)."""
    wavelengths = torch.linspace(400, 700, 31)
    basis = torch.stack([torch.exp(-0.5 * ((wavelengths - c) / 40) ** 2) for c in (610.0, 545.0, 450.0)])
    cube = torch.einsum("bchw,cl->blhw", rgb, basis)
    return cube / cube.max()


@pytest.fixture(scope="session")
def cave_balloons(tmp_path_factory) -> Path:
    """CAVE's ``balloons_ms`` folder (31 16-bit band PNGs ``balloons_ms_01.png`` ... ``_31.png`` and
    the colour ``balloons_RGB.bmp``, 512 x 512) from ../shared, else one in that layout: the colour
    sample mirrored to 512 x 512 and ``synth_cube`` of it."""
    if CAVE_BALLOONS.exists():
        return CAVE_BALLOONS
    from fusecli.io import read_image, write_cube, write_image

    folder = tmp_path_factory.mktemp("cave") / "balloons_ms"
    rgb = mirrored(read_image(SAMPLES / "vis_color.png")[0], 512, 512)
    write_cube(folder, synth_cube(rgb))  # a folder: 16-bit band PNGs
    write_image(folder / "balloons_RGB.bmp", rgb)
    return folder


def fusion_triplet(h: int = 30, w: int = 34, *, seed: int, fused_noise: float):
    """A synthetic (fused, A, B) triplet of 0-255 gray float arrays for metric tests: A is a
    textured pattern, B a ramp with heavy noise, F their mean plus ``fused_noise``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.clip(110 + 80 * np.sin(xx / 5.0) + rng.normal(0, 10, (h, w)), 0, 255).round()
    b = np.clip(30 + 4 * yy + rng.normal(0, 25, (h, w)), 0, 255).round()
    f = np.clip(0.5 * a + 0.5 * b + rng.normal(0, fused_noise, (h, w)), 0, 255).round()
    return f, a, b

