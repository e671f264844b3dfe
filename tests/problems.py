"""Problems with known solutions, shared by the numerical tests (closed forms from SEEDS.md)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ClosedForm:
    name: str
    func: Callable[[Tensor, Tensor], Tensor]
    y_exact: Callable[[Tensor], Tensor]  # t (T,) -> (T, *shape)
    y0: Tensor


def linear_scalar(w: float = -0.7, c: float = 1.3) -> ClosedForm:
    """dh/dt = w h  ->  h = c e^{w t}."""
    return ClosedForm(
        "linear_scalar", lambda t, h: w * h,
        lambda t: (c * torch.exp(w * t)).unsqueeze(-1),
        torch.tensor([c], dtype=torch.float64),
    )


def inhomogeneous(w: float = 0.8, b: float = -0.5, c: float = 0.2) -> ClosedForm:
    """dh/dt = w h + b  ->  h = e^{w (t + c)} - b / w."""
    return ClosedForm(
        "inhomogeneous", lambda t, h: w * h + b,
        lambda t: (torch.exp(w * (t + c)) - b / w).unsqueeze(-1),
        torch.tensor([math.exp(w * c) - b / w], dtype=torch.float64),
    )


def exp_rate(w: float = -1.0, b: float = 0.5, h0: float = 0.3) -> ClosedForm:
    """dh/dt = e^{w h + b}  ->  h = (-ln(-w (t + K)) - b) / w (nonlinear)."""
    K = math.exp(-(w * h0 + b)) / (-w)
    return ClosedForm(
        "exp_rate", lambda t, h: torch.exp(w * h + b),
        lambda t: ((-torch.log(-w * (t + K)) - b) / w).unsqueeze(-1),
        torch.tensor([h0], dtype=torch.float64),
    )


_W = torch.tensor([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.3], [0.1, 0.0, -0.2]], dtype=torch.float64)
_C = torch.tensor([1.0, -0.5, 0.25], dtype=torch.float64)
_B = torch.tensor([0.3, -0.2, 0.1], dtype=torch.float64)


def matrix_exp() -> ClosedForm:
    """dh/dt = W h  ->  h = e^{t W} c."""
    return ClosedForm(
        "matrix_exp", lambda t, h: _W @ h,
        lambda t: torch.stack([torch.linalg.matrix_exp(ti * _W) @ _C for ti in t]),
        _C.clone(),
    )


def matrix_affine() -> ClosedForm:
    """dh/dt = W h + b  ->  h = e^{t W} c - W^{-1} b (c chosen so that h(0) = y0)."""
    winv_b = torch.linalg.solve(_W, _B)
    return ClosedForm(
        "matrix_affine", lambda t, h: _W @ h + _B,
        lambda t: torch.stack([torch.linalg.matrix_exp(ti * _W) @ (_C + winv_b) - winv_b
                               for ti in t]),
        _C.clone(),
    )


CLOSED_FORMS = [linear_scalar, inhomogeneous, exp_rate, matrix_exp, matrix_affine]


def van_der_pol(mu: float = 1.0):
    def f(t, y):
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])
    return f


def lorenz(sigma: float = 10.0, rho: float = 28.0, beta: float = 8.0 / 3.0):
    def f(t, y):
        x, yy, z = y.unbind(0)
        return torch.stack([sigma * (yy - x), x * (rho - z) - yy, x * yy - beta * z])
    return f


def scipy_reference(f, y0, t_end: float, t_eval=None):
    """SciPy DOP853 at rtol 1e-13, atol 1e-16 on the same torch function."""
    import numpy as np
    from scipy.integrate import solve_ivp

    def rhs(t, y):
        return f(torch.tensor(t), torch.from_numpy(y)).numpy()

    sol = solve_ivp(rhs, (0.0, t_end), y0.numpy(), method="DOP853", rtol=1e-13, atol=1e-16,
                    t_eval=t_eval)
    assert sol.success
    return torch.from_numpy(np.ascontiguousarray(sol.y.T))


def vdp_batch(n: int = 4, seed: int = 0):
    """``n`` van der Pol oscillators with their own μ (float64), for per-sample tests:
    ``(y0 (n, 2), batched f, single(b) -> sample b's own f)``."""
    g = torch.Generator().manual_seed(seed)
    mu = torch.rand(n, generator=g, dtype=torch.float64) * 3 + 0.5
    y0 = torch.stack([torch.rand(n, generator=g, dtype=torch.float64) + 0.5,
                      torch.zeros(n, dtype=torch.float64)], 1)

    def f(t, y):
        return torch.stack([y[..., 1], mu * (1 - y[..., 0] ** 2) * y[..., 1] - y[..., 0]], -1)

    def single(b):
        return lambda t, y: torch.stack([y[1], mu[b] * (1 - y[0] ** 2) * y[1] - y[0]])

    return y0, f, single


# Robertson's kinetics with other rate constants per sample: stiff, each sample its own.
ROBERTSON_RATES = torch.tensor([[0.04, 3e7, 1e4], [0.08, 1e7, 3e4], [0.02, 5e7, 1e4]],
                               dtype=torch.float64)


def robertson_kinetics(k: Tensor):
    """Robertson's ``f`` with rates ``k`` (``(3,)``, or ``(B, 3)`` for a batch)."""
    def f(t, y):
        y1, y2, y3 = y[..., 0], y[..., 1], y[..., 2]
        return torch.stack([-k[..., 0] * y1 + k[..., 2] * y2 * y3,
                            k[..., 0] * y1 - k[..., 2] * y2 * y3 - k[..., 1] * y2 * y2,
                            k[..., 1] * y2 * y2], -1)

    return f


def poisoned_decay(rates: Tensor, lane: int = 1, after: float = 0.5):
    """Per-sample decay ``y' = -k y`` whose sample ``lane`` turns nan for ``t > after``
    (a failing sample among healthy ones); ``t`` is the per-sample ``(B,)`` time."""
    def f(t: Tensor, y: Tensor) -> Tensor:
        poison = torch.where((torch.arange(len(rates)) == lane) & (t > after), math.nan, 0.0)
        return -rates[:, None] * y + poison[:, None]
    return f
