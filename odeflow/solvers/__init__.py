"""The solver families and the registry mapping ``method=`` names to them."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

from ..linalg import LINEAR_SOLVER_OPTIONS, make_linear_solver
from ..tableaus import TABLEAUS
from .adams import Adams
from .auto import AutoSwitch
from .esdirk import ESDIRK
from .esdirk_tableaus import ESDIRK_TABLEAUS
from .explicit_rk import ExplicitRK
from .rosenbrock import Rosenbrock
from .rosenbrock_tableaus import ROSENBROCK_TABLEAUS
from .scipy_bridge import SCIPY_OPTIONS

__all__ = ["METHODS", "ADAPTIVE_METHODS", "FIXED_METHODS", "IMPLICIT_METHODS", "MethodSpec",
           "get_method", "warn_unsupported_callbacks"]

CALLBACKS = ("callback_step", "callback_accept_step", "callback_reject_step")

ADAPTIVE_OPTIONS = (
    "first_step", "safety", "ifactor", "dfactor", "min_step", "max_step", "max_num_steps",
    "norm", "jump_t", "step_t", "dtype", "controller", "per_sample", "compile",
)
FIXED_OPTIONS = ("step_size", "grid_constructor", "perturb", "interp", "max_num_steps",
                 "step_t", "per_sample")
IMPLICIT_OPTIONS = ADAPTIVE_OPTIONS + LINEAR_SOLVER_OPTIONS + ("autonomous", "max_newton_iters")
DEFAULT_METHOD = "dopri5"


@dataclass(frozen=True)
class MethodSpec:
    """What a method name means: its family, its valid options and how to build it."""

    name: str
    family: str  # "adaptive" | "implicit" | "fixed" | "scipy"
    valid_options: tuple[str, ...]
    stepper: Any = None  # the stepper class, which declares its capabilities (None: SciPy)

    # Capability flags: what the rest of the code asks of a method (never its family name).
    @property
    def adaptive(self) -> bool:
        """Steps are chosen by an error estimate (else: a fixed grid, or SciPy's own)."""
        return self.family in ("adaptive", "implicit")

    @property
    def implicit(self) -> bool:
        """Each step solves linear systems with ``I - hγJ`` (stiff problems)."""
        return self.family == "implicit"

    @property
    def external(self) -> bool:
        """The steps are taken outside odeflow (SciPy): no graph, no replay, no events."""
        return self.family == "scipy"

    @property
    def replayable(self) -> bool:
        """Each accepted step can be replayed alone from its start state (checkpointing):
        one-step methods; a multistep history (Adams) or a switching method (auto) cannot."""
        return self.stepper not in (Adams, AutoSwitch) and not self.external

    @property
    def per_sample(self) -> bool:
        """Whether the stepper takes one step size per lane (``options["per_sample"]``):
        declared by the stepper class itself (SciPy: one SciPy solve per sample)."""
        return self.external or bool(getattr(self.stepper, "per_sample", False))

    def check_per_sample(self, options: dict[str, Any], mode: str) -> None:
        """Refuse what per-sample mode does not support with this method, naming it."""
        if not self.per_sample:  # (a family that declares no per-sample steps)
            able = [m for m in METHODS if get_method(m).per_sample]
            raise ValueError(f"options['per_sample'] does not support method={self.name!r}; "
                             f"methods that take one step size per sample: {', '.join(able)}")
        if not self.implicit:
            return
        # options["jacobian"] works per sample: it gets t (B,) and y (B, n) and returns
        # (B, n, n) (linalg.DenseSolver).
        if options.get("linear_solver") not in (None, "dense"):
            raise ValueError(
                f"options['linear_solver']={options['linear_solver']!r} is not supported with "
                f"options['per_sample'] and method={self.name!r}: GMRES would solve one system "
                "for the whole batch, with one convergence test, so a sample would not take "
                "the steps of its own solve; per sample the systems are (B, n, n) dense LUs")
        if options.get("compile"):
            raise ValueError(
                f"options['compile'] is not supported with options['per_sample'] and "
                f"method={self.name!r}: an implicit step reuses its Jacobian and LU factors "
                "between steps and decides per sample on the host at every Newton iteration, "
                "which torch.compile cannot keep in one graph; the explicit methods take it")

    @property
    def lanes_adjoint(self) -> bool:
        """Can solve the per-sample interpolating adjoint backwards: takes one step size per
        lane and needs no ``∂f/∂t`` of the backward system (which depends on time through
        the forward dense output): the ESDIRK and explicit Runge–Kutta methods."""
        return self.per_sample and self.adaptive and self.stepper in (ESDIRK, ExplicitRK)

    def adjoint_default(self, per_sample: bool = False) -> str | None:
        """The backward solve's method when ``adjoint_method`` is not given: the forward's,
        except after an implicit forward, where ``kvaerno5`` (implicit too, and its Newton
        iteration tolerates the block Jacobian the adjoint system gets, where a Rosenbrock
        method would lose order); and per sample after a forward whose steps cannot carry
        the per-sample adjoint's quadrature (it integrates over Runge–Kutta stages): ``rk4``
        on the same grid after Adams (its start-up method, of the same order); ``dopri5``
        after SciPy, whose solve cannot restart its state at the output times."""
        if self.implicit:
            return "kvaerno5"
        if self.external:
            return "dopri5"
        if per_sample and not self.replayable:  # (Adams: auto and SciPy were answered above)
            return "rk4"
        return None

    @property
    def valid_callbacks(self) -> tuple[str, ...]:
        """The step callbacks this method calls: all three when adaptive, ``callback_step``
        on a fixed grid (every step is accepted), none through SciPy."""
        return CALLBACKS if self.adaptive else CALLBACKS[:1] if self.family == "fixed" else ()

    def build(self, options: dict[str, Any], rtol: Any = 1e-7, atol: Any = 1e-9) -> Any:
        """A stepper configured by ``options`` (the loop reads the rest of them); the
        implicit methods scale their Newton tests by the solve's ``rtol``/``atol``."""
        if self.stepper is ExplicitRK:  # configuration only: one per method, reused
            if self.name not in _RK_CACHE:
                _RK_CACHE[self.name] = ExplicitRK(TABLEAUS[self.name])
            return _RK_CACHE[self.name]
        if self.stepper in (Rosenbrock, AutoSwitch):  # auto switches tsit5 <-> rodas5p
            rodas = Rosenbrock(ROSENBROCK_TABLEAUS["rodas5p" if self.name == "auto" else self.name],
                               make_linear_solver(options),
                               autonomous=bool(options.get("autonomous", False)))
            return rodas if self.name != "auto" else AutoSwitch(
                get_method("tsit5").build(options), rodas)
        if self.stepper is ESDIRK:
            return ESDIRK(ESDIRK_TABLEAUS[self.name], make_linear_solver(options), rtol=rtol,
                          atol=atol, max_newton_iters=options.get("max_newton_iters", 8))
        if self.stepper is Adams:  # explicit_adams: the predictor alone (no max_iters)
            return Adams(options.get("max_order", 4),
                         0 if self.name == "explicit_adams" else options.get("max_iters", 4))
        return None  # SciPy takes its own steps


_RK_CACHE: dict[str, ExplicitRK] = {}


# Each method name's family, valid options and stepper class (MethodSpec's fields); the
# order is that of METHODS.
_REGISTRY: dict[str, tuple[str, tuple[str, ...], Any]] = {
    **dict.fromkeys(("dopri5", "tsit5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun"),
                    ("adaptive", ADAPTIVE_OPTIONS, ExplicitRK)),
    "auto": ("implicit", IMPLICIT_OPTIONS, AutoSwitch),
    **dict.fromkeys(("rodas5p", "rodas4"), ("implicit", IMPLICIT_OPTIONS, Rosenbrock)),
    **dict.fromkeys(("kvaerno5", "kvaerno3", "trbdf2"), ("implicit", IMPLICIT_OPTIONS, ESDIRK)),
    **dict.fromkeys(("euler", "midpoint", "heun2", "heun3", "rk4", "rk4_classic"),
                    ("fixed", FIXED_OPTIONS, ExplicitRK)),
    "explicit_adams": ("fixed", FIXED_OPTIONS + ("max_order",), Adams),
    **dict.fromkeys(("implicit_adams", "fixed_adams"),
                    ("fixed", FIXED_OPTIONS + ("max_order", "max_iters"), Adams)),
    "scipy_solver": ("scipy", SCIPY_OPTIONS, None),
}
METHODS = tuple(_REGISTRY)
ADAPTIVE_METHODS, IMPLICIT_METHODS, FIXED_METHODS = (
    tuple(name for name, (fam, *_) in _REGISTRY.items() if fam == family)
    for family in ("adaptive", "implicit", "fixed"))


def get_method(method: str | None) -> MethodSpec:
    """The :class:`MethodSpec` for ``method`` (``None`` means dopri5)."""
    name = DEFAULT_METHOD if method is None else method
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"method={method!r} is not known; choose one of: {', '.join(METHODS)}")
    return MethodSpec(name, *_REGISTRY[name])


def warn_unsupported_callbacks(func: Any, spec: MethodSpec,
                               adjoint_spec: MethodSpec | None = None) -> None:
    """Warn (as torchdiffeq does) about step callbacks on ``func`` that ``spec`` never calls.

    ``callback_*_adjoint`` are checked against ``adjoint_spec`` (the backward solve's
    method) when there is one.
    """
    for suffix, which in (("", spec), ("_adjoint", adjoint_spec)):
        if which is None:
            continue
        unused = [n + suffix for n in CALLBACKS
                  if n not in which.valid_callbacks and getattr(func, n + suffix, None) is not None]
        if unused:
            warnings.warn(f"method={which.name!r} does not call the step callbacks "
                          f"{', '.join(unused)}"
                          + (" (every fixed-grid step is accepted)" if which.family == "fixed"
                             else ""), UserWarning, stacklevel=4)
