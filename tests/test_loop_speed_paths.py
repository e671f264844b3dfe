"""The loop's fast paths give what the general forms give: the joint initial step in Python
floats against its tensor form, bit for bit."""

from __future__ import annotations

import math
import random

import pytest
import torch

from odeflow.controllers import initial_step, starting_step
from odeflow.norms import rms_norm


def max_norm(x):  # a user's options["norm"]: the largest absolute entry
    return torch.linalg.vector_norm(x, ord=math.inf)


def _tensor_form(func, t0, y0, f0, order, rtol, atol, norm):
    def probe(h0):
        h = float(h0)
        return func(t0 + h, torch.add(y0, f0, alpha=h))

    h = float(starting_step(probe, y0, f0, order, rtol, atol, norm))
    return h if math.isfinite(h) else 1e-6  # as the lanes' initial_step: f non-finite at a probe


@pytest.mark.parametrize("orders", [(2, 3, 4, 7), (1,)])  # (1: torch's own ** 0.5)
def test_joint_initial_step_is_the_tensor_forms_bit_for_bit(orders):
    rnd, g = random.Random(0), torch.Generator().manual_seed(0)
    for _ in range(400):
        dtype = rnd.choice([torch.float32, torch.float64])
        m = rnd.choice([1, 3, 10])
        y0 = (torch.randn(m, generator=g, dtype=torch.float64) * 10 ** rnd.uniform(-8, 8)
              ).to(dtype)
        a = (torch.randn(m, m, generator=g, dtype=torch.float64) * 10 ** rnd.uniform(-6, 6)
             ).to(dtype)
        scale = rnd.choice([1.0, 0.0, math.inf])  # also f0 = 0 and a non-finite f

        def func(t, y, a=a, scale=scale):
            return (y @ a + math.sin(t)) * scale

        f0 = func(0.0, y0)
        args = (0.3, y0, f0, rnd.choice(orders), 10 ** rnd.uniform(-10, -2),
                10 ** rnd.uniform(-12, -2), rnd.choice([rms_norm, max_norm]))
        want, got = _tensor_form(func, *args), initial_step(func, *args)
        assert got == want or (math.isnan(got) and math.isnan(want)), (got, want)

