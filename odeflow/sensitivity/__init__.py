"""How gradients flow through a solve: direct, adjoint, or checkpointed.

* ``direct``: the loop runs under autograd; backward replays the recorded graph. Fast,
  exact for the discretisation, memory grows with the number of steps.
* ``adjoint``: the forward runs without a graph; backward solves the augmented system
  ``(y, a, g)`` backwards in time (Chen et al. 2018; Pontryagin). O(1) memory in the
  number of steps, but the gradient is only as accurate as the backward solve, and the
  backward solve usually costs several times the forward.
* ``checkpoint``: the forward runs without a graph and keeps each accepted step's start
  state; backward re-runs the steps one at a time under autograd, newest first. It gives
  the *same* gradient as ``direct`` (same discretisation) for the memory of one step's
  graph plus one state per step, at the cost of one extra forward evaluation per stage.
  Prefer it to ``adjoint`` whenever one state per step fits in memory.

Gradients with respect to the output times ``t`` are, in every mode, those of the exact
flow at the computed solution (``dy(t_i)/dt_i = f(t_i, y_i)``, ``dy(t_i)/dt_0 =
-∂y(t_i)/∂y0 · f(t_0, y_0)``), as the adjoint method defines them; see ``time_grad.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:
    from ..problem import Problem

__all__ = ["GRADIENTS", "find_params", "closure_leaves", "add_grads", "first_good_lane"]

GRADIENTS = ("direct", "adjoint", "checkpoint")


def find_params(params: Sequence[Tensor] | None, mode: str, problem: Problem) -> tuple[Tensor, ...]:
    """The tensors whose gradients ``mode`` must return: ``params``, or ``func``'s parameters.

    For ``mode="checkpoint"`` and a plain function (not an ``nn.Module``) without
    ``adjoint_params``, they are the tensors the function's output depends on
    (:func:`closure_leaves`): checkpointing replays ``func`` under autograd, so it can
    differentiate whatever the function uses, as direct mode does. The adjoint method
    cannot (its backward ``func`` calls are new evaluations, and the tensors they will use
    are not known in advance), and raises ``ValueError`` asking for ``adjoint_params``.
    """
    if params is not None:
        params = tuple(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"adjoint_params[{i}] must be a tensor, got {type(p).__name__}")
    elif isinstance(problem.user_func, torch.nn.Module):
        params = tuple(problem.user_func.parameters())
    elif mode == "checkpoint":
        params = closure_leaves(problem)
    else:
        raise ValueError(f"gradient={mode!r} needs to know func's parameters: make func a "
                         "torch.nn.Module, or pass adjoint_params=(tensors func uses) (use "
                         "adjoint_params=() if it has none)")
    # Deduplicate (shared parameters) and keep only those that need a gradient.
    return tuple({id(p): p for p in params if p.requires_grad}.values())


def closure_leaves(problem: Problem) -> tuple[Tensor, ...]:
    """The leaf tensors requiring grad that ``func(t0, y0)`` depends on, in graph order.

    One evaluation of the user's ``func`` (not counted in NFE) under autograd, with ``t0``
    and ``y0`` detached, so that only tensors from its closure, globals or attributes are
    found, including leaves behind a tensor computed outside ``func`` (``w = p * p`` gives
    ``p``). A tensor that ``func`` uses only at other times or states (a branch not taken at
    ``t0``) is not found: pass ``adjoint_params`` for such a function.
    """
    t0 = problem.clock.user_time(problem.clock.t0)
    with torch.enable_grad():
        out = problem.user_func(t0, problem.layout.unflatten(problem.y0.detach()))
    outs = out if isinstance(out, (tuple, list)) else (out,)
    tensors = [o for o in outs if isinstance(o, Tensor) and o.requires_grad]
    leaves = [o for o in tensors if o.grad_fn is None]  # func returned a leaf itself
    stack = [o.grad_fn for o in tensors if o.grad_fn is not None]
    seen_nodes: set[Any] = set()
    while stack:
        node = stack.pop()
        if node in seen_nodes:
            continue
        seen_nodes.add(node)
        leaf = getattr(node, "variable", None)  # AccumulateGrad: the leaf it accumulates into
        if leaf is not None:
            leaves.append(leaf)
            continue
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return tuple(leaves)


def add_grads(total: list[Tensor | None], got: Sequence[Tensor | None]) -> list[Tensor | None]:
    """``total + got`` parameter by parameter (``None``: no gradient yet, or none in ``got``)."""
    return [s if g is None else g if s is None else s + g for s, g in zip(total, got)]


def first_good_lane(failed: Tensor) -> int | None:
    """The first lane that did not fail forward (``None``: every lane failed, no gradient
    flows). Backward takes the failed lanes' zero terms at its start state: at their own,
    ``func`` may be non-finite, and a zero gradient times inf or nan is nan."""
    # argmax: the first maximum, the appended sentinel if none (one host read for both)
    good = int(torch.cat((~failed, failed.new_ones(1))).long().argmax())
    return None if good == failed.shape[0] else good
