"""odeflow: neural ordinary differential equations on PyTorch.

Solve ``dy/dt = f(t, y)`` with adaptive or fixed-grid solvers on tensors or tuples of
tensors, and differentiate the solution by backprop, the adjoint method, or exact
checkpointing. torchdiffeq scripts port by changing one import::

    from odeflow import odeint, odeint_adjoint
"""

from .controllers import PIDController as PIDController
from .odeint import Solution as Solution
from .odeint import odeint as odeint
from .odeint import odeint_adjoint as odeint_adjoint
from .odeint import odeint_dense as odeint_dense
from .dense import DenseOutput as DenseOutput
from .odeint import solve as solve
from .solvers import METHODS as METHODS
from .stats import SolveError as SolveError
from .stats import SolveStats as SolveStats
from .stats import Status as Status
from .stats import last_stats as last_stats

__version__ = "0.1.0"

__all__ = [
    "odeint", "odeint_adjoint", "odeint_event", "odeint_dense", "DenseOutput", "solve", "Solution", "SolveStats", "Status",
    "SolveError", "last_stats", "METHODS", "PIDController",
]


def __getattr__(name: str):
    # odeint_event lives in events.py, which is imported on first use.
    if name == "odeint_event":
        from .events import odeint_event

        return odeint_event
    raise AttributeError(f"module 'odeflow' has no attribute {name!r}")
