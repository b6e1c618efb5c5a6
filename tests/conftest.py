"""Shared test fixtures: paths to the project's samples and to ../shared (skipped when absent).

The quick subset: ``pytest -m "not slow"`` (``slow``: a test that takes seconds even on a quiet
machine, registered in pyproject.toml); the whole suite: ``pytest``."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "samples"
SHARED = REPO.parent / "shared"
OFFICIAL_AUIF = SHARED / "checkpoints" / "official" / "auif"
OFFICIAL_CSC_IVF = SHARED / "checkpoints" / "official" / "cscfuse" / "CSC-IVF"
OFFICIAL_EFRUFN = SHARED / "checkpoints" / "official" / "frufn" / "ufnet_deq_deeper_ivf.pth"
TNO = SHARED / "datasets" / "tno"

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


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
def official_auif_dir() -> Path:
    return _need(OFFICIAL_AUIF)


@pytest.fixture
def tno_dir() -> Path:
    return _need(TNO)


@pytest.fixture(scope="session")
def official_auif():
    from fusecli import create_model
    return create_model("auif", checkpoint=_need(OFFICIAL_AUIF))


@pytest.fixture(scope="session")
def shipped_auif():
    """AUIF with its shipped weights (weights/auif.roadscene): the model of tests that need trained
    weights but not the official ones, so they run without ../shared."""
    from fusecli import create_model
    return create_model("auif")


@pytest.fixture
def auif_official_layout(tmp_path) -> Path:
    """A folder in the official AUIF layout (``TCSVT_Encoder_Base.model`` with keys ``conv1.*``,
    ``TCSVT_Encoder_Detail.model`` with ``conv2.*``, ``TCSVT_Decoder.model`` with ``decoder.*``)
    written from the shipped ``auif.roadscene`` weights: what ``--checkpoint`` reads from the
    authors' code, without ../shared."""
    from fusecli.models._weights import find_card

    state = find_card("auif.roadscene").load_state_dict()
    folder = tmp_path / "official-layout"
    folder.mkdir()
    for file, ours, theirs in (("TCSVT_Encoder_Base.model", "base.", "conv1."),
                               ("TCSVT_Encoder_Detail.model", "detail.", "conv2."),
                               ("TCSVT_Decoder.model", "decoder.", "decoder.")):
        part = {theirs + k[len(ours):]: v for k, v in state.items() if k.startswith(ours)}
        assert part, f"no {ours}* keys in the shipped AUIF weights"
        torch.save(part, folder / file)
    return folder


@pytest.fixture
def official_csc_ivf_dir() -> Path:
    return _need(OFFICIAL_CSC_IVF)


@pytest.fixture
def official_cscfuse_dir() -> Path:
    """The official CSCFuse checkpoints: CSC-IVF/ (three files), CSC-MEF/ and CSC-MSF/ (best_net.pth)."""
    return _need(SHARED / "checkpoints" / "official" / "cscfuse")


@pytest.fixture(scope="session")
def official_csc_mef():
    from fusecli import create_model
    return create_model("cscfuse-mef", checkpoint=_need(SHARED / "checkpoints" / "official" / "cscfuse" / "CSC-MEF"))


@pytest.fixture(scope="session")
def official_csc_msf():
    from fusecli import create_model
    return create_model("cscfuse-msf", checkpoint=_need(SHARED / "checkpoints" / "official" / "cscfuse" / "CSC-MSF"))


@pytest.fixture
def mefb_dir() -> Path:
    return _need(SHARED / "datasets" / "mefb")


@pytest.fixture
def cave_dir() -> Path:
    return _need(SHARED / "datasets" / "cave")


@pytest.fixture(scope="session")
def official_csc_ivf():
    from fusecli import create_model
    return create_model("cscfuse-ivf", checkpoint=_need(OFFICIAL_CSC_IVF))


def mirrored(image: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``image`` (B, C, H, W), its mirror image and itself again side by side and one above the other,
    cut to (B, C, h, w) (h <= 3H, w <= 3W): the samples at a larger size, e.g. TNO's 576x768."""
    image = torch.cat([image, image.flip(-1), image], -1)
    return torch.cat([image, image.flip(-2), image], -2)[..., :h, :w].contiguous()


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


@pytest.fixture
def official_efrufn_file() -> Path:
    return _need(OFFICIAL_EFRUFN)


@pytest.fixture
def harvard_mri_pet_dir() -> Path:
    return _need(SHARED / "datasets" / "harvard_mri_pet")


@pytest.fixture
def harvard_mri_spect_dir() -> Path:
    return _need(SHARED / "datasets" / "harvard_mri_spect")
