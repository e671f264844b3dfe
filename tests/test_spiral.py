"""`odeflow train spiral`: the true system, the model, the run folder and exact resume."""

import torch

from odeflow.experiments import EXPERIMENTS
from odeflow.experiments.spiral import SPIRAL_A, CubicODEFunc, SpiralConfig, true_trajectory

from .step_runs import dry_run, resume_is_exact


def test_true_trajectory_solves_the_cubic_system():
    t, y = true_trajectory(200, 25.0)
    assert t.shape == (200,) and y.shape == (200, 1, 2)
    assert torch.equal(y[0, 0], torch.tensor([2.0, 0.0]))
    # finite differences of the trajectory follow (y^3) A
    a = torch.tensor(SPIRAL_A, dtype=torch.float64)
    tt, yy = true_trajectory(20_001, 2.0)
    dt = float(tt[1] - tt[0])
    mid = yy[1:-1, 0].double()
    fd = (yy[2:, 0].double() - yy[:-2, 0].double()) / (2 * dt)
    assert float((fd - (mid**3) @ a).abs().max()) < 2e-3
    # it spirals inward
    assert float(y[-1].norm()) < float(y[0].norm()) / 2


def test_model_acts_on_the_cube():
    f = CubicODEFunc(8)
    y = torch.randn(5, 2)
    torch.testing.assert_close(f(torch.tensor(0.0), y), f.net(y**3))


def test_registry_and_defaults():
    cfg = EXPERIMENTS["spiral"]
    assert isinstance(cfg, SpiralConfig)
    assert (cfg.data_size, cfg.t_end) == (1000, 25.0)


def test_dry_run_writes_the_run_folder(tmp_path):
    rows = dry_run("spiral", tmp_path / "run", ["train_loss", "test_loss", "nfe_f", "nfe_b"],
                   ["trajectories.png", "phase.png", "vector_field.png", "loss.png"])
    assert rows[0]["test_loss"] > 0 and rows[0]["nfe_f"] > 0


def test_resume_continues_exactly(tmp_path):
    resume_is_exact("spiral", tmp_path, ["--data-size", "100", "--t-end", "2.5",
                                         "--batch-size", "8", "--hidden", "8"])
