"""odeflow: neural ordinary differential equations on PyTorch.

Solve ``dy/dt = f(t, y)`` with adaptive or fixed-grid solvers on tensors or tuples of
tensors, and differentiate the solution by backprop, the adjoint method, or exact
checkpointing. torchdiffeq scripts port by changing one import::

    from odeflow import odeint, odeint_adjoint

The public names are imported when first used (PEP 562), so that ``import odeflow`` (and
the ``odeflow --help`` command line) does not pay for importing torch until a solver is
needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what static tools (type checkers, the API docs) see
    from .api import odeint as odeint
    from .api import odeint_adjoint as odeint_adjoint
    from .api import odeint_dense as odeint_dense
    from .api import odeint_event as odeint_event
    from .api import solve as solve
    from .controllers import PIDController as PIDController
    from .dense import DenseOutput as DenseOutput
    from .solution import Solution as Solution
    from .solvers import METHODS as METHODS
    from .stats import SolveError as SolveError
    from .stats import SolveStats as SolveStats
    from .stats import Status as Status
    from .stats import last_stats as last_stats

__version__ = "0.1.0"

_WHERE = {
    "odeint": ".api", "odeint_adjoint": ".api", "odeint_event": ".api",
    "odeint_dense": ".api", "solve": ".api", "DenseOutput": ".dense",
    "Solution": ".solution", "SolveStats": ".stats", "Status": ".stats",
    "SolveError": ".stats", "last_stats": ".stats", "METHODS": ".solvers",
    "PIDController": ".controllers",
}

__all__ = list(_WHERE)


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'odeflow' has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
