"""BrownianInterval: a Brownian motion on [t0, t1] that any order of queries reproduces.

The path is a binary tree of intervals, each holding its increment ``W`` and (when a
Lévy area is asked for) its space-time Lévy area ``H``. A child is drawn from its
parent by Gaussian conditioning (the Brownian bridge, and for ``H`` the joint law of
the bridge's two half-integrals given their sum), with normals seeded by the child's
identity alone (:func:`~odeflow.sde.brownian.base.mix_seed`). The tree's shape is
fixed by the constructor, not by the queries:

* the top of the tree splits [t0, t1] into blocks of eight cells of width ``dt`` (when
  given; the grid a fixed-step solver walks on), halving the range of blocks at each
  level; a block's cells are drawn together, conditioned on the block's totals
  (:func:`~odeflow.sde.brownian.bridge.block_rows`), from one seeded draw;
* inside a cell the tree is dyadic, down to ``2**depth`` sub-cells (``depth`` = 32,
  or the depth that resolves ``tol`` when ``tol > 0``).

A query time is rounded to the nearest sub-cell point (a relative change of 2⁻³² of the
cell, far below any step size), so the same ``entropy`` and the same query always give
the same value, whatever was asked before. A query on the ``dt`` grid stops at the cell
level: a solver walking the grid (either way) finds most cells already in the cache and
draws one block every eight steps.

Each node stores ``[W, H]`` (or ``[W]``): the increment and space-time Lévy area over its
own interval, never a point value, so the normals are combined in the state's dtype
without cancellation. A query over ``[ta, tb]`` is the node that spans it
exactly (one dictionary look-up for a cached grid cell) or the sum over the few nodes
that tile it (``W`` adds; ``U`` adds with the drift of the earlier pieces). Nodes live
in an LRU cache of bounded size, recomputed from their seeds after eviction: memory does
not grow with the number of steps.

References:
    M. Li, T.-K. L. Wong, R. T. Q. Chen, D. Duvenaud, "Scalable gradients for stochastic
    differential equations", AISTATS 2020 (the virtual Brownian tree).
    P. Kidger, J. Foster, X. Li, T. Lyons, "Efficient and accurate gradients for neural
    SDEs", NeurIPS 2021 (the Brownian Interval).
    J. Foster, T. Lyons, H. Oberhauser, "An optimal polynomial approximation of Brownian
    motion", SIAM J. Numer. Anal. 2020 (the space-time Lévy area H).
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict

import torch
from torch import Tensor

from ..settings import LEVY_AREA_APPROXIMATIONS
from .base import BaseBrownian, levy_area, mix_seed
from .bridge import block_rows, split_rows

__all__ = ["BrownianInterval"]

_ROOT, _SPLIT, _AREA, _BLOCK = 1, 2, 3, 4   # tags that keep the seeds of different draws apart
#: Grid cells drawn together: a block's cells come from one draw and one product, so a
#: solver walking the grid pays the tree's Python work once per block, not once per step.
_BLOCK_CELLS = 8
_DEFAULT_DEPTH = 32
_MAX_DEPTH = 52


def _is_scalar(x) -> bool:
    return isinstance(x, (int, float)) or (torch.is_tensor(x) and x.numel() == 1)


def _resolve_info(W, H, size, dtype, device):
    tensors = [x for x in (W, H) if x is not None]
    for name, x in (("W", W), ("H", H)):
        if x is not None and not (torch.is_tensor(x) and x.is_floating_point()):
            raise ValueError(f"{name} must be a floating-point tensor, got {x!r}")
    sizes = ([] if size is None else [tuple(size)]) + [tuple(x.shape) for x in tensors]
    if not sizes:
        raise ValueError("pass `size`, or `W`/`H` to give the size implicitly")
    if any(s != sizes[0] for s in sizes):
        raise ValueError(f"`size` and the shapes of `W`/`H` disagree: {sizes}")
    dtypes = ([] if dtype is None else [dtype]) + [x.dtype for x in tensors]
    if any(d != dtypes[0] for d in dtypes):
        raise ValueError(f"`dtype` and the dtypes of `W`/`H` disagree: {dtypes}")
    devices = ([] if device is None else [torch.device(device)]) + [x.device for x in tensors]
    if any(d != devices[0] for d in devices):
        raise ValueError(f"`device` and the devices of `W`/`H` disagree: {devices}")
    dtype = dtypes[0] if dtypes else torch.get_default_dtype()
    device = devices[0] if devices else torch.device("cpu")
    return sizes[0], dtype, device


class BrownianInterval(BaseBrownian):
    """A Brownian motion on ``[t0, t1]``, queried by intervals, reproducible in any order.

    Same constructor and call as ``torchsde.BrownianInterval``; unlike torchsde's, the
    sample path never depends on the order or location of earlier queries (as if
    ``halfway_tree`` were always on, without its cost), see the module docstring.

    Args:
        t0, t1: the time span (floats or 0-d tensors), ``t0 <= t1``.
        size: shape of one sample ``(*batch, m)``; a 0-d or 1-d size is a batch of scalar
            motions. Optional when ``W`` or ``H`` is given.
        dtype, device: of the returned tensors (default: torch's default dtype, CPU).
        entropy: integer seed; default: drawn from torch's global generator, so
            ``torch.manual_seed`` makes it reproducible.
        dt: the step size a fixed-step solver will use: queries on the grid
            ``t0 + k dt`` are then the cheapest.
        tol: resolve query times to ``tol`` (0: to 2⁻³² of a cell).
        pool_size: accepted for compatibility; seeds come from a counter-based hash.
        cache_size: tree nodes kept (LRU); raised to hold at least two root-to-leaf
            paths; ``None`` for no limit.
        halfway_tree: accepted for compatibility (the path is always order independent);
            as in torchsde it needs ``tol > 0`` and ``dt=None``.
        levy_area_approximation: one of ``LEVY_AREA_APPROXIMATIONS``.
        W, H: the increment and space-time Lévy area over ``[t0, t1]`` (drawn if absent).

    Example::

        bm = BrownianInterval(0.0, 1.0, size=(4, 3), entropy=0)
        dW = bm(0.25, 0.5)                      # shape (4, 3), variance 0.25
        bm = BrownianInterval(0.0, 1.0, (4, 3), levy_area_approximation="space-time")
        dW, U = bm(0.0, 0.1, return_U=True)     # U = ∫ (W(s) - W(0)) ds over [0, 0.1]
    """

    def __init__(self, t0=0.0, t1=1.0, size=None, dtype=None, device=None, entropy=None,
                 dt=None, tol=0.0, pool_size=8, cache_size=45, halfway_tree=False,
                 levy_area_approximation=LEVY_AREA_APPROXIMATIONS.none, W=None, H=None):
        for name, value in (("t0", t0), ("t1", t1)):
            if not _is_scalar(value):
                raise ValueError(f"{name} must be a float or a 0-d tensor, got {value!r}")
        if dt is not None and not _is_scalar(dt):
            raise ValueError(f"dt must be a float, a 0-d tensor or None, got {dt!r}")
        t0, t1 = float(t0), float(t1)
        if not t0 <= t1:
            raise ValueError(f"need t0 <= t1, got t0={t0}, t1={t1}")
        if levy_area_approximation not in LEVY_AREA_APPROXIMATIONS:
            raise ValueError(f"levy_area_approximation must be one of {LEVY_AREA_APPROXIMATIONS}, "
                             f"got {levy_area_approximation!r}")
        tol = float(tol)
        if halfway_tree:
            if tol <= 0:
                raise ValueError("halfway_tree=True needs tol > 0")
            if dt is not None:
                raise ValueError("halfway_tree=True builds a dyadic tree: leave dt=None")
        elif tol < 0:
            raise ValueError(f"tol must be non-negative, got {tol}")
        if cache_size is not None and cache_size < 0:
            raise ValueError(f"cache_size must be None or >= 0, got {cache_size}")
        self._size, self._dtype, self._device = _resolve_info(W, H, size, dtype, device)
        if entropy is None:
            entropy = int(torch.randint(0, 2 ** 31 - 1, ()).item())
        self._entropy = int(entropy)
        self._levy = levy_area_approximation
        self._have_H = levy_area_approximation != LEVY_AREA_APPROXIMATIONS.none
        self._dt = None if dt is None else float(dt)
        self._tol, self._pool_size, self._cache_size = tol, pool_size, cache_size
        self._halfway_tree = bool(halfway_tree)
        self._t0, self._t1 = t0, t1
        # Normals are drawn and combined in the state's dtype: nodes hold increments, never
        # point values, so nothing cancels and float32 loses nothing that float64 would keep
        # (half precisions work in float32, which CPU random draws support everywhere).
        self._work = self._dtype
        if self._dtype in (torch.float16, torch.bfloat16):
            self._work = torch.float32
        self._gen = torch.Generator(device=self._device)

        span = t1 - t0
        n_cells = 1
        if self._dt is not None and 0 < self._dt < span:
            n_cells = math.ceil(span / self._dt)
            while n_cells > 1 and t0 + (n_cells - 1) * self._dt >= t1:
                n_cells -= 1
        self._n_cells = n_cells
        cell = span / n_cells if n_cells == 1 else self._dt
        depth = _DEFAULT_DEPTH
        if tol > 0 and cell > 0:
            depth = min(_MAX_DEPTH, max(0, math.ceil(math.log2(cell / tol))))
        self._depth = depth
        self._G = n_cells << depth
        tree_depth = math.ceil(math.log2(n_cells)) + depth + 1
        self._capacity = None if cache_size is None else max(cache_size, 4 * tree_depth + 8)
        self._cache: OrderedDict = OrderedDict()
        self._indices: dict[float, int] = {}

        X = self._draw(torch.empty((2, *self._size), dtype=self._work, device=self._device),
                       _ROOT)
        if W is None:
            W = X[0] * math.sqrt(span)
        if H is None:
            H = X[1] * math.sqrt(span / 12)
        W, H = W.to(self._work), H.to(self._work)
        self._root = torch.stack([W, H] if self._have_H else [W])
        k = self._root.shape[0]
        self._buffer = torch.empty((2 * k, math.prod(self._size)), dtype=self._work,
                                   device=self._device)

    # ------------------------------------------------------------------ the tree
    def _draw(self, out: Tensor, *key: int) -> Tensor:
        """Fill ``out`` with standard normals seeded by ``key`` alone, drawn in the working
        dtype itself: a float64 motion gets float64 normals (float32 draws, widened, are
        about five times faster on the CPU but truncate the tails and quantise the law)."""
        self._gen.manual_seed(mix_seed(self._entropy, *key))
        return torch.randn(out.shape, generator=self._gen, out=out)

    def _time(self, g: int) -> float:
        i, j = g >> self._depth, g & ((1 << self._depth) - 1)
        if i >= self._n_cells:
            return self._t1
        lo = self._t0 + i * self._dt if self._n_cells > 1 else self._t0
        hi = self._t1 if i == self._n_cells - 1 else self._t0 + (i + 1) * self._dt
        return lo + (hi - lo) * (j / (1 << self._depth)) if j else lo

    def _index(self, t: float) -> int:
        """The tree point nearest to ``t`` (already clamped to ``[t0, t1]``)."""
        g = self._indices.get(t)
        if g is not None:   # a step's end is the next step's start: asked twice
            return g
        n, d = self._n_cells, self._depth
        i, lo, hi = 0, self._t0, self._t1
        if n > 1:
            i = min(max(int((t - self._t0) // self._dt), 0), n - 1)
            lo = self._t0 + i * self._dt
            hi = self._t1 if i == n - 1 else self._t0 + (i + 1) * self._dt
        if hi <= lo:
            g = i << d
        else:
            j = round((t - lo) / (hi - lo) * (1 << d))
            g = (i << d) + min(max(j, 0), 1 << d)
        if len(self._indices) >= 256:   # bounded: only recent times repeat
            self._indices.clear()
        self._indices[t] = g
        return g

    def _mid(self, lo: int, hi: int) -> int:
        """Where a node above the blocks, or inside a cell, splits (a block boundary or the
        dyadic midpoint)."""
        d = self._depth
        if hi - lo > (1 << d):
            lo_b, hi_b = (lo >> d) // _BLOCK_CELLS, -(-(hi >> d) // _BLOCK_CELLS)
            return ((lo_b + hi_b) // 2 * _BLOCK_CELLS) << d
        return (lo + hi) // 2

    def _is_block(self, lo: int, hi: int) -> bool:
        """Whether node ``[lo, hi]`` is one block of several grid cells."""
        d = self._depth
        return hi - lo > (1 << d) and (hi >> d) - (lo >> d) <= _BLOCK_CELLS

    def _cells(self, lo: int, hi: int, state: Tensor) -> list[tuple[int, int, Tensor]]:
        """The grid cells of block ``[lo, hi]``, left to right, drawn together when any is
        missing from the cache (one ``randn`` seeded by the block, one matrix product)."""
        d = self._depth
        keys = [(c << d, (c + 1) << d) for c in range(lo >> d, hi >> d)]
        got = [self._cache.get(key) for key in keys]
        if all(x is not None for x in got):
            for key in keys:
                self._cache.move_to_end(key)
            return [(a, b, x) for (a, b), x in zip(keys, got)]
        k, n = state.shape[0], len(keys)
        rows = block_rows(tuple(self._time(b) - self._time(a) for a, b in keys), self._have_H,
                          self._work, self._device)
        z = torch.empty((k * (n + 1), state[0].numel()), dtype=self._work, device=self._device)
        z[:k].copy_(state.view(k, -1))
        self._draw(z[k:], _BLOCK, lo, hi)
        cells = (rows @ z).view(n, *state.shape)
        for key, cell in zip(keys, cells):
            self._remember(key, cell)
        return [(a, b, cell) for (a, b), cell in zip(keys, cells)]

    def _children(self, lo: int, hi: int, state: Tensor, want: tuple[bool, bool]
                  ) -> tuple[int, Tensor | None, Tensor | None]:
        """Split node ``[lo, hi]`` at its midpoint: ``(mid, left, right)``, each child's
        state if ``want`` asks for it (else None).

        Cached children are reused. Otherwise the node's normals are drawn (one ``randn``
        seeded by the node, so either child alone is the same as both together) and only
        the wanted children are computed and remembered: a walk down to one query point
        makes half the product and half the fresh memory.
        """
        mid = self._mid(lo, hi)
        keys = ((lo, mid), (mid, hi))
        got = [self._cache.get(key) if w else None for key, w in zip(keys, want)]
        if all(x is not None for x, w in zip(got, want) if w):
            for key, x in zip(keys, got):
                if x is not None:
                    self._cache.move_to_end(key)
            return mid, got[0], got[1]
        p, q = self._time(mid) - self._time(lo), self._time(hi) - self._time(mid)
        k = state.shape[0]
        # [parent state, normals] in one reused buffer: a fresh tensor per split would
        # cost page faults, the main expense of a split after the draw itself.
        buf = self._buffer
        buf[:k].copy_(state.view(k, -1))
        self._draw(buf[k:], _SPLIT, lo, hi)
        if p <= 0 or q <= 0:   # a degenerate (zero-length) side: all of W on the other one
            p, q = max(p, 1e-300), max(q, 1e-300)
        rows = split_rows(p, q, self._have_H, self._work, self._device)
        # Each child by its own product, wanted alone or with its sibling: the same
        # arithmetic either way, so a value never depends on which queries came first.
        got = [(rows[i * k:(i + 1) * k] @ buf).view(state.shape) if w else None
               for i, w in enumerate(want)]
        for key, x in zip(keys, got):
            if x is not None:
                self._remember(key, x)
        return mid, got[0], got[1]

    def _remember(self, key, value) -> None:
        self._cache[key] = value
        if self._capacity is not None and len(self._cache) > self._capacity:
            self._cache.popitem(last=False)

    def _nodes(self, ga: int, gb: int) -> list[tuple[int, int, Tensor]]:
        """The tree nodes whose intervals tile ``[ga, gb]``, left to right.

        A node already in the cache (a grid cell after its sibling's query, a repeated
        query) is returned at once; otherwise the tree is walked down from the root, at
        most two nodes per level ending in the tiling.
        """
        hit = self._cache.get((ga, gb))
        if hit is not None:
            self._cache.move_to_end((ga, gb))
            return [(ga, gb, hit)]
        out: list[tuple[int, int, Tensor]] = []
        todo = [(0, self._G, self._root)]
        while todo:
            lo, hi, state = todo.pop()
            if ga <= lo and hi <= gb:
                out.append((lo, hi, state))
                continue
            if self._is_block(lo, hi):
                todo.extend((a, b, cell) for a, b, cell in reversed(self._cells(lo, hi, state))
                            if a < gb and b > ga)
                continue
            mid = self._mid(lo, hi)
            mid, left, right = self._children(lo, hi, state, (ga < mid, gb > mid))
            if gb > mid:   # pushed first: popped after the left part (output stays in order)
                todo.append((mid, hi, right))
            if ga < mid:
                todo.append((lo, mid, left))
        return out

    # ------------------------------------------------------------------ queries
    def _increment(self, ga: int, gb: int, h: float) -> tuple[Tensor, Tensor | None]:
        """``(W, H)`` over ``[ga, gb]`` (``H`` = None without a Lévy area; both may be views
        of cached nodes)."""
        nodes = self._nodes(ga, gb)
        if len(nodes) == 1:
            state = nodes[0][2]
            return state[0], (state[1] if self._have_H else None)
        # Over a tiling [a_k, b_k] of lengths h_k: W = Σ W_k and
        # U = ∫ (W(s) - W(a)) ds = Σ_k (h_k (W_k/2 + H_k) + h_k W(a → a_k)), accumulated in
        # place (stacking the nodes would copy them all into fresh memory first).
        W = torch.zeros(self._size, dtype=self._work, device=self._device)
        U = torch.zeros_like(W) if self._have_H else None
        for lo, hi, state in nodes:
            hk = self._time(hi) - self._time(lo)
            if U is not None:
                U.add_(W, alpha=hk).add_(state[0], alpha=0.5 * hk).add_(state[1], alpha=hk)
            W.add_(state[0])
        return W, (None if U is None else U / h - 0.5 * W)

    def _clamp(self, t: float, name: str) -> float:
        if t < self._t0:
            warnings.warn(f"Should have {name}>=t0 but got {name}={t} and t0={self._t0}.",
                          stacklevel=3)
            return self._t0
        if t > self._t1:
            warnings.warn(f"Should have {name}<=t1 but got {name}={t} and t1={self._t1}.",
                          stacklevel=3)
            return self._t1
        return t

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        """The increment over ``[ta, tb]`` (``tb=None``: over ``[t0, ta]``).

        Returns ``W``, then ``U = ∫_ta^tb (W(s) - W(ta)) ds`` if ``return_U``, then the Lévy
        area ``A`` if ``return_A``; ``U``/``A`` are ``None`` when the chosen
        ``levy_area_approximation`` does not provide them.
        """
        if tb is None:
            warnings.warn(f"{type(self).__name__} is optimised for interval queries "
                          "bm(ta, tb), not point evaluation bm(t).", stacklevel=2)
            ta, tb = self._t0, ta
        ta, tb = float(ta), float(tb)
        if not (self._t0 <= ta <= self._t1 and self._t0 <= tb <= self._t1):
            ta, tb = self._clamp(ta, "ta"), self._clamp(tb, "tb")
        if ta > tb:
            raise RuntimeError(f"Query times ta={ta:.3f} and tb={tb:.3f} must respect ta <= tb.")
        ga, gb = self._index(ta), self._index(tb)
        h = self._time(gb) - self._time(ga)
        if ga == gb:
            W = torch.zeros(self._size, dtype=self._work, device=self._device)
            H = W if self._have_H else None
        else:
            W, H = self._increment(ga, gb, h)
        # A copy: W may be a cached node, which callers must not be able to write into.
        out = [W.clone() if W.dtype == self._dtype else W.to(self._dtype)]
        if return_U:
            out.append(None if H is None else (h * (0.5 * W + H)).to(self._dtype))
        if return_A:
            A = None
            if self._levy in (LEVY_AREA_APPROXIMATIONS.davie, LEVY_AREA_APPROXIMATIONS.foster):
                m = self._size[-1] if self._size else 1
                if ga == gb or len(self._size) < 2:
                    shape = (*self._size, m) if len(self._size) >= 2 else self._size
                    A = torch.zeros(shape, dtype=self._dtype, device=self._device)
                else:
                    noise = self._draw(torch.empty((*self._size, m), dtype=self._work,
                                                   device=self._device), _AREA, ga, gb)
                    A = levy_area(W, H, h, self._levy, noise).to(self._dtype)
            out.append(A)
        return out[0] if len(out) == 1 else tuple(out)

    # ------------------------------------------------------------------ properties
    def __repr__(self) -> str:
        return (f"{type(self).__name__}(t0={self._t0:.3f}, t1={self._t1:.3f}, size={self._size}, "
                f"dtype={self._dtype}, device={self._device!r}, entropy={self._entropy}, "
                f"dt={self._dt}, tol={self._tol}, cache_size={self._cache_size}, "
                f"levy_area_approximation={self._levy!r})")

    shape = property(lambda self: self._size)
    dtype = property(lambda self: self._dtype)
    device = property(lambda self: self._device)
    entropy = property(lambda self: self._entropy)
    levy_area_approximation = property(lambda self: self._levy)
    dt = property(lambda self: self._dt)
    tol = property(lambda self: self._tol)
    pool_size = property(lambda self: self._pool_size)
    cache_size = property(lambda self: self._cache_size)
    halfway_tree = property(lambda self: self._halfway_tree)

    @property
    def n_cached(self) -> int:
        """Tree nodes held in the cache now (bounded by the capacity)."""
        return len(self._cache)

    def size(self) -> tuple[int, ...]:
        return self._size
