"""SDE methods: one module per family; each class declares what it supports.

:func:`select` finds the class for a ``method=`` name and SDE type from the classes'
own declarations (``name``, ``sde_types``); there is no other list of names.
"""

from __future__ import annotations

from .base import LEVY_PROVIDERS, Levy, SDEMethod
from .euler import Euler
from .euler_heun import EulerHeun
from .heun import Heun
from .log_ode import LogODEMidpoint
from .midpoint import Midpoint
from .milstein import MilsteinIto, MilsteinStratonovich
from .reversible_heun import ReversibleHeun
from .srk import SRK

__all__ = ["Levy", "SDEMethod", "LEVY_PROVIDERS", "ALL_METHODS", "select", "Euler", "EulerHeun",
           "Heun", "LogODEMidpoint", "Midpoint", "MilsteinIto", "MilsteinStratonovich",
           "ReversibleHeun", "SRK"]

ALL_METHODS: tuple[type[SDEMethod], ...] = (Euler, MilsteinIto, MilsteinStratonovich, SRK,
                                            Midpoint, Heun, EulerHeun, LogODEMidpoint,
                                            ReversibleHeun)


def select(method: str, sde_type: str) -> type[SDEMethod]:
    """The method class named ``method`` for SDEs of ``sde_type``.

    Raises:
        ValueError: the name is unknown, or known only for the other SDE type (the
            message names the methods that do support ``sde_type``).
    """
    named = [cls for cls in ALL_METHODS if cls.name == method]
    for cls in named:
        if sde_type in cls.sde_types:
            return cls
    fits = sorted({cls.name for cls in ALL_METHODS if sde_type in cls.sde_types})
    if named:
        raise ValueError(f"method {method!r} is for {named[0].sde_types[0]} SDEs, but the SDE is "
                         f"{sde_type}; methods for {sde_type} SDEs: {fits}")
    if method == "adjoint_reversible_heun":
        raise NotImplementedError("'adjoint_reversible_heun' is an adjoint_method of "
                                  "sdeint_adjoint; use method='reversible_heun' (with sdeint "
                                  "or sdeint_adjoint)")
    raise ValueError(f"Expected method in {sorted({c.name for c in ALL_METHODS})}, but found "
                     f"{method!r}.")
