"""Brownian motions built on :class:`BrownianInterval`: path, tree, time reversal.

``BrownianPath`` and ``BrownianTree`` keep torchsde's constructors and point-query
semantics (``bm(t)`` is ``w0 + W(t) - W(t0)``); both are order independent, as every
:class:`BrownianInterval` is. ``BrownianPath`` keeps every node (fast, memory grows);
``BrownianTree`` resolves times to ``tol`` on a dyadic tree (the virtual Brownian tree
of Li et al. 2020) with a bounded cache.
"""

from __future__ import annotations

from torch import Tensor

from .base import BaseBrownian
from .interval import BrownianInterval

__all__ = ["ReverseBrownian", "BrownianPath", "BrownianTree", "brownian_interval_like"]


class _Wrapped(BaseBrownian):
    """Forwards the properties to ``self._interval``."""

    _interval: BaseBrownian

    dtype = property(lambda self: self._interval.dtype)
    device = property(lambda self: self._interval.device)
    shape = property(lambda self: self._interval.shape)
    levy_area_approximation = property(lambda self: self._interval.levy_area_approximation)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(interval={self._interval!r})"


class ReverseBrownian(_Wrapped):
    """The Brownian motion ``s -> W(-s)`` (for solving backwards in time).

    Args:
        base_brownian: the forward motion; ``bm(ta, tb)`` returns ``base(-tb, -ta)``.
    """

    def __init__(self, base_brownian: BaseBrownian):
        self.base_brownian = base_brownian
        self._interval = base_brownian

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        return self.base_brownian(-tb, -ta, return_U=return_U, return_A=return_A)


class _PointQueries(_Wrapped):
    def __call__(self, t, tb=None, return_U=False, return_A=False):
        if tb is None:
            with _quiet():
                out = self._interval(t, None, return_U=return_U, return_A=return_A)
            if not return_U and not return_A:
                out = out + self._w0
            return out
        return self._interval(t, tb, return_U=return_U, return_A=return_A)


class BrownianPath(_PointQueries):
    """A Brownian motion on ``[t0, t0 + 1]`` that keeps every computed node.

    Args:
        t0: start time.
        w0: the value at ``t0``; gives shape, dtype and device.
        window_size: unused (deprecated in torchsde too).

    Example::

        bm = BrownianPath(t0=0.0, w0=torch.zeros(4, 1))
        bm(0.5)          # W at 0.5
        bm(0.0, 0.5)     # increment
    """

    def __init__(self, t0, w0: Tensor, window_size: int = 8):
        self._w0 = w0
        self._interval = BrownianInterval(t0=t0, t1=float(t0) + 1, size=w0.shape, dtype=w0.dtype,
                                          device=w0.device, cache_size=None)


class BrownianTree(_PointQueries):
    """A Brownian motion on ``[t0, t1]`` resolved to ``tol`` on a dyadic tree.

    Args:
        t0: start time; w0: value at ``t0`` (gives shape, dtype, device).
        t1: end time (default ``t0 + 1``); w1: value at ``t1`` (drawn if absent).
        entropy: integer seed. tol: time resolution.
        pool_size, cache_depth, safety: accepted for compatibility, unused.
    """

    def __init__(self, t0, w0: Tensor, t1=None, w1: Tensor | None = None, entropy=None,
                 tol: float = 1e-6, pool_size: int = 24, cache_depth: int = 9, safety=None):
        t1 = float(t0) + 1 if t1 is None else t1
        self._w0 = w0
        self._interval = BrownianInterval(t0=t0, t1=t1, size=w0.shape, dtype=w0.dtype,
                                          device=w0.device, entropy=entropy, tol=tol,
                                          halfway_tree=True, W=None if w1 is None else w1 - w0)


def brownian_interval_like(y: Tensor, t0=0.0, t1=1.0, size=None, dtype=None, device=None,
                           **kwargs) -> BrownianInterval:
    """A :class:`BrownianInterval` with ``y``'s shape, dtype and device (each overridable)."""
    return BrownianInterval(t0=t0, t1=t1, size=y.shape if size is None else size,
                            dtype=y.dtype if dtype is None else dtype,
                            device=y.device if device is None else device, **kwargs)


class _quiet:
    """Silences the point-query warning of the underlying interval."""

    def __enter__(self):
        import warnings
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=".*optimised for interval queries.*")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)



