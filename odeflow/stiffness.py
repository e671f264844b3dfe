"""Is an explicit solve's step size limited by stability? A cheap test for a helpful hint.

An explicit method on a stiff problem takes steps ``h`` with ``h·ρ(∂f/∂y)`` near its
stability boundary (about 3.3 for dopri5 and tsit5) however loose the tolerance: accuracy
would allow far longer steps, stability does not. :func:`stability_ratio` estimates
``h·ρ`` with a few power iterations of finite-difference Jacobian–vector products (a
handful of ``func`` evaluations, no Jacobian). The loop asks once after
:data:`PROBE_AFTER` steps of a long explicit solve (a one-time warning), and a failed
explicit solve (too many steps, step-size underflow) asks again for its error message;
both name ``method="auto"`` and ``"rodas5p"``.

References:
    Hairer & Wanner, *Solving Ordinary Differential Equations II*, §IV.2 (stiffness
    detection by the step size's stability limit).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["PROBE_AFTER", "stability_ratio", "stiff_hint", "warn_if_stiff"]

#: Steps after which a long explicit solve checks, once, whether it looks stiff.
PROBE_AFTER = 5000
#: ``h·ρ`` above which the step size is taken to be set by stability, not accuracy.
STIFF_RATIO = 1.0
_ITERS = 8


def stability_ratio(f: Callable[[Any, Tensor], Tensor], t: float, y: Tensor, h: float
                    ) -> float:
    """``h·ρ(∂f/∂y)`` at ``(t, y)``, ρ by power iteration (``_ITERS`` evaluations of ``f``)."""
    with torch.no_grad():
        y = y.detach()
        f0 = f(t, y)
        gen = torch.Generator().manual_seed(0)
        v = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y)
        eps_y = math.sqrt(torch.finfo(y.dtype).eps) * (1.0 + float(y.abs().max()))
        rho = 0.0
        for _ in range(_ITERS):
            norm = float(torch.linalg.vector_norm(v))  # host sync: a few per probe
            if not norm > 0 or not math.isfinite(norm):
                break
            v = v / norm
            w = (f(t, y + eps_y * v) - f0) / eps_y
            rho = float(torch.linalg.vector_norm(w))
            v = w
    return abs(h) * rho if math.isfinite(rho) else 0.0


def stiff_hint(f: Callable, t: float, y: Tensor, h: float) -> str:
    """A sentence for an explicit solve's failure: what ``h·ρ`` says, and what to try."""
    try:
        ratio = stability_ratio(f, t, y, h)
    except Exception:  # the hint must never hide the failure it explains
        return ""
    if ratio < STIFF_RATIO:
        return ""
    return (f" The problem looks stiff (the step size is set by stability: h·ρ(∂f/∂y) ≈ "
            f"{ratio:.2g}): try method='auto' or method='rodas5p'.")


def warn_if_stiff(f: Callable, t: float, y: Tensor, h: float, t_user: float) -> None:
    """The one-time warning of a long explicit solve that looks stiff."""
    hint = stiff_hint(f, t, y, h)
    if hint:
        warnings.warn(f"after {PROBE_AFTER} steps at t={t_user!r}:{hint} It may need many more "
                      "steps.", RuntimeWarning, stacklevel=6)
