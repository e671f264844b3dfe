"""Per-sample support is declared by the stepper class (``per_sample``): every registered
method declares it, and a family that does not is refused by name (``check_per_sample``)."""

from __future__ import annotations

import dataclasses

import pytest

from odeflow.solvers import METHODS, get_method


def test_every_registered_method_takes_per_sample_steps():
    assert all(get_method(m).per_sample for m in METHODS)


def test_a_family_without_per_sample_steps_is_refused_by_name():
    spec = dataclasses.replace(get_method("rk4"), stepper=type("NoLanes", (), {}))
    with pytest.raises(ValueError, match="does not support method='rk4'.*dopri5"):
        spec.check_per_sample({}, "direct")
