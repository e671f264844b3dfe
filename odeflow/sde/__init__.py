"""Neural SDEs: a torchsde-compatible (0.2.6) API; ``import odeflow.sde as torchsde``.

Public names: :func:`sdeint` (``gradient="checkpoint"``: exact gradients by replay,
:mod:`odeflow.sde.checkpoint`), :func:`sdeint_adjoint` (the stochastic adjoint,
:mod:`odeflow.sde.adjoint_sde`; reversible Heun's algebraically reversible adjoint,
:mod:`odeflow.sde.adjoint`),
:class:`BaseSDE`, :class:`SDEIto`, :class:`SDEStratonovich`, the Brownian motions
(:class:`BrownianInterval`, :class:`BrownianPath`, :class:`BrownianTree`,
:class:`ReverseBrownian`, :func:`brownian_interval_like`, :class:`BaseBrownian`),
:mod:`settings`, and :func:`last_stats` for the statistics of the last solve.

Example::

    import odeflow.sde as torchsde
    ys = torchsde.sdeint(sde, y0, torch.linspace(0, 1, 10), method="euler", dt=1e-2)
"""

from . import settings, types
from .base import BaseSDE, SDEIto, SDEStratonovich
from .brownian import (
                       BaseBrownian,
                       BrownianInterval,
                       BrownianPath,
                       BrownianTree,
                       ReverseBrownian,
                       brownian_interval_like,
)
from .sdeint import last_stats, sdeint, sdeint_adjoint

__all__ = ["sdeint", "sdeint_adjoint", "last_stats", "BaseSDE", "SDEIto", "SDEStratonovich",
           "BaseBrownian", "BrownianInterval", "BrownianPath", "BrownianTree", "ReverseBrownian",
           "brownian_interval_like", "settings", "types"]

__version__ = "0.2.6"
