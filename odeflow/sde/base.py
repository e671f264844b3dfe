"""The SDE interface: user base classes and the one wrapper every solver calls.

A user's SDE is any object (usually an ``nn.Module``) with ``noise_type``, ``sde_type``
and the drift ``f(t, y)`` and diffusion ``g(t, y)``; optionally ``f_and_g``, ``g_prod``,
``f_and_g_prod`` (faster fused forms) and the prior drift ``h`` (for ``logqp``). Shapes,
with batch ``B``, state size ``d`` and Brownian size ``m``:

=============  ==================  ==========================================
noise_type     g(t, y)             g_prod(t, y, v), v of shape (B, m)
=============  ==================  ==========================================
diagonal       (B, d), m = d       g * v
scalar         (B, d, 1)           g @ v
additive       (B, d, m)           g @ v   (g does not depend on y)
general        (B, d, m)           g @ v
=============  ==================  ==========================================

:class:`SDEFunctions` adapts such an object to one interface (every form available,
each built from what the user gave), counts the evaluations of drift and diffusion,
and :meth:`SDEFunctions.check` validates shapes once, with messages that name what was
expected for the declared noise type.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .settings import NOISE_TYPES, SDE_TYPES

__all__ = ["BaseSDE", "SDEIto", "SDEStratonovich", "SDEFunctions", "SDECounts", "rename_methods",
           "LogqpSDE"]


def check_types(noise_type, sde_type) -> None:
    """Raise ``ValueError`` naming the valid values when either type is unknown."""
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"Expected noise type in {NOISE_TYPES}, but found {noise_type!r}.")
    if sde_type not in SDE_TYPES:
        raise ValueError(f"Expected sde type in {SDE_TYPES}, but found {sde_type!r}.")


class BaseSDE(nn.Module):
    """Base class of an SDE: checks and stores ``noise_type`` and ``sde_type``.

    Subclasses define ``f(t, y)`` and ``g(t, y)`` (see the module docstring for shapes).

    Args:
        noise_type: one of ``NOISE_TYPES``.
        sde_type: one of ``SDE_TYPES``.
    """

    def __init__(self, noise_type: str, sde_type: str):
        super().__init__()
        check_types(noise_type, sde_type)
        self.noise_type = noise_type
        self.sde_type = sde_type


class SDEIto(BaseSDE):
    """An Itô SDE ``dy = f(t, y) dt + g(t, y) dW``."""

    def __init__(self, noise_type: str):
        super().__init__(noise_type=noise_type, sde_type=SDE_TYPES.ito)


class SDEStratonovich(BaseSDE):
    """A Stratonovich SDE ``dy = f(t, y) dt + g(t, y) ∘ dW``."""

    def __init__(self, noise_type: str):
        super().__init__(noise_type=noise_type, sde_type=SDE_TYPES.stratonovich)


_NAMES = {"drift": "f", "diffusion": "g", "prior_drift": "h", "diffusion_prod": "g_prod",
          "drift_and_diffusion": "f_and_g", "drift_and_diffusion_prod": "f_and_g_prod"}


class _Renamed:
    def __init__(self, sde, mapping: dict[str, str]):
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        for key, ours in _NAMES.items():
            source = mapping.get(key, ours)
            if hasattr(sde, source):
                setattr(self, ours, getattr(sde, source))


def rename_methods(sde, names: dict[str, str] | None):
    """``sde`` with its methods read under torchsde's ``names`` (e.g. ``{"drift": "foo"}``)."""
    if not names:
        return sde
    unknown = set(names) - set(_NAMES)
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)} in names; valid keys: {sorted(_NAMES)}")
    return _Renamed(sde, names)


@dataclass
class SDECounts:
    """Evaluations of the user's functions (a fused call counts once in each it yields)."""

    drift: int = 0
    diffusion: int = 0


def as_time(t, like: Tensor) -> Tensor:
    """``t`` as a 0-d tensor of ``like``'s dtype and device, as torchsde passes times."""
    # scalar_tensor: half the fixed cost of torch.tensor, paid twice a step
    return t if torch.is_tensor(t) else torch.scalar_tensor(t, dtype=like.dtype,
                                                             device=like.device)


def batch_mvp(m: Tensor, v: Tensor) -> Tensor:
    """``m @ v`` for a batch: (B, d, m) x (B, m) -> (B, d)."""
    return torch.bmm(m, v.unsqueeze(-1)).squeeze(-1)


class SDEFunctions:
    """Every form of drift and diffusion, built from what the user's SDE provides.

    Attributes ``f``, ``g``, ``f_and_g``, ``g_prod``, ``f_and_g_prod``, ``prod`` are
    always present; a form the user did not give is composed from the others, and one
    that cannot be composed raises ``RuntimeError`` naming what to define.
    """

    def __init__(self, sde):
        check_types(getattr(sde, "noise_type", None), getattr(sde, "sde_type", None))
        self.sde = sde
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self.counts = SDECounts()
        self.diagonal = sde.noise_type == NOISE_TYPES.diagonal
        self._has = {n: callable(getattr(sde, n, None)) for n in _NAMES.values()}

    # ---------------------------------------------------------------- the user's calls
    def f(self, t, y: Tensor) -> Tensor:
        self.counts.drift += 1
        if self._has["f"]:
            return self.sde.f(as_time(t, y), y)
        if self._has["f_and_g"]:
            self.counts.diffusion += 1
            return self.sde.f_and_g(as_time(t, y), y)[0]
        raise RuntimeError("this method needs the drift: define `f` (or `f_and_g`) on the SDE")

    def g(self, t, y: Tensor) -> Tensor:
        self.counts.diffusion += 1
        if self._has["g"]:
            return self.sde.g(as_time(t, y), y)
        if self._has["f_and_g"]:
            self.counts.drift += 1
            return self.sde.f_and_g(as_time(t, y), y)[1]
        raise RuntimeError("this method needs the diffusion matrix: define `g` (or `f_and_g`) on "
                           "the SDE; `g_prod` alone only serves methods that need g @ v")

    def h(self, t, y: Tensor) -> Tensor:
        if not self._has["h"]:
            raise RuntimeError("logqp=True needs the prior drift: define `h(t, y)` on the SDE")
        return self.sde.h(as_time(t, y), y)

    def f_and_g(self, t, y: Tensor) -> tuple[Tensor, Tensor]:
        if self._has["f_and_g"]:
            self.counts.drift += 1
            self.counts.diffusion += 1
            return self.sde.f_and_g(as_time(t, y), y)
        return self.f(t, y), self.g(t, y)

    def prod(self, g: Tensor, v: Tensor) -> Tensor:
        """The diffusion applied to a noise vector ``v`` of shape (B, m)."""
        return g * v if self.diagonal else batch_mvp(g, v)

    def g_prod(self, t, y: Tensor, v: Tensor) -> Tensor:
        if self._has["g_prod"]:
            self.counts.diffusion += 1
            return self.sde.g_prod(as_time(t, y), y, v)
        return self.prod(self.g(t, y), v)

    def f_and_g_prod(self, t, y: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self._has["f_and_g_prod"]:
            self.counts.drift += 1
            self.counts.diffusion += 1
            return self.sde.f_and_g_prod(as_time(t, y), y, v)
        if self._has["f_and_g"] and not self._has["g_prod"]:
            f, g = self.f_and_g(t, y)
            return f, self.prod(g, v)
        return self.f(t, y), self.g_prod(t, y, v)

    # ---------------------------------------------------------------- derivatives
    def g_prod_and_gdg_prod(self, t, y: Tensor, v1: Tensor, v2: Tensor
                            ) -> tuple[Tensor, Tensor]:
        """``g(t, y) v1`` and Milstein's term ``Σ_j (∂g_j/∂y · g_j) v2_j`` (commutative noise).

        ``g_j`` is the ``j``-th noise column. For diagonal noise the term is
        ``g_i ∂g_i/∂y_i v2_i``, for scalar noise ``(J_g g) v2``, zero for additive noise.
        ``J_g g`` is one Jacobian-vector product through ``g`` (double-backward trick),
        differentiable when grad mode is on (so backpropagation through Milstein works).
        """
        if self.noise_type == NOISE_TYPES.additive:
            return self.g_prod(t, y, v1), torch.zeros_like(y)
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            # Without grad mode, y's history is not needed, and y may be a view of a
            # tensor requiring grad made under no_grad (the loop's first state): its
            # requires_grad is then True, yet a gradient with respect to it is None.
            y_ = y if create and y.requires_grad else y.detach().requires_grad_(True)
            g = self.g(t, y_)
            col = g if self.diagonal else g.squeeze(-1)
            Lg = None
            if g.requires_grad:  # else g depends neither on y nor on parameters
                dummy = torch.zeros_like(g, requires_grad=True)
                (vjp,) = torch.autograd.grad(g, y_, dummy, create_graph=True, allow_unused=True)
                if vjp is not None:  # else g does not depend on y
                    (Lg,) = torch.autograd.grad(vjp, dummy, col, create_graph=create,
                                                allow_unused=True)
        Lg = torch.zeros_like(col) if Lg is None else (Lg if self.diagonal else Lg.squeeze(-1))
        return self.prod(g, v1), Lg * v2

    def dg_ga_jvp_column_sum(self, t, y: Tensor, a: Tensor) -> Tensor:
        """``Σ_k,l ∂g_il/∂y_j g_jk a_kl`` for general noise (zero for the others).

        ``a`` has shape (B, m, m) (a Lévy area); one Jacobian-vector product per column
        of ``g`` (double-backward trick), as the log-ODE method needs.
        """
        if self.noise_type != NOISE_TYPES.general:
            return torch.zeros_like(y)
        create = torch.is_grad_enabled()
        with torch.enable_grad():
            # Without grad mode, y's history is not needed, and y may be a view of a
            # tensor requiring grad made under no_grad (the loop's first state): its
            # requires_grad is then True, yet a gradient with respect to it is None.
            y_ = y if create and y.requires_grad else y.detach().requires_grad_(True)
            g = self.g(t, y_)
            ga = torch.bmm(g, a)
            total = torch.zeros_like(y)
            for col in range(g.size(-1)):
                out = g[..., col]
                u = torch.zeros_like(out, requires_grad=True)
                (vjp,) = torch.autograd.grad(out, y_, u, create_graph=True, allow_unused=True)
                if vjp is None:
                    continue
                (jvp,) = torch.autograd.grad(vjp, u, ga[..., col], create_graph=create,
                                             allow_unused=True)
                if jvp is not None:
                    total = total + jvp
        return total

    # ---------------------------------------------------------------- checks
    def check(self, t0, y0: Tensor, bm_shape: tuple[int, ...] | None) -> int:
        """Evaluate every given form once at ``(t0, y0)`` and check its shape.

        Returns:
            The Brownian size ``m``.

        Raises:
            ValueError: naming the function, the shape it returned and the shape the
                declared ``noise_type`` expects.
        """
        B, d = y0.shape
        nt = self.noise_type
        want_g = f"(batch, state) = ({B}, {d})" if self.diagonal else \
            f"(batch, state, noise) = ({B}, {d}, m)" + (" with m = 1" if nt == "scalar" else "")
        m = None if bm_shape is None else bm_shape[-1]
        if bm_shape is not None and (len(bm_shape) != 2 or bm_shape[0] != B):
            raise ValueError(f"the Brownian motion has shape {tuple(bm_shape)}; expected "
                             f"(batch, noise) with batch = {B} (y0's first dimension)")

        def drift(name, out):
            if tuple(out.shape) != (B, d):
                raise ValueError(f"{name} returned shape {tuple(out.shape)}; expected "
                                 f"(batch, state) "
                                 f"= {(B, d)}, y0's shape")

        def diffusion(name, out):
            nonlocal m
            shape = tuple(out.shape)
            ok = shape == (B, d) if self.diagonal else (len(shape) == 3 and shape[:2] == (B, d))
            if not ok:
                raise ValueError(f"{name} returned shape {shape}; for noise_type={nt!r} expected "
                                 f"{want_g}")
            got = d if self.diagonal else shape[2]
            if m is not None and got != m:
                raise ValueError(f"{name} returned {got} noise channels but the Brownian motion "
                                 f"has {m} (its last dimension)")
            m = got

        has = self._has
        if not (has["f"] or has["f_and_g"] or has["f_and_g_prod"]):
            raise ValueError("the SDE must define a drift: `f`, `f_and_g` or `f_and_g_prod`")
        if not (has["g"] or has["f_and_g"] or has["g_prod"] or has["f_and_g_prod"]):
            raise ValueError("the SDE must define a diffusion: `g`, `f_and_g`, `g_prod` or "
                             "`f_and_g_prod`")
        sde = self.sde
        if has["f"]:
            drift("f", sde.f(t0, y0))
        if has["g"]:
            diffusion("g", sde.g(t0, y0))
        if has["f_and_g"]:
            fo, go = sde.f_and_g(t0, y0)
            drift("f_and_g (drift)", fo)
            diffusion("f_and_g (diffusion)", go)
        if has["g_prod"] or has["f_and_g_prod"]:
            if m is None:
                raise ValueError("cannot infer the number of noise channels from `g_prod` alone: "
                                 "pass `bm`, or define `g` or `f_and_g`")
            v = torch.randn(B, m, dtype=y0.dtype, device=y0.device)
            if has["g_prod"]:
                drift("g_prod", sde.g_prod(t0, y0, v))
            if has["f_and_g_prod"]:
                fo, gp = sde.f_and_g_prod(t0, y0, v)
                drift("f_and_g_prod (drift)", fo)
                drift("f_and_g_prod (diffusion product)", gp)
        if nt == NOISE_TYPES.scalar and m != 1:
            raise ValueError(f"noise_type='scalar' needs one noise channel; got {m}")
        return m


class LogqpSDE:
    """The SDE augmented with the running KL penalty ``½|u|²``, ``g u = f - h``.

    The last state component accumulates ``∫ ½ |u(t, y)|² dt`` and has no noise
    (Li et al. 2020, eq. for the ELBO of latent SDEs). Needs ``f``, ``g`` and ``h``.
    """

    def __init__(self, sde):
        for name in ("f", "g", "h"):
            if not callable(getattr(sde, name, None)):
                raise ValueError("logqp=True needs the drift `f`, diffusion `g` and prior "
                                 "drift `h`")
        self.noise_type, self.sde_type = sde.noise_type, sde.sde_type
        self._sde = sde
        self._diag = sde.noise_type == NOISE_TYPES.diagonal

    def _u2(self, t, x, f, g):
        diff = f - self._sde.h(t, x)
        if self._diag:
            tiny = torch.where(g < 0, -1e-7, 1e-7).to(g.dtype)
            u = diff / torch.where(g.abs() < 1e-7, tiny, g)
        else:
            u = batch_mvp(torch.linalg.pinv(g), diff)
        return 0.5 * (u * u).sum(dim=1, keepdim=True)

    def f_and_g(self, t, y):
        x = y[:, :-1]
        f, g = self._sde.f(t, x), self._sde.g(t, x)
        zero = g.new_zeros((g.size(0), 1, *g.shape[2:]))
        return torch.cat([f, self._u2(t, x, f, g)], dim=1), torch.cat([g, zero], dim=1)

    def f(self, t, y):
        return self.f_and_g(t, y)[0]

    def g(self, t, y):
        x = y[:, :-1]
        g = self._sde.g(t, x)
        return torch.cat([g, g.new_zeros((g.size(0), 1, *g.shape[2:]))], dim=1)
