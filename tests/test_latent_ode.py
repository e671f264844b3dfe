"""`odeflow train latent-ode`: the spirals, the masked encoder, the ELBO, the run folder
and exact resume."""

import math

import pytest
import torch

from odeflow.data.spirals import A, B, make_spirals
from odeflow.experiments.latent_ode import rmse
from odeflow.nn.latent import LatentODE, RecognitionRNN

from .step_runs import dry_run, resume_is_exact


def test_spirals_are_archimedean_masked_and_seeded():
    g = torch.Generator().manual_seed(0)
    s = make_spirals(64, n_total=100, t_total=10.0, n_window=50, n_obs=30, noise_std=0.1,
                     generator=g)
    assert s.clean.shape == s.noisy.shape == (64, 100, 2) and s.mask.shape == (64, 50)
    assert torch.equal(s.mask.sum(1), torch.full((64,), 30.0))
    assert torch.all(s.mask[:, 0] == 1)
    # radius grows by B per radian, one radian per time unit
    r = s.clean.norm(dim=-1)
    dr = (r[:, 1:] - r[:, :-1]) / (s.t[1] - s.t[0])
    torch.testing.assert_close(dr, torch.full_like(dr, B), rtol=0, atol=1e-4)
    assert float(r.min()) >= A - 1e-6
    # both turning directions, and the noise has the requested size
    assert 0 < int(s.clockwise.sum()) < 64
    assert float((s.noisy - s.clean).std()) == pytest.approx(0.1, rel=0.05)
    again = make_spirals(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.noisy, s.noisy) and torch.equal(again.mask, s.mask)
    with pytest.raises(ValueError):
        make_spirals(4, n_obs=60, n_window=50)


def test_encoder_ignores_unobserved_values():
    torch.manual_seed(0)
    enc = RecognitionRNN(2, 8, 3)
    t = torch.linspace(0, 1, 6)
    x = torch.randn(2, 6, 2)
    mask = torch.tensor([[1, 0, 1, 0, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.float32)
    mean, logvar = enc(t, x, mask)
    x2 = x.clone()
    x2[0, [1, 3, 4]] = 100.0  # unobserved values of series 0 change
    mean2, logvar2 = enc(t, x2, mask)
    torch.testing.assert_close(mean2[0], mean[0])
    torch.testing.assert_close(logvar2, logvar)


def test_elbo_terms():
    torch.manual_seed(0)
    model = LatentODE(2, 3, 8, 8, 8)
    t = torch.linspace(0, 1, 5)
    x = torch.randn(4, 5, 2)
    mask = torch.ones(4, 5)
    loss, parts = model.elbo(t, x, mask, obs_std=0.5, generator=torch.Generator().manual_seed(1))
    assert loss.shape == () and parts["kl"] >= 0
    # with no observations the loss is the KL alone
    loss0, parts0 = model.elbo(t, x, torch.zeros(4, 5), 0.5, torch.Generator().manual_seed(1))
    assert float(loss0.detach()) == pytest.approx(parts0["kl"], rel=1e-6)
    loss.backward()
    assert all(p.grad is not None for p in model.func.parameters())


def test_rmse():
    pred, clean = torch.zeros(2, 3, 2), torch.ones(2, 3, 2)
    assert rmse(pred, clean) == pytest.approx(1.0)
    mask = torch.tensor([[1.0, 0, 0], [0, 0, 0]])
    clean[0, 0] = 2.0
    assert rmse(pred, clean, mask) == pytest.approx(2.0)
    assert math.isfinite(rmse(pred, clean, torch.ones(2, 3)))


@pytest.mark.parametrize("gradient", ["direct", "adjoint"])
def test_dry_run_writes_the_run_folder(tmp_path, gradient):
    rows = dry_run("latent-ode", tmp_path / "run",
                   ["test_rmse", "test_rmse_extrap", "nfe_f", "nfe_b", "kl"],
                   ["reconstructions.png", "rmse.png"], ["--gradient", gradient])
    assert (rows[0]["nfe_b"] > 0) == (gradient == "adjoint")


def test_resume_continues_exactly(tmp_path):
    resume_is_exact("latent-ode", tmp_path, ["--n-train", "16", "--n-test", "8",
                                             "--batch-size", "8", "--latent", "2"])
