"""Continuous normalizing flows: the trace, Hutchinson's estimator, the log-density of a
linear flow, RNODE's regularisers, the toy densities and `odeflow train cnf`."""

import math

import pytest
import torch
from torch import nn

from odeflow.data.toy import TOY_DENSITIES, circles_log_prob, sample_toy
from odeflow.nn.cnf import CNF, CNFDynamics, CNFField, standard_normal_logp

from .step_runs import dry_run, resume_is_exact


class Linear(nn.Module):
    """``f(t, z) = z Mᵀ``: a flow with closed-form solution ``z(t) = exp(tM) z(0)``."""

    def __init__(self, m: torch.Tensor) -> None:
        super().__init__()
        self.m = nn.Parameter(m)

    def forward(self, t, z):
        return z @ self.m.T


def _field(seed=0, dim=2):
    torch.manual_seed(seed)
    return CNFField(dim, hidden=16, layers=2).double()


def test_exact_trace_is_the_jacobian_trace():
    field = _field()
    dyn = CNFDynamics(field, "exact")
    z = torch.randn(6, 2, dtype=torch.float64)
    t = torch.tensor(0.3, dtype=torch.float64)
    zeros = torch.zeros(6, dtype=torch.float64)
    f, trace, kinetic, frob = dyn(t, (z, zeros, zeros, zeros))
    for i in range(6):
        jac = torch.autograd.functional.jacobian(lambda v: field(t, v[None])[0], z[i])
        assert float(trace[i].detach()) == pytest.approx(float(jac.trace()), abs=1e-12)
        assert float(frob[i].detach()) == pytest.approx(float(jac.pow(2).sum()), abs=1e-12)
    torch.testing.assert_close(kinetic, field(t, z).pow(2).sum(-1))


@pytest.mark.parametrize("noise", ["gaussian", "rademacher"])
def test_hutchinson_is_unbiased(noise):
    # Many draws of eps^T J eps, each on a copy of the same point: their mean is tr J
    # within 4 standard errors (and so is the Frobenius estimate ||eps^T J||^2).
    field = _field(1)
    cnf = CNF(field, trace="hutchinson", noise=noise)
    n = 20_000
    z = torch.randn(1, 2, dtype=torch.float64).expand(n, 2)
    t = torch.tensor(0.5, dtype=torch.float64)
    eps = cnf.draw_noise(z.shape, torch.Generator().manual_seed(0)).double()
    if noise == "rademacher":
        assert set(eps.unique().tolist()) == {-1.0, 1.0}
    cnf.dynamics.noise = eps
    zeros = torch.zeros(n, dtype=torch.float64)
    _, est, _, frob_est = cnf.dynamics(t, (z, zeros, zeros, zeros))
    jac = torch.autograd.functional.jacobian(lambda v: field(t, v[None])[0], z[0])
    for values, exact in ((est, jac.trace()), (frob_est, jac.pow(2).sum())):
        values = values.detach()
        stderr = float(values.std()) / math.sqrt(n)
        assert abs(float(values.mean() - exact)) < 4 * stderr + 1e-12


def test_linear_flow_log_density_is_the_closed_form():
    m = torch.tensor([[0.3, -0.7], [0.4, -0.2]], dtype=torch.float64)
    cnf = CNF(Linear(m.clone()), trace="exact", T=1.5, rtol=1e-10, atol=1e-10)
    x = torch.randn(5, 2, dtype=torch.float64)
    logp, reg = cnf.log_prob(x)
    z_end = x @ torch.linalg.matrix_exp(1.5 * m).T
    expected = standard_normal_logp(z_end) + 1.5 * torch.trace(m)
    torch.testing.assert_close(logp, expected, rtol=0, atol=1e-8)
    # the Frobenius regulariser of a linear field is T ||M||_F^2
    assert float(reg["jacobian"]) == pytest.approx(1.5 * float(m.pow(2).sum()), rel=1e-8)
    # a Hutchinson solve with Rademacher noise is exact in expectation; here per point it
    # differs, but the sampled path and the flow (z) are the same
    hutch = CNF(Linear(m.clone()), trace="hutchinson", noise="rademacher", T=1.5,
                rtol=1e-10, atol=1e-10)
    logp_h, _ = hutch.log_prob(x, torch.Generator().manual_seed(0))
    assert logp_h.shape == logp.shape and torch.isfinite(logp_h).all()


def test_sampling_inverts_the_flow():
    field = _field(2)
    cnf = CNF(field, rtol=1e-9, atol=1e-9)
    z = torch.randn(4, 2, dtype=torch.float64)
    x = cnf.sample(z)[-1]
    back = cnf.sample(x, torch.tensor([0.0, 1.0], dtype=torch.float64))[-1]
    torch.testing.assert_close(back, z, rtol=0, atol=1e-6)


def test_gradients_flow_in_every_mode():
    x = torch.randn(8, 2)
    grads = {}
    for gradient in ("direct", "adjoint", "checkpoint"):
        torch.manual_seed(0)
        cnf = CNF(CNFField(2, 8, 1), gradient=gradient, rtol=1e-6, atol=1e-6)
        logp, reg = cnf.log_prob(x)
        (-logp.mean() + 0.1 * reg["kinetic"]).backward()
        grads[gradient] = torch.cat([p.grad.reshape(-1) for p in cnf.parameters()])
    torch.testing.assert_close(grads["checkpoint"], grads["direct"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads["adjoint"], grads["direct"], rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("name", sorted(TOY_DENSITIES))
def test_toy_densities_are_seeded_and_two_dimensional(name):
    a = sample_toy(name, 300, torch.Generator().manual_seed(3))
    b = sample_toy(name, 300, torch.Generator().manual_seed(3))
    assert a.shape == (300, 2) and a.dtype == torch.float32
    assert torch.equal(a, b)
    assert a.abs().max() < 8
    with pytest.raises(ValueError, match="unknown toy density"):
        sample_toy("spirals", 3)


def test_circles_density_integrates_to_one_and_matches_its_samples():
    n = 400
    grid = torch.linspace(-6, 6, n, dtype=torch.float64)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    p = circles_log_prob(torch.stack([xx, yy], -1)).exp()
    cell = float(grid[1] - grid[0]) ** 2
    assert float(p.sum()) * cell == pytest.approx(1.0, abs=1e-3)
    # half the samples lie on each ring
    x = sample_toy("circles", 20_000, torch.Generator().manual_seed(0))
    assert float((x.norm(dim=1) > 2.25).float().mean()) == pytest.approx(0.5, abs=0.02)


TINY = ["--hidden", "8", "--layers", "1", "--batch-size", "32", "--test-size", "64",
        "--rtol", "1e-4", "--atol", "1e-4"]  # fmt: skip


def test_dry_run_writes_the_run_folder(tmp_path, capsys):
    dry_run("cnf", tmp_path / "run",
            ["test_nll", "train_nll", "nfe_f", "nfe_b", "nfe_test", "kinetic", "jacobian"],
            ["density.png", "samples.png", "flow.png", "nll.png", "nfe.png"],
            ["--trace", "hutchinson", "--kinetic", "0.1", "--jacobian-norm", "0.1"])
    assert "test_nll" in capsys.readouterr().out


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_resume_continues_exactly(tmp_path, trace):
    resume_is_exact("cnf", tmp_path, [*TINY, "--trace", trace])
