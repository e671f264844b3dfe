"""The adjoint SDE of the stochastic adjoint method (Li, Wong, Chen & Duvenaud 2020).

For a Stratonovich SDE ``dy = f(t, y) dt + Σ_j g_j(t, y) ∘ dW_j`` (``g_j`` the noise
columns, ``θ`` the parameters) and a loss ``L`` of ``y(T)``, the adjoint ``a = ∂L/∂y``
and the parameter gradient ``a_θ`` solve, backwards in time on the *same* Brownian path,
a Stratonovich SDE in the state ``z = (y, a, a_θ)`` (Li et al., "Scalable Gradients for
Stochastic Differential Equations", AISTATS 2020, Theorem 3.3 and eq. (9)). In reversed
time ``s = -t``, driven by the reversed motion ``W̌(s) = W(-s)``
(:class:`~odeflow.sde.brownian.ReverseBrownian`)::

    dy   = -f ds                 - Σ_j g_j ∘ dW̌_j
    da   =  a ∂f/∂y ds           + Σ_j a ∂g_j/∂y ∘ dW̌_j
    da_θ =  a ∂f/∂θ ds           + Σ_j a ∂g_j/∂θ ∘ dW̌_j

(``y`` is recomputed backwards rather than stored). Products ``a ∂(·)`` are
vector–Jacobian products, one backward pass each.

Itô SDEs go through the Itô–Stratonovich correction, as in the paper (§3.3): the Itô SDE
with drift ``f`` is the Stratonovich SDE with drift ``f - ½ c``, ``c = Σ_j (∂g_j/∂y) g_j``.
The adjoint above may then be solved as it is (a Stratonovich ``adjoint_method``) or in
its own Itô form (an Itô ``adjoint_method``, torchsde's default for Itô SDEs), whose drift
adds ``½ Σ_j (∂G_j/∂z) G_j`` for the adjoint's noise columns ``G_j``. Worked out, both
cases are one formula with ``f̃ = f - κ c``::

    drift = (-f̃,  a ∂f̃/∂y + [Itô form] Σ_j (a ∂g_j/∂y) ∂g_j/∂y,
                  a ∂f̃/∂θ + [Itô form] Σ_j (a ∂g_j/∂y) ∂g_j/∂θ)

with ``κ = ½ [forward is Itô] + ½ [adjoint form is Itô]`` (``κ = 1``: torchsde's "double
Stratonovich correction"). Additive noise needs no correction (``c = 0``). For diagonal
noise, ``c`` and ``a ∂g/∂y`` are taken as ``g_i ∂g_i/∂y_i`` and ``a_i ∂g_i/∂y_i`` (exact
when ``g_i`` depends on ``y_i`` alone, the case diagonal noise describes).

:class:`AdjointSDE` provides the adjoint's drift, its diffusion applied to a noise vector
``G v`` and Milstein's term ``Σ_j (∂G_j/∂z) G_j v_j`` for commutative noise, in the
interface odeflow's SDE methods call (:class:`~odeflow.sde.base.SDEFunctions`), so the
backward solve is an ordinary solve of :func:`~odeflow.sde.steps.solve_sde`. Its state is
the flat row ``(1, N)`` = ``[y.flatten(), a.flatten(), *(a_θ.flatten())]``. The diffusion
matrix itself (``N × B m``) is never formed: methods that need it (``srk``, the
derivative-free Milstein, ``reversible_heun``) cannot solve the adjoint.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .settings import METHODS, NOISE_TYPES, SDE_TYPES

__all__ = ["AdjointSDE", "ADJOINT_NOISE", "ADJOINT_METHODS"]

#: The adjoint's noise type: additive noise enters ``a_θ``'s diffusion through ``a``, so it
#: is no longer additive; the diagonal and scalar structures survive (each channel still
#: drives its own ``y_i``, ``a_i`` and ``a_θ``, and the channels commute).
ADJOINT_NOISE = {NOISE_TYPES.diagonal: NOISE_TYPES.diagonal,
                 NOISE_TYPES.scalar: NOISE_TYPES.scalar,
                 NOISE_TYPES.additive: NOISE_TYPES.general,
                 NOISE_TYPES.general: NOISE_TYPES.general}

#: Methods whose step uses only the drift, ``G v`` and Milstein's term (what the adjoint
#: provides). ``log_ode`` needs a Lévy-area term for general noise, which it does not.
ADJOINT_METHODS = (METHODS.euler, METHODS.milstein, METHODS.midpoint, METHODS.heun,
                   METHODS.euler_heun, METHODS.log_ode_midpoint)


class AdjointSDE:
    """The adjoint SDE of ``funcs`` in reversed time (see the module docstring).

    Args:
        funcs: the forward SDE (:class:`~odeflow.sde.base.SDEFunctions`).
        params: the tensors ``θ`` whose gradients ``a_θ`` accumulates.
        shape: the forward state's shape ``(batch, d)``.
        sde_type: the form the adjoint is solved in (that of the ``adjoint_method``).
    """

    def __init__(self, funcs, params: Sequence[Tensor], shape: torch.Size, sde_type: str):
        self.fwd = funcs
        self.params = tuple(params)
        self.shape = torch.Size(shape)
        self.n = self.shape.numel()
        self.noise_type = ADJOINT_NOISE[funcs.noise_type]
        self.sde_type = sde_type
        self.counts = funcs.counts
        self.diagonal = funcs.noise_type == NOISE_TYPES.diagonal  # the forward's structure
        additive = funcs.noise_type == NOISE_TYPES.additive
        self.ito_form = sde_type == SDE_TYPES.ito and not additive
        self.kappa = 0.0 if additive else (0.5 * (funcs.sde_type == SDE_TYPES.ito)
                                           + 0.5 * (sde_type == SDE_TYPES.ito))

    # ------------------------------------------------------------ state layout
    def pack(self, y: Tensor, a: Tensor, a_params: Sequence[Tensor]) -> Tensor:
        """The flat adjoint state ``(1, N)``."""
        return torch.cat([y.reshape(-1), a.reshape(-1), *(p.reshape(-1) for p in a_params)]
                         ).unsqueeze(0)

    def unpack(self, z: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        """``(y, a, [a_θ, ...])`` from the flat state (views of ``z``)."""
        flat, n = z.reshape(-1), self.n
        y, a = flat[:n].view(self.shape), flat[n:2 * n].view(self.shape)
        out, i = [], 2 * n
        for p in self.params:
            out.append(flat[i:i + p.numel()].view(p.shape))
            i += p.numel()
        return y, a, out

    def _state(self, z: Tensor) -> tuple[Tensor, Tensor]:
        # y as a fresh leaf: the vector-Jacobian products below must stop at this step's
        # y, never reach back into the history of z.
        flat, n = z.reshape(-1), self.n
        return (flat[:n].view(self.shape).detach().requires_grad_(True),
                flat[n:2 * n].view(self.shape).detach())

    def _row(self, y_part: Tensor, grads: Sequence[Tensor]) -> Tensor:
        return torch.cat([y_part.detach().reshape(-1), *(g.reshape(-1) for g in grads)]
                         ).unsqueeze(0)

    def _vjp(self, out: Tensor, y: Tensor, weight: Tensor) -> list[Tensor]:
        """``weight · ∂out/∂(y, θ)`` with zeros where ``out`` does not depend on them."""
        inputs = (y, *self.params)
        if not out.requires_grad:
            return [torch.zeros_like(x) for x in inputs]
        grads = torch.autograd.grad(out, inputs, weight, retain_graph=True, allow_unused=True)
        return [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]

    # ------------------------------------------------------------ derivative pieces
    def _columns(self, g: Tensor) -> list[Tensor]:
        """The noise columns of ``g`` as (B, d) tensors (diagonal: ``g`` itself)."""
        return [g] if self.diagonal else list(g.unbind(-1))

    @staticmethod
    def _jvp(out: Tensor, y: Tensor, v: Tensor) -> Tensor:
        """``(∂out/∂y) v``, differentiable (double-backward trick: a VJP is linear in its
        weight, so differentiating it with respect to the weight gives the JVP)."""
        if not out.requires_grad:
            return torch.zeros_like(out)
        u = torch.zeros_like(out, requires_grad=True)
        (w,) = torch.autograd.grad(out, y, u, create_graph=True, allow_unused=True)
        if w is None:
            return torch.zeros_like(out)
        (jv,) = torch.autograd.grad(w, u, v, create_graph=True, allow_unused=True)
        return torch.zeros_like(out) if jv is None else jv

    def _correction(self, y: Tensor, g: Tensor) -> Tensor:
        """``c = Σ_j (∂g_j/∂y) g_j``, differentiable in ``y`` and ``θ``."""
        if not g.requires_grad:
            return torch.zeros_like(y)
        if self.diagonal:  # Σ_i g_i ∂g_i/∂y_k = g_k ∂g_k/∂y_k: one VJP
            (c,) = torch.autograd.grad(g, y, g, create_graph=True, allow_unused=True)
            return torch.zeros_like(y) if c is None else c
        return sum(self._jvp(col, y, col) for col in self._columns(g))

    def _a_jacobian(self, col: Tensor, y: Tensor, a: Tensor) -> Tensor:
        """``a ∂g_j/∂y`` (not differentiated further: a weight)."""
        if not col.requires_grad:
            return torch.zeros_like(y)
        (aj,) = torch.autograd.grad(col, y, a, retain_graph=True, allow_unused=True)
        return torch.zeros_like(y) if aj is None else aj

    def _drift(self, t, y: Tensor, a: Tensor, v: Tensor | None):
        """The adjoint drift row, and ``G v``'s row when ``v`` is given (one evaluation
        of the forward SDE serves both)."""
        fwd, t = self.fwd, -t
        need_g = self.kappa > 0 or self.ito_form
        with torch.enable_grad():
            if need_g:
                f, g = fwd.f_and_g(t, y)
                gv = None if v is None else fwd.prod(g, v)
            elif v is not None:
                f, gv = fwd.f_and_g_prod(t, y, v)
            else:
                f, gv = fwd.f(t, y), None
            drift = f - self.kappa * self._correction(y, g) if self.kappa else f
            grads = self._vjp(drift, y, a)
            if self.ito_form:  # + Σ_j (a ∂g_j/∂y) ∂g_j/∂(y, θ)
                for col in self._columns(g):
                    extra = self._vjp(col, y, self._a_jacobian(col, y, a))
                    grads = [x + e for x, e in zip(grads, extra)]
            out = self._row(-drift, grads)
            if v is None:
                return out
            return out, self._row(-gv, self._vjp(gv, y, a))

    # ------------------------------------------------------------ the method interface
    def f(self, t, z: Tensor) -> Tensor:
        """The adjoint drift at reversed time ``t``."""
        y, a = self._state(z)
        return self._drift(t, y, a, None)

    def g_prod(self, t, z: Tensor, v: Tensor) -> Tensor:
        """The adjoint diffusion applied to ``v`` (B, m): ``(-g v, a ∂(g v)/∂y, a ∂(g v)/∂θ)``."""
        y, a = self._state(z)
        with torch.enable_grad():
            gv = self.fwd.g_prod(-t, y, v)
            return self._row(-gv, self._vjp(gv, y, a))

    def f_and_g_prod(self, t, z: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        y, a = self._state(z)
        return self._drift(t, y, a, v)

    def g_prod_and_gdg_prod(self, t, z: Tensor, v1: Tensor, v2: Tensor
                            ) -> tuple[Tensor, Tensor]:
        """``G v1`` and Milstein's term ``Σ_j (∂G_j/∂z) G_j v2_j`` (diagonal/scalar noise).

        With ``G_j = (-g_j, a ∂g_j/∂y, a ∂g_j/∂θ)``: the ``y`` part is ``(∂g_j/∂y) g_j``; the
        ``a`` and ``a_θ`` parts are ``∂Ψ/∂(y, θ)`` of the scalar
        ``Ψ = Σ_j v2_j [(a ∂g_j/∂y)^ · g_j - a · (∂g_j/∂y) ĝ_j]``, where ``^`` marks values
        held constant (the first term is ``∂G_j/∂a`` along ``G_j``'s ``a`` part, the second
        ``∂G_j/∂y`` along ``-g_j``).
        """
        y, a = self._state(z)
        with torch.enable_grad():
            g = self.fwd.g(-t, y)
            gv = self.fwd.prod(g, v1)
            out_g = self._row(-gv, self._vjp(gv, y, a))
            if not g.requires_grad:
                return out_g, torch.zeros_like(z)
            if self.diagonal:  # g_i' = ∂g_i/∂y_i (one VJP, kept differentiable)
                (gp,) = torch.autograd.grad(g, y, torch.ones_like(g), create_graph=True,
                                            allow_unused=True)
                if gp is None:
                    return out_g, torch.zeros_like(z)
                y_part = g * gp * v2
                psi = (a * v2 * (gp.detach() * g - g.detach() * gp)).sum()
            else:
                y_part, psi = torch.zeros_like(y), torch.zeros((), dtype=y.dtype, device=y.device)
                for j, col in enumerate(self._columns(g)):
                    w = v2[:, j:j + 1]
                    jg = self._jvp(col, y, col.detach())
                    y_part = y_part + jg * w
                    psi = psi + (w * (self._a_jacobian(col, y, a) * col - a * jg)).sum()
            grads = self._vjp(psi, y, torch.ones_like(psi))
            return out_g, self._row(y_part, grads)

    def _no_matrix(self, *args, **kwargs):
        raise RuntimeError("the adjoint SDE does not form its diffusion matrix; use an "
                           f"adjoint_method in {list(ADJOINT_METHODS)} (without grad_free)")

    g = f_and_g = prod = dg_ga_jvp_column_sum = _no_matrix
