"""Q_TE (Liu's metricMI sw=3, Nava's normalised Tsallis MI) against a numpy transcription of
metricMI.m / tsallis.m / mutual_info.m / normalize1.m, a hand-computed value, properties."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fusecli.metrics import evaluate_arrays, get_metric
from fusecli.metrics._checks import MetricWarning
from fusecli.metrics.information import q_te

from .conftest import fusion_triplet

Q = 0.43137


def np_normalize1(x):
    x = x.astype(float)
    if x.max() == 0 and x.min() == 0:
        return x
    v = (x - x.min()) / (x.max() - x.min()) * 255
    return np.floor(v + 0.5)  # MATLAB round on non-negative values


def np_joint(x, y):
    h = np.zeros((256, 256))
    np.add.at(h, (x.astype(int).ravel(), y.astype(int).ravel()), 1)
    return h / h.sum()


def np_tsallis(x, y, q):
    h = np_joint(x, y)
    m1, m2 = h.sum(0), h.sum(1)  # sum(h) and sum(h') as the MATLAB code names them
    res = 0.0
    for i in range(256):
        for j in range(256):
            buff = m1[i] * m2[j]
            if buff != 0:
                res += h[i, j] ** q / buff ** (q - 1)
    return (1 - res) / (1 - q)


def np_entropies(x, y):
    h = np_joint(x, y)
    mx, my = h.sum(0), h.sum(1)
    return (-np.sum(mx * np.log2(mx + (mx == 0))), -np.sum(my * np.log2(my + (my == 0))))


def np_qte(f, a, b):
    a, b, f = np_normalize1(a), np_normalize1(b), np_normalize1(f)
    hx, hy = np_entropies(a, b)
    return (np_tsallis(a, f, Q) + np_tsallis(b, f, Q)) / (hx**Q + hy**Q + np_tsallis(a, b, Q))


def test_hand_computed_two_level_image():
    # half 0, half 255: h = diag(1/2, 1/2); the four marginal products are 1/4, two h entries non-zero:
    # I_q = (1 - 2 (1/2)^q (1/4)^(1-q)) / (1 - q) = (1 - (1/2)^(1-q)) / (1 - q); H = 1 bit
    x = np.zeros((4, 4))
    x[:, 2:] = 255
    t = (1 - 0.5 ** (1 - Q)) / (1 - Q)
    assert float(q_te(x, [x, x])[0]) == pytest.approx(2 * t / (2 + t), rel=1e-13)


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_liu_transcription(seed):
    f, a, b = fusion_triplet(12, 14, seed=seed, fused_noise=7)
    assert float(q_te(f, [a, b])[0]) == pytest.approx(np_qte(f, a, b), rel=1e-12)


def test_properties():
    f, a, b = fusion_triplet(20, 22, seed=3, fused_noise=5)
    v = float(q_te(f, [a, b])[0])
    assert v > 0 and float(q_te(f, [b, a])[0]) == pytest.approx(v, rel=1e-12)
    assert evaluate_arrays(f, [a, b], names=["Q_TE"], convention="vifb")["Q_TE"] == pytest.approx(v, rel=1e-14)
    # not MEFB's unnormalised TE
    assert evaluate_arrays(f, [a, b], names=["TE"])["TE"] != pytest.approx(v)
    assert get_metric("q_te").higher_is_better
    with pytest.warns(MetricWarning, match="Q_TE"):
        assert math.isnan(float(q_te(np.full((6, 6), 7.0), [a[:6, :6], b[:6, :6]])[0]))
