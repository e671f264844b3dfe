"""Every registered method takes one step size per sample (``MethodSpec.check_per_sample``
no longer refuses a method for lacking it: a new family without it needs that branch back)."""

from __future__ import annotations

from odeflow.solvers import METHODS, get_method


def test_every_registered_method_takes_per_sample_steps():
    assert all(get_method(m).per_sample for m in METHODS)
