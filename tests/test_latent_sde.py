"""`odeflow train latent-sde`: the stochastic Lorenz data, the latent SDE's ELBO pieces,
the run folder, exact resume and the flag guards."""

import math

import pytest
import torch

from odeflow import cli
from odeflow.data.lorenz import StochasticLorenz, make_lorenz
from odeflow.nn.latent_sde import LatentSDE, PosteriorSDE, gaussian_log_lik, normal_kl

from .step_runs import dry_run, resume_is_exact

# a small problem: 16 series of 10 grid times, one solver step per grid interval
SMALL = ["--n-train", "16", "--n-test", "8", "--batch-size", "8", "--n-points", "10",
         "--n-obs", "6", "--dt", "0.1", "--latent", "2", "--hidden", "8", "--context", "4",
         "--rnn-hidden", "8"]


def test_lorenz_series_are_normalised_masked_and_seeded():
    s = make_lorenz(64, n_points=20, t_total=1.0, n_obs=8, noise_std=0.1, sim_dt=0.01,
                    generator=torch.Generator().manual_seed(0))
    assert s.clean.shape == s.noisy.shape == (64, 20, 3) and s.mask.shape == (64, 20)
    assert torch.equal(s.mask.sum(1), torch.full((64,), 8.0)) and torch.all(s.mask[:, 0] == 1)
    torch.testing.assert_close(s.clean.mean(dim=(0, 1)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(s.clean.std(dim=(0, 1)), torch.ones(3), atol=1e-4, rtol=0)
    assert float((s.noisy - s.clean).std()) == pytest.approx(0.1, rel=0.05)
    again = make_lorenz(64, n_points=20, t_total=1.0, n_obs=8, noise_std=0.1, sim_dt=0.01,
                        generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.noisy, s.noisy) and torch.equal(again.mask, s.mask)
    other = make_lorenz(64, n_points=20, t_total=1.0, n_obs=8, noise_std=0.1, sim_dt=0.01,
                        generator=torch.Generator().manual_seed(1))
    assert not torch.equal(other.clean, s.clean)
    with pytest.raises(ValueError, match="n_obs"):
        make_lorenz(4, n_points=10, n_obs=11)


def test_lorenz_drift_and_noise():
    sde = StochasticLorenz()
    y = torch.tensor([[1.0, 2.0, 3.0]])
    torch.testing.assert_close(sde.f(0.0, y), torch.tensor([[10.0, 28 - 2 - 3, 2 - 8.0]]))
    torch.testing.assert_close(sde.g(0.0, y), torch.tensor([[0.1, 0.56, 0.9]]))


def _model_and_data(**kw):
    torch.manual_seed(0)
    model = LatentSDE(3, latent=3, context=4, hidden=8, rnn_hidden=8, **({"dt": 0.1} | kw))
    t = torch.linspace(0, 1, 11)
    x = torch.randn(5, 11, 3)
    mask = (torch.rand(5, 11) < 0.6).float()
    return model, t, x, mask


def test_elbo_pieces_are_finite_and_the_kl_is_not_negative():
    model, t, x, mask = _model_and_data()
    loss, parts = model.elbo(t, x, mask, 0.3, generator=torch.Generator().manual_seed(1))
    assert loss.shape == () and math.isfinite(float(loss.detach()))
    for name in ("log_lik", "kl0", "kl_path", "elbo"):
        assert parts[name].shape == (5,) and torch.isfinite(parts[name]).all(), name
    assert (parts["kl0"] >= 0).all() and (parts["kl_path"] >= 0).all()
    torch.testing.assert_close(parts["elbo"], parts["log_lik"] - parts["kl0"] - parts["kl_path"])
    # the loss with KL weight 0 is the negative likelihood alone, with the same draws
    loss0, parts0 = model.elbo(t, x, mask, 0.3, torch.Generator().manual_seed(1), kl_weight=0)
    log_lik = float(parts0["log_lik"].detach().mean())
    assert float(loss0.detach()) == pytest.approx(-log_lik, rel=1e-6)
    torch.testing.assert_close(parts0["elbo"], parts["elbo"])
    loss.backward()
    for net in (model.posterior_net, model.prior_net, model.diffusion, model.gru, model.decoder):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


def test_the_path_kl_is_zero_when_posterior_and_prior_drifts_agree():
    model, t, x, mask = _model_and_data()
    # the posterior drift made the prior's: g u = h - f = 0 along the whole path
    model.posterior_drift = lambda z, ctx: model.prior_drift(z)
    _, parts = model.elbo(t, x, mask, 0.3, generator=torch.Generator().manual_seed(1))
    assert float(parts["kl_path"].abs().max()) < 1e-6


def test_the_likelihood_counts_observed_points_only():
    x = torch.zeros(2, 4, 3)
    pred = torch.ones(2, 4, 3)
    mask = torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 0]])
    ll = gaussian_log_lik(pred, x, mask, std=1.0)
    assert float(ll[0]) == pytest.approx(3 * (-0.5 - 0.5 * math.log(2 * math.pi)))
    assert float(ll[1]) == 0.0
    kl = normal_kl(torch.tensor([1.0]), torch.tensor([0.5]), torch.zeros(1), torch.zeros(1))
    want = 0.5 * (math.exp(1.0) + 1.0 - 1.0) - 0.5
    assert float(kl) == pytest.approx(want)


def test_the_drift_reads_the_context_of_the_next_grid_time():
    model, t, x, mask = _model_and_data()
    ctx = torch.arange(11.0)[:, None, None].expand(11, 5, 4)
    sde = PosteriorSDE(model, t, ctx)
    assert float(sde._context(torch.tensor(0.0))[0, 0]) == 1.0
    assert float(sde._context(torch.tensor(0.3 - 1e-9))[0, 0]) == 4.0  # rounding of a step
    assert float(sde._context(torch.tensor(0.35))[0, 0]) == 4.0
    assert float(sde._context(torch.tensor(1.0))[0, 0]) == 10.0


def test_the_adjoint_gives_the_gradients_of_backpropagation():
    grads = {}
    for gradient in ("direct", "adjoint"):
        model, t, x, mask = _model_and_data(method="reversible_heun", gradient=gradient)
        model.double()
        loss, _ = model.elbo(t, x.double(), mask.double(), 0.3,
                             generator=torch.Generator().manual_seed(1))
        loss.backward()
        grads[gradient] = [p.grad.clone() for p in model.parameters()]
    for a, b in zip(grads["direct"], grads["adjoint"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-8)


def test_prior_samples_have_the_data_shape():
    model, t, _, _ = _model_and_data()
    paths = model.sample_prior(t, 7, generator=torch.Generator().manual_seed(0))
    assert paths.shape == (7, 11, 3) and torch.isfinite(paths).all()


@pytest.mark.parametrize("gradient", ["direct", "adjoint"])
def test_dry_run_writes_the_run_folder(tmp_path, gradient):
    extra = ["--gradient", gradient, "--method", "euler" if gradient == "direct" else
             "reversible_heun"]
    rows = dry_run("latent-sde", tmp_path / "run",
                   ["train_loss", "elbo", "kl", "kl_path", "test_elbo", "test_log_lik",
                    "test_kl", "test_rmse", "nfe_f", "nfe_b", "sde_steps", "nfe_test"],
                   ["posterior.png", "prior.png", "elbo.png"], extra)
    for row in rows:
        assert all(math.isfinite(v) for v in row.values())
        assert row["kl"] >= 0 and row["test_kl"] >= 0
        assert row["sde_steps"] == 19
        if gradient == "direct":  # Euler: one drift and one diffusion per step
            assert row["nfe_f"] == 2 * 19 and row["nfe_b"] == 0
        else:  # reversible Heun: (f, g) once to start, then per step; twice per step back
            assert row["nfe_f"] == 2 * 20 and row["nfe_b"] == 4 * 19


def test_resume_continues_exactly(tmp_path):
    resume_is_exact("latent-sde", tmp_path, SMALL)


def test_odeflow_plot_draws_a_run(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "latent-sde", *SMALL, "--niters", "2", "--eval-every", "1",
                     "--progress", "False", "--plots", "False", "--save", str(run)]) == 0
    assert cli.main(["plot", str(run)]) == 0
    assert {"loss.png", "nfe.png"} <= {p.name for p in run.iterdir()}


@pytest.mark.parametrize(
    "argv,named",
    [
        (["--method", "euler_heun"], "--method 'euler_heun': expected one of euler, milstein"),
        (["--n-obs", "60"], "--n-obs 60, --n-points 50: expected n-obs <= n-points"),
        (["--dt", "0.05"], "--dt 0.05: expected at most the grid spacing 0.0204082"),
        (["--gradient", "checkpoint"], "--gradient checkpoint: expected direct or adjoint"),
        (["--obs-std", "0"], "--obs-std 0.0: expected a number > 0"),
        (["--device", "tpu"], "--device 'tpu': expected auto, cpu, cuda or cuda:N"),
        (["--latent", "0"], "--latent 0: expected a number >= 1"),
        (["--niters", "x"], "argument --niters: invalid int value: 'x'"),
    ],
)
def test_a_bad_flag_is_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, named):
    monkeypatch.chdir(tmp_path)
    try:
        status = cli.main(["train", "latent-sde", *argv, "--dry-run"])
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert named in err
    assert list(tmp_path.iterdir()) == []


def test_resume_refuses_another_model(tmp_path, capsys):
    run = tmp_path / "run"
    assert cli.main(["train", "latent-sde", *SMALL, "--niters", "2", "--stop-after", "1",
                     "--progress", "False", "--plots", "False", "--save", str(run)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "latent-sde", "--resume", str(run), "--latent", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--latent" in err, err


def test_the_stochastic_adjoint_approaches_backpropagation():
    # Euler is not reversible: the stochastic adjoint's gradient differs from backprop's by
    # a discretisation error that vanishes with dt. Measured, relative to the largest
    # entry: 3.5e-3 at dt = 0.1, 7.8e-4 at dt = 0.01, 1.4e-4 at dt = 0.001 (float64).
    gaps = []
    for dt in (0.1, 0.01):
        grads = {}
        for gradient in ("direct", "adjoint"):
            model, t, x, mask = _model_and_data(method="euler", gradient=gradient, dt=dt)
            model.double()
            loss, _ = model.elbo(t, x.double(), mask.double(), 0.3,
                                 generator=torch.Generator().manual_seed(1))
            loss.backward()
            grads[gradient] = torch.cat([p.grad.flatten() for p in model.parameters()])
        diff = (grads["direct"] - grads["adjoint"]).abs().max()
        gaps.append(float(diff / grads["direct"].abs().max()))
    assert gaps[1] < 2e-3 and gaps[1] < gaps[0] / 2.5, gaps
