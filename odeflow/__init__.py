"""odeflow: neural ordinary differential equations on PyTorch.

Solve ``dy/dt = f(t, y)`` with adaptive or fixed-grid solvers on tensors or tuples of
tensors, and differentiate the solution by backprop, the adjoint method, or exact
checkpointing. torchdiffeq scripts port by changing one import::

    from odeflow import odeint, odeint_adjoint
"""

from .controllers import PIDController as PIDController
from .dense import DenseOutput as DenseOutput
from .odeint import odeint as odeint
from .odeint import odeint_adjoint as odeint_adjoint
from .odeint import odeint_dense as odeint_dense
from .odeint import odeint_event as odeint_event
from .odeint import solve as solve
from .solution import Solution as Solution
from .solvers import METHODS as METHODS
from .stats import SolveError as SolveError
from .stats import SolveStats as SolveStats
from .stats import Status as Status
from .stats import last_stats as last_stats

__version__ = "0.1.0"

__all__ = [
    "odeint", "odeint_adjoint", "odeint_event", "odeint_dense", "DenseOutput", "solve",
    "Solution", "SolveStats", "Status", "SolveError", "last_stats", "METHODS", "PIDController",
]
