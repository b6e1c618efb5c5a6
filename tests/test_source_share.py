"""benchmarks/source_share.py: the check that a fused image is not one source copied."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "source_share.py"
_spec = importlib.util.spec_from_file_location("source_share", _PATH)
source_share = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(source_share)


@pytest.fixture()
def sources():
    rng = np.random.default_rng(0)
    return rng.random((64, 64)), rng.random((64, 64))


def test_a_copy_of_one_source_has_none_of_the_other(sources):
    a, b = sources
    d_a, d_b, c_a, c_b = source_share.share(a.copy(), a, b)
    assert d_a == 0.0 and d_b == pytest.approx(np.abs(a - b).mean() * 255)
    assert c_a == pytest.approx(1.0, abs=1e-9) and c_b == pytest.approx(0.0, abs=1e-9)


def test_the_average_takes_half_of_each(sources):
    a, b = sources
    d_a, d_b, c_a, c_b = source_share.share((a + b) / 2, a, b)
    assert d_a == pytest.approx(d_b)
    assert c_a == pytest.approx(0.5, abs=1e-9) and c_b == pytest.approx(0.5, abs=1e-9)
