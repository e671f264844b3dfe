"""The per-sample adjoint's configuration errors that no other test reached (found by
coverage of sensitivity/adjoint.py's check_lanes_config): both are raised at ``solve``,
before any step, naming the argument to change."""

import pytest
import torch

import odeflow

Y = torch.ones(3, 2, dtype=torch.float64)
T = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)


def _solve(**kwargs):
    return odeflow.solve(lambda t, y: -y, Y, T, gradient="adjoint", adjoint_params=(),
                         options={"per_sample": True}, **kwargs)


def test_rosenbrock_backward_after_implicit_forward_is_refused():
    # The interpolating per-sample adjoint needs no df/dt: Rosenbrock methods would.
    with pytest.raises(ValueError, match=r"needs an ESDIRK or explicit Runge-Kutta "
                                         r"adjoint_method \(no df/dt terms\), got 'rodas4'"):
        _solve(method="kvaerno5", adjoint_method="rodas4")


def test_per_sample_adjoint_norm_other_than_seminorm_is_refused():
    with pytest.raises(ValueError, match=r"adjoint_options\['norm'\] may only be 'seminorm'"):
        _solve(adjoint_options={"norm": lambda s: s[0].abs().max()})
