"""The solvers of fusecli.solvers: fixed-point iteration, Anderson acceleration (plain and lean),
conjugate gradient."""

from __future__ import annotations

import math

import pytest
import torch

from fusecli.errors import ConfigError
from fusecli.solvers import anderson, conjugate_gradient, fixed_point


def _toy_map(seed: int = 0, dim: int = 5, rho: float = 0.95):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    a = rho * q  # orthogonal times 0.95: a contraction with |eigenvalues| = 0.95 (slow for plain iteration)
    b = torch.randn(2, dim, generator=g, dtype=torch.float64)
    x_star = torch.linalg.solve(torch.eye(dim, dtype=torch.float64) - a, b.T).T
    return (lambda x: x @ a.T + b), x_star


def test_anderson_converges_to_known_fixed_point_faster_than_plain_iteration():
    f, x_star = _toy_map()
    x0 = torch.zeros_like(x_star)
    xa, info_a = anderson(f, x0, max_iter=100, tol=1e-9)
    xp, info_p = fixed_point(f, x0, max_iter=2000, tol=1e-9)
    assert info_a.converged and info_p.converged
    assert torch.allclose(xa, x_star, atol=1e-7)
    assert torch.allclose(xp, x_star, atol=1e-6)
    assert info_a.method == "anderson"
    assert info_a.iterations < 40 < 300 < info_p.iterations
    assert info_a.residual < 1e-9 and len(info_a.trace) == info_a.iterations - 1


def test_anderson_stops_at_max_iter_and_reports_residual():
    f, _ = _toy_map(seed=1)
    x, info = anderson(f, torch.zeros(2, 5, dtype=torch.float64), max_iter=5, tol=1e-12)
    assert info.iterations == 5 and not info.converged
    assert info.residual > 1e-12 and x.shape == (2, 5)


def test_anderson_falls_back_to_plain_iteration(monkeypatch):
    f, x_star = _toy_map(seed=2, rho=0.5)

    def broken(*args, **kwargs):
        raise torch.linalg.LinAlgError("singular")

    monkeypatch.setattr(torch.linalg, "solve", broken)
    x, info = anderson(f, torch.zeros_like(x_star), max_iter=200, tol=1e-10)
    assert info.method == "anderson+fixed-point" and info.converged
    assert torch.allclose(x, x_star, atol=1e-8)


def test_solver_argument_errors():
    f, _ = _toy_map()
    with pytest.raises(ConfigError):
        anderson(f, torch.zeros(2, 5), max_iter=0)
    with pytest.raises(ConfigError):
        fixed_point(f, torch.zeros(2, 5), stop_mode="max")


def test_lean_anderson_is_the_original_operation_for_operation():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(30, 30, generator=g, dtype=torch.float64)
    a = 0.9 * a / torch.linalg.matrix_norm(a, 2)
    b = torch.randn(3, 30, generator=g, dtype=torch.float64)
    f = lambda x: x @ a.T + b  # noqa: E731
    for max_iter, m, beta in ((5, 6, 1.0), (25, 4, 1.0), (12, 3, 0.6)):
        x0 = torch.zeros(3, 30, dtype=torch.float64)
        xo, io = anderson(f, x0, max_iter, 1e-14, m=m, beta=beta, lean=False)
        xl, il = anderson(f, x0, max_iter, 1e-14, m=m, beta=beta, lean=True)
        assert torch.equal(xo, xl) and io == il


def _spd_operator(seed: int, shape=(2, 1, 4, 5)):
    """``apply(x) = x + M x`` per sample (M symmetric positive semi-definite on the flattened
    sample) and its dense matrix, float64."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape[1:])
    r = torch.randn(n, n, generator=g, dtype=torch.float64)
    mat = torch.eye(n, dtype=torch.float64) + r @ r.T / n
    return (lambda x: (x.flatten(1) @ mat.T).view(shape)), mat


def test_conjugate_gradient_solves_an_spd_system_per_sample():
    shape = (2, 1, 4, 5)
    apply, mat = _spd_operator(0, shape)
    g = torch.Generator().manual_seed(1)
    b = torch.randn(shape, generator=g, dtype=torch.float64)
    exact = torch.linalg.solve(mat, b.flatten(1).T).T.view(shape)
    x = conjugate_gradient(apply, b, torch.zeros_like(b), steps=20)  # n = 20: exact in n steps
    assert x.shape == shape
    assert torch.allclose(x, exact, atol=1e-8)
    # per sample: solving each sample alone gives the same result
    one = lambda p: (p.flatten(1) @ mat.T).view(1, *shape[1:])  # noqa: E731
    alone = conjugate_gradient(one, b[1:], torch.zeros_like(b[1:]), 20)
    assert torch.allclose(alone, x[1:], atol=1e-10)


def test_conjugate_gradient_error_falls_with_steps_and_is_differentiable():
    shape = (1, 1, 4, 5)
    apply, mat = _spd_operator(2, shape)
    b = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    exact = torch.linalg.solve(mat, b.detach().flatten(1).T).T.view(shape)
    x0 = torch.zeros_like(b.detach())
    errors = [float((conjugate_gradient(apply, b.detach(), x0, k) - exact).norm()) for k in (0, 2, 5)]
    assert errors[0] > errors[1] > errors[2]
    assert torch.autograd.gradcheck(lambda v: conjugate_gradient(apply, v, torch.zeros_like(v), 3), (b,))


def test_derun_keeps_conjugate_gradient_importable():
    from fusecli.models.derun import conjugate_gradient as from_derun

    assert from_derun is conjugate_gradient

