"""Type aliases used in signatures (the names of ``torchsde.types``, for code that imports them)."""
# ruff: noqa: UP007  (spelled with typing.Union, like the torchsde aliases they stand for)

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch

__all__ = ["Any", "Callable", "Dict", "Optional", "Sequence", "Tuple", "Union", "Tensor",
           "Tensors", "TensorOrTensors", "Scalar", "Vector", "Module", "Modules",
           "ModuleOrModules", "Size", "Sizes"]

Dict, Tuple = dict, tuple
Tensor = torch.Tensor
Tensors = Sequence[Tensor]
TensorOrTensors = Union[Tensor, Tensors]
Scalar = Union[float, Tensor]
Vector = Union[Sequence[float], Tensor]
Module = torch.nn.Module
Modules = Sequence[Module]
ModuleOrModules = Union[Module, Modules]
Size = torch.Size
Sizes = Sequence[Size]
_ = (Any, Callable, Optional)
