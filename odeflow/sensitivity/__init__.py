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

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["GRADIENTS", "find_params"]

GRADIENTS = ("direct", "adjoint", "checkpoint")


def find_params(func: Callable[..., Any], params: Sequence[Tensor] | None, mode: str,
                ) -> tuple[Tensor, ...]:
    """The tensors whose gradients ``mode`` must return: ``params``, or ``func``'s parameters.

    Raises:
        ValueError: ``func`` is not an ``nn.Module`` and no ``adjoint_params`` were given.
    """
    if params is not None:
        params = tuple(params)
        for i, p in enumerate(params):
            if not isinstance(p, Tensor):
                raise TypeError(f"adjoint_params[{i}] must be a tensor, got {type(p).__name__}")
    elif isinstance(func, torch.nn.Module):
        params = tuple(func.parameters())
    else:
        raise ValueError(
            f"gradient={mode!r} needs to know func's parameters: make func a torch.nn.Module, "
            "or pass adjoint_params=(tensors func uses) (use adjoint_params=() if it has none)"
        )
    # Deduplicate (shared parameters) and keep only those that need a gradient.
    seen: set[int] = set()
    out = []
    for p in params:
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append(p)
    return tuple(out)
