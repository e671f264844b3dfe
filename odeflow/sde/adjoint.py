"""The reversible Heun method's algebraically reversible adjoint (``sdeint_adjoint``).

Reversible Heun's step (:class:`~odeflow.sde.methods.ReversibleHeun`) can be undone
exactly: :meth:`~odeflow.sde.methods.ReversibleHeun.backward_step` recovers the state
before a step from the state after it and the step's Brownian increment. So the backward
pass needs no stored trajectory (Kidger, Foster, Li & Lyons, "Efficient and accurate
gradients for neural SDEs", NeurIPS 2021, §3 and Algorithm 2):

* forward (:class:`ReversibleHeunAdjoint`): the ordinary fixed-step solve of
  :func:`~odeflow.sde.steps.solve_sde` without a graph; only the outputs at ``ts`` and the
  final carried state ``(f(z), g(z), z)`` are kept;
* backward: from the end, each step ``k`` is undone by ``backward_step`` (same ``t``,
  ``dt`` and Brownian increment as the forward; the Brownian motion answers any query
  order with the same values), then the cotangents of the step's outputs are pulled
  through the step by one vector–Jacobian product of ``method.step`` at the rebuilt
  inputs, which also accumulates the parameters' gradients. An output time inside step
  ``k`` was the linear interpolation ``y_k + θ (y_{k+1} - y_k)``: its cotangent adds
  ``θ`` to ``y_{k+1}``'s and ``1 - θ`` to ``y_k``'s.

The gradients are those of backpropagation through the same forward solve, up to the
rounding of the reconstruction. Memory is independent of the number of steps: the
backward holds one step's tensors at a time and computes the grid points on the fly.
Cost per backward step: two evaluations of ``f`` and ``g`` (one in ``backward_step``,
one in the re-run step) and one backward pass through them.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .methods import Levy

__all__ = ["ReversibleHeunAdjoint", "grid_point"]


def grid_point(t0: float, t1: float, dt: float, i: int) -> tuple[float, int]:
    """The ``i``-th point of :func:`~odeflow.sde.steps.solve_sde`'s fixed grid and its size.

    The grid is ``t0, t0 + dt, ..., t0 + (n - 1) dt, t1`` with
    ``n = max(1, ceil((t1 - t0) / dt - 1e-9))`` steps, computed here point by point with
    the same float operations as ``solve_sde`` (so the steps have the same ``t`` and ``dt``).
    """
    n = max(1, math.ceil((t1 - t0) / dt - 1e-9))
    if i == 0:
        return t0, n
    return (t1 if i >= n else t0 + i * dt), n


class ReversibleHeunAdjoint(torch.autograd.Function):
    """``(y0, f0, g0, z0, *params) -> (ys, f_N, g_N, z_N)`` with the reversible backward.

    ``run`` is the solve of ``sdeint`` (a callable ``state0 -> (ys, final state)`` under
    ``no_grad``), ``setup`` the checked arguments (funcs, method, Brownian motion, times).
    """

    @staticmethod
    def forward(ctx, run: Any, setup: Any, y0: Tensor, f0: Tensor, g0: Tensor, z0: Tensor,
                *params: Tensor):
        ys, state = run((f0.detach(), g0.detach(), z0.detach()))
        ctx.setup = setup
        ctx.n_params = len(params)
        ctx.save_for_backward(ys, *state, *params)
        return (ys, *state)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g_ys: Tensor, g_f: Tensor, g_g: Tensor, g_z: Tensor):
        ys, f_n, g_n, z_n, *params = ctx.saved_tensors
        setup = ctx.setup
        method, funcs, bm, times = setup.solver, setup.funcs, setup.bm, setup.times
        t0, t1, dt = times[0], times[-1], setup.dt
        _, n = grid_point(t0, t1, dt, 0)
        wrt_params = [p for p in params if p.requires_grad]
        # A non-leaf parameter (see _vjp) makes every step's pull-back walk the caller's graph.
        retain = any(p.grad_fn is not None for p in wrt_params)
        a_params = [torch.zeros_like(p) for p in wrt_params]

        y, state = ys[-1], (f_n, g_n, z_n)
        a_y = torch.zeros_like(y)
        a_state = [g.clone() for g in (g_f, g_g, g_z)]
        j = len(times) - 1  # the latest output time not yet pulled back
        t_next = t1
        for k in range(n - 1, -1, -1):
            t, _ = grid_point(t0, t1, dt, k)
            h = t_next - t  # the forward loop's step: next stop minus this one
            a_before = None  # the cotangent outputs inside this step give y_k
            while j >= 1 and times[j] > t:
                if times[j] == t_next:  # written as y_{k+1} itself
                    a_y = a_y + g_ys[j]
                else:  # torch.lerp(y_k, y_{k+1}, theta), theta as the loop computes it
                    theta = (times[j] - t) / h
                    a_y = a_y + theta * g_ys[j]
                    part = (1 - theta) * g_ys[j]
                    a_before = part if a_before is None else a_before + part
                j -= 1
            dW = bm(t, t + h)
            with torch.no_grad():
                y_prev, state_prev = method.backward_step(funcs, t + h, h, y, dW, state)
            with torch.enable_grad():
                y_in = y_prev.detach().requires_grad_(True)
                state_in = tuple(s.detach().requires_grad_(True) for s in state_prev)
                y_out, state_out = method.step(funcs, t, h, y_in, dW, state_in, Levy())
                grads = _vjp((y_out, *state_out), (y_in, *state_in, *wrt_params),
                             (a_y, *a_state), retain)
            a_y = _or_zeros(grads[0], y_in)
            a_state = [_or_zeros(g, s) for g, s in zip(grads[1:4], state_in)]
            for i, g in enumerate(grads[4:]):
                if g is not None:
                    a_params[i] += g
            if a_before is not None:
                a_y = a_y + a_before
            del grads, y_out, state_out, y_in, state_in
            y, state, t_next = y_prev, state_prev, t
        a_y = a_y + g_ys[0]
        it = iter(a_params)
        out_params = [next(it) if p.requires_grad else None for p in params]
        return (None, None, a_y, *a_state, *out_params)


def _vjp(outputs: tuple, inputs: tuple, cotangents: tuple, retain: bool) -> tuple:
    """``torch.autograd.grad`` over the outputs that depend on something: a diffusion that
    is constant in ``y`` and the parameters (e.g. torchcde's CDE vector field, whose ``g``
    is zeros) returns a tensor without a graph, which ``autograd.grad`` would reject.

    ``retain``: the SDE may use tensors computed before the solve from an
    ``adjoint_params`` entry that is not a leaf (torchcde's interpolation of generated
    samples in torchsde's ``sde_gan`` example); each step's pull-back walks that part of
    the caller's graph again, so it must not be freed. Only then: otherwise the step's
    buffers are freed as soon as they are used."""
    keep = [i for i, out in enumerate(outputs) if out.requires_grad]
    if not keep:
        return (None,) * len(inputs)
    return torch.autograd.grad([outputs[i] for i in keep], inputs,
                               [cotangents[i] for i in keep], allow_unused=True,
                               retain_graph=retain)


def _or_zeros(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad
