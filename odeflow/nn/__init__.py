"""Neural-network modules built on odeflow's solvers (above the library line).

Mirrors the paper: :class:`ConcatConv2d`, :class:`ODEFunc`, :class:`ODEBlock`,
:class:`ResBlock` and the classifiers of seed A (ODE-Net, ResNet, RK-Net, MLP).
"""

from .classifiers import (
    NETWORKS,
    Classifier,
    build_classifier,
    count_parameters,
    mlp,
    odenet,
    odeonly,
    resnet,
    rknet,
)
from .layers import ConcatConv2d, ResBlock, conv1x1, conv3x3, group_norm
from .odeblock import ODEBlock, ODEFunc, nfe_counts, ode_blocks

__all__ = [
    "NETWORKS",
    "Classifier",
    "ConcatConv2d",
    "ODEBlock",
    "ODEFunc",
    "ResBlock",
    "build_classifier",
    "conv1x1",
    "conv3x3",
    "count_parameters",
    "group_norm",
    "mlp",
    "nfe_counts",
    "ode_blocks",
    "odenet",
    "odeonly",
    "resnet",
    "rknet",
]
