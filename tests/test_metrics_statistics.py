"""EN, SD, SF, AG against independent numpy references, and the metrics registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusecli.errors import ShapeError, UnknownNameError
from fusecli.metrics import (
    MetricSpec,
    as_gray_255,
    evaluate,
    evaluate_arrays,
    get_metric,
    list_metrics,
)
from fusecli.metrics.statistics import ag, en, sd, sf

# ---------------------------------------------------------------- numpy references


def np_en(f: np.ndarray) -> float:
    counts = np.bincount(np.round(f).astype(np.int64).ravel(), minlength=256)
    p = counts[counts > 0] / f.size
    return float(-(p * np.log2(p)).sum())


def np_sd(f: np.ndarray) -> float:
    return float(np.std(f.astype(np.float64)))


def np_sf(f: np.ndarray, convention: str) -> float:
    f = f.astype(np.float64)
    h, w = f.shape
    rf = sum((f[i, j] - f[i, j - 1]) ** 2 for i in range(h) for j in range(1, w))
    cf = sum((f[i, j] - f[i - 1, j]) ** 2 for i in range(1, h) for j in range(w))
    if convention == "vifb":
        return math.sqrt(rf / (h * w) + cf / (h * w))
    return math.sqrt(rf / (h * (w - 1)) + cf / ((h - 1) * w))


def np_ag(f: np.ndarray, convention: str) -> float:
    f = f.astype(np.float64)
    h, w = f.shape
    gy, gx = np.gradient(f)
    s = np.sqrt((gx**2 + gy**2) / 2).sum()
    return float(s / (h * w) if convention == "cddfuse" else s / ((h - 1) * (w - 1)))


def images() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1234)
    yy, xx = np.mgrid[0:37, 0:53]
    return {
        "random_u8": rng.integers(0, 256, (37, 53), dtype=np.uint8),
        "random_float": rng.uniform(0, 255, (41, 29)),
        "blobs": (127 + 100 * np.sin(xx / 5.0) * np.cos(yy / 7.0)).astype(np.float64),
        "checker": (((yy // 4 + xx // 4) % 2) * 200 + 20).astype(np.uint8),
        "tiny": np.array([[0, 255], [17, 3]], dtype=np.uint8),
    }


IMAGES = images()
CONVS = ["cddfuse", "matlab", "vifb"]

# ---------------------------------------------------------------- values


@pytest.mark.parametrize("key", IMAGES)
def test_en_sd_match_numpy(key):
    f = IMAGES[key]
    assert en(f).item() == pytest.approx(np_en(f), abs=1e-12)
    assert sd(f).item() == pytest.approx(np_sd(f), rel=1e-12)


def test_en_matches_np_histogram():
    f = IMAGES["random_u8"]
    counts, _ = np.histogram(f, bins=256, range=(0, 256))
    p = counts[counts > 0] / f.size
    assert en(f).item() == pytest.approx(-(p * np.log2(p)).sum(), abs=1e-12)


@pytest.mark.parametrize("conv", CONVS)
@pytest.mark.parametrize("key", IMAGES)
def test_sf_ag_match_numpy(key, conv):
    f = IMAGES[key]
    assert sf(f, convention=conv).item() == pytest.approx(np_sf(f, conv), rel=1e-12)
    assert ag(f, convention=conv).item() == pytest.approx(np_ag(f, conv), rel=1e-12)


def test_outputs_are_float64_shape_b():
    for fn in (en, sd, sf, ag):
        out = fn(IMAGES["random_u8"])
        assert out.shape == (1,) and out.dtype == torch.float64


# ---------------------------------------------------------------- hand-checkable cases


@pytest.mark.parametrize("conv", CONVS)
def test_constant_image_is_all_zero(conv):
    f = np.full((16, 24), 77, dtype=np.uint8)
    assert en(f).item() == 0
    assert sd(f).item() == 0
    assert sf(f, convention=conv).item() == 0
    assert ag(f, convention=conv).item() == 0


def test_two_level_half_half_is_one_bit():
    f = np.zeros((10, 20), dtype=np.uint8)
    f[:, 10:] = 200
    assert en(f).item() == pytest.approx(1.0, abs=1e-15)
    assert sd(f).item() == pytest.approx(100.0)


def test_horizontal_ramp_step_one():
    f = np.tile(np.arange(30, dtype=np.float64), (12, 1))  # F(i, j) = j
    assert sf(f).item() == pytest.approx(1.0, abs=1e-15)  # RF = 1, CF = 0
    assert ag(f).item() == pytest.approx(math.sqrt(0.5), abs=1e-15)  # gx = 1, gy = 0
    assert ag(f, convention="matlab").item() == pytest.approx(
        math.sqrt(0.5) * 12 * 30 / (11 * 29), abs=1e-14
    )
    assert sf(f, convention="vifb").item() == pytest.approx(math.sqrt(29 / 30), abs=1e-15)


def test_en_rounds_and_clamps():
    f = np.array([[0.4, 0.6], [-5.0, 300.0]])  # -> 0, 1, 0, 255
    assert en(f).item() == pytest.approx(1.5)


# ---------------------------------------------------------------- batching and input forms


def test_batch_equals_singles():
    rng = np.random.default_rng(7)
    singles = [rng.integers(0, 256, (20, 31)).astype(np.float64) for _ in range(3)]
    batch = torch.from_numpy(np.stack(singles)[:, None])  # (3, 1, 20, 31)
    for fn, kw in [(en, {}), (sd, {}), (sf, {"convention": "vifb"}), (ag, {"convention": "matlab"})]:
        out = fn(batch, **kw)
        assert out.shape == (3,)
        for k, s in enumerate(singles):
            assert out[k].item() == pytest.approx(fn(s, **kw).item(), rel=1e-14)


def test_input_forms_agree():
    f = IMAGES["random_u8"]
    ref = sf(f).item()
    for x in (f[None], f[None, None], torch.from_numpy(f), torch.from_numpy(f).float()[None]):
        assert sf(x).item() == pytest.approx(ref, rel=1e-12)
    assert as_gray_255(f).shape == (1, 1, 37, 53)
    assert as_gray_255(torch.ones(2, 1, 4, 5, dtype=torch.uint8)).dtype == torch.float64


@pytest.mark.parametrize(
    "shape", [(8, 9, 3), (3, 8, 9), (2, 3, 8, 9), (1, 8, 9, 3)], ids=lambda s: "x".join(map(str, s))
)
def test_rgb_input_raises_shape_error(shape):
    with pytest.raises(ShapeError, match="gray"):
        en(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize("shape", [(5,), (2, 8, 9), (1, 1, 1, 8, 9), (1, 9), (8, 1), (0, 1, 4, 4)])
def test_bad_shapes_raise_shape_error(shape):
    with pytest.raises(ShapeError):
        sd(np.zeros(shape))


def test_non_finite_and_non_numeric_raise():
    with pytest.raises(ShapeError, match="NaN"):
        en(np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ShapeError):
        en([[1, 2], [3, 4]])
    with pytest.raises(ShapeError):
        en(np.array([["a", "b"], ["c", "d"]]))


def test_unknown_convention():
    with pytest.raises(UnknownNameError, match="convention") as e:
        sf(IMAGES["tiny"], convention="vifbb")
    assert "vifb" in str(e.value)
    with pytest.raises(KeyError):  # UnknownNameError is also a KeyError
        ag(IMAGES["tiny"], convention="nope")
    assert sf(IMAGES["tiny"], convention="VIFB").item() == pytest.approx(np_sf(IMAGES["tiny"], "vifb"))


# ---------------------------------------------------------------- registry


def test_registry_lists_and_metadata():
    names = list_metrics()
    assert names[:4] == ["EN", "SD", "SF", "AG"]
    for n in ("EN", "SD", "SF", "AG"):
        spec = get_metric(n)
        assert isinstance(spec, MetricSpec)
        assert spec.higher_is_better is True
        assert spec.needs == "fused"
        assert spec.description and spec.reference
    assert get_metric("ag") is get_metric("AG")
    assert get_metric("Sf").fn is sf


def test_unknown_metric_suggests_close_match():
    with pytest.raises(UnknownNameError, match="Did you mean 'SF'") as e:
        get_metric("SFF")
    assert "EN" in str(e.value)
    with pytest.raises(UnknownNameError):
        evaluate(IMAGES["tiny"], names=["EN", "nope"])


@pytest.mark.parametrize("conv", CONVS)
def test_evaluate_dispatch_and_convention(conv):
    rng = np.random.default_rng(3)
    singles = [rng.integers(0, 256, (15, 22)).astype(np.uint8) for _ in range(2)]
    batch = np.stack(singles)[:, None]
    out = evaluate(batch, names=["en", "SD", "sf", "AG"], convention=conv)
    assert list(out) == ["EN", "SD", "SF", "AG"]
    for k, f in enumerate(singles):
        assert out["EN"][k].item() == pytest.approx(np_en(f), abs=1e-12)
        assert out["SD"][k].item() == pytest.approx(np_sd(f), rel=1e-12)
        assert out["SF"][k].item() == pytest.approx(np_sf(f, conv), rel=1e-12)
        assert out["AG"][k].item() == pytest.approx(np_ag(f, conv), rel=1e-12)


def test_evaluate_defaults_and_arrays():
    f = IMAGES["blobs"]
    out = evaluate(f)
    assert {"EN", "SD", "SF", "AG"} <= set(out)
    assert all(v.shape == (1,) for v in out.values())
    arr = evaluate_arrays(f, [IMAGES["blobs"], IMAGES["blobs"]], names="SF", convention="vifb")
    assert arr == {"SF": pytest.approx(np_sf(f, "vifb"), rel=1e-12)}
    assert isinstance(arr["SF"], float)
    with pytest.raises(UnknownNameError):
        evaluate(f, names="EN", convention="bogus")
    with pytest.raises(ShapeError):
        evaluate_arrays(np.zeros((2, 1, 8, 8)))


def test_evaluate_passes_sources_and_convention(monkeypatch):
    import fusecli.metrics as m
    from fusecli.errors import ConfigError

    seen = {}

    def fake(fused, sources, convention="cddfuse"):
        seen.update(n=len(sources), conv=convention, shapes=[s.shape for s in sources])
        return fused.flatten(1).mean(1) - sum(s.flatten(1).mean(1) for s in sources)

    spec = MetricSpec("FAKE", fake, False, "sources", "test only", "none")
    monkeypatch.setitem(m._REGISTRY, "fake", spec)
    fused = np.full((2, 1, 6, 7), 10.0)
    out = evaluate(fused, [np.full((6, 7), 1.0), np.full((6, 7), 2.0)], names=["fake", "EN"], convention="vifb")
    assert out["FAKE"].tolist() == [7.0, 7.0]
    assert seen == {"n": 2, "conv": "vifb", "shapes": [(2, 1, 6, 7)] * 2}
    assert "FAKE" not in evaluate(fused)  # default: only metrics whose inputs were given
    with pytest.raises(ConfigError, match="sources"):
        evaluate(fused, names="FAKE")
    with pytest.raises(ShapeError, match="same size"):
        evaluate(fused, [np.zeros((6, 8))], names="FAKE")
