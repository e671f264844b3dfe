"""Names of methods, noise types, SDE types and Lévy area approximations.

The members and values are those of ``torchsde.settings`` (torchsde 0.2.6), so code that
reads ``torchsde.settings.METHODS.srk`` reads the same string here. Each class is a plain
namespace: ``METHODS.all()`` lists the values, ``"srk" in METHODS`` tests membership and
``str(METHODS)`` prints the list (used in error messages).
"""

from __future__ import annotations

__all__ = ["METHODS", "NOISE_TYPES", "SDE_TYPES", "LEVY_AREA_APPROXIMATIONS", "METHOD_OPTIONS"]


class _Names(type):
    """Metaclass of a namespace of string constants (its public class attributes)."""

    def all(cls) -> list[str]:
        return sorted(v for k, v in vars(cls).items() if not k.startswith("_"))

    def __contains__(cls, item: object) -> bool:
        return item in cls.all()

    def __str__(cls) -> str:
        return str(cls.all())


class METHODS(metaclass=_Names):
    """Solver names accepted by ``sdeint(..., method=...)``."""

    euler = "euler"
    milstein = "milstein"
    srk = "srk"
    midpoint = "midpoint"
    reversible_heun = "reversible_heun"
    adjoint_reversible_heun = "adjoint_reversible_heun"
    heun = "heun"
    log_ode_midpoint = "log_ode"
    euler_heun = "euler_heun"


class NOISE_TYPES(metaclass=_Names):  # noqa: N801
    """Structure of the diffusion ``g``: (B, d) for diagonal, (B, d, m) otherwise."""

    general = "general"
    diagonal = "diagonal"
    scalar = "scalar"
    additive = "additive"


class SDE_TYPES(metaclass=_Names):  # noqa: N801
    """Interpretation of the stochastic integral."""

    ito = "ito"
    stratonovich = "stratonovich"


class LEVY_AREA_APPROXIMATIONS(metaclass=_Names):  # noqa: N801
    """What a Brownian motion computes besides increments.

    ``none``: increments only. ``space-time``: also the (exact) space-time Lévy area ``H``.
    ``davie`` / ``foster``: also an approximate Lévy area ``A`` built from ``W`` and ``H``.
    """

    none = "none"
    space_time = "space-time"
    davie = "davie"
    foster = "foster"


class METHOD_OPTIONS(metaclass=_Names):  # noqa: N801
    """Keys of ``sdeint(..., options=...)``."""

    grad_free = "grad_free"
