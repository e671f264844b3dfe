"""`odeflow train robertson`: the data, the kinetics model, the scaled loss, the solver
side-by-side, a short run that learns, exact resume and one-line failures."""

import json
import math

import numpy as np
import pytest
import torch

from odeflow import cli
from odeflow.experiments import EXPERIMENTS
from odeflow.experiments.robertson import (
    MassActionKinetics,
    RobertsonConfig,
    compare_solvers,
    initial_log10_rates,
    run,
    scaled_mse,
)
from odeflow.experiments.robertson_data import (
    RATES,
    log_times,
    robertson_rhs,
    robertson_solution,
)
from odeflow.training import read_metrics

from .step_runs import dry_run, resume_is_exact

# A short window (to t = 0.1, past the transient of y2) keeps every solve here well
# under a second.
SHORT = ["--t-end", "0.1", "--n-times", "8", "--n-test", "16"]


def test_data_match_the_reference_solution():
    # the classic reference values of y(40) (stiff test sets quote them to 10 digits)
    y = robertson_solution(torch.tensor([40.0], dtype=torch.float64))[0]
    ref = torch.tensor([0.7158270687, 9.185534764e-6, 0.2841637457], dtype=torch.float64)
    torch.testing.assert_close(y, ref, rtol=1e-6, atol=0.0)
    ys = robertson_solution(log_times(1e-5, 1e5, 50))
    # mass is conserved, and y2 peaks at about 3.65e-5
    assert float((ys.sum(dim=1) - 1).abs().max()) < 1e-9
    assert 3.6e-5 < float(ys[:, 1].max()) < 3.7e-5
    assert float(ys[-1, 0]) < 0.02  # by t = 1e5 most of A is gone


def test_model_is_the_mass_action_field():
    f = MassActionKinetics([math.log10(k) for k in RATES])
    torch.testing.assert_close(f.rates(), torch.tensor(RATES, dtype=torch.float64))
    y = torch.rand(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y[:, 1] *= 1e-4
    want = torch.stack([torch.from_numpy(robertson_rhs(0.0, row.numpy())) for row in y])
    torch.testing.assert_close(f(torch.tensor(0.0), y), want)


def test_initial_guess_is_off_by_the_spread_and_fixed_by_the_seed():
    for seed in range(8):
        guess = initial_log10_rates(seed, 0.5)
        assert guess == initial_log10_rates(seed + 8, 0.5)
        for g, k in zip(guess, RATES, strict=True):
            assert abs(abs(g - math.log10(k)) - 0.5) < 1e-12
    # seeds 0-7: the eight corners; seed 0 starts with every rate too low
    assert len({tuple(initial_log10_rates(s, 0.5)) for s in range(8)}) == 8
    assert all(g < math.log10(k) for g, k in zip(initial_log10_rates(0, 0.5), RATES))


def test_the_scaled_loss_sees_y2():
    target = torch.tensor([[0.9, 3e-5, 0.1]], dtype=torch.float64)
    pred = target.clone()
    pred[0, 1] = 0.0  # y2 entirely wrong, y1 and y3 right
    scale = torch.tensor([1.0, 3e-5, 0.1], dtype=torch.float64)
    assert float(scaled_mse(pred, target, scale)) == pytest.approx(1 / 3)
    assert float(scaled_mse(pred, target, torch.ones(3, dtype=torch.float64))) < 1e-9


def test_registry_and_defaults():
    cfg = EXPERIMENTS["robertson"]
    assert isinstance(cfg, RobertsonConfig)
    assert (cfg.t_start, cfg.t_end, cfg.compare, cfg.scale) == (1e-5, 1e5, "dopri5", True)
    assert cfg.method in ("rodas5p", "kvaerno5")


def test_dopri5_side_by_side_reports_its_failure():
    f = MassActionKinetics([math.log10(k) for k in RATES])
    t = torch.cat([torch.zeros(1, dtype=torch.float64), log_times(1e-5, 1e3, 9)])
    dop, = compare_solvers(f, t, ["dopri5"], rtol=1e-6, atol=1e-12, max_steps=300)
    assert dop["status"] == "MAX_STEPS_REACHED"
    assert dop["steps"] == 300 and dop["nfe"] > 300
    assert 0 < dop["t_reached"] < 1.0  # stability-bound steps: nowhere near t = 1e3
    assert len(dop["step_sizes"]) == dop["accepted"] > 0


def test_the_stiff_method_crosses_the_whole_span():
    method = RobertsonConfig().method
    f = MassActionKinetics([math.log10(k) for k in RATES])
    times = log_times(1e-5, 1e5, 11)
    t = torch.cat([torch.zeros(1, dtype=torch.float64), times])
    ref = robertson_solution(times)
    scale = ref.abs().amax(dim=0)
    stiff, = compare_solvers(f, t, [method], rtol=1e-6, atol=1e-12, max_steps=5000,
                             reference=ref, scale=scale)
    assert stiff["status"] == "SUCCESS" and stiff["t_reached"] == 1e5
    assert stiff["steps"] < 2000 and stiff["jacobians"] > 0
    assert stiff["max_scaled_error"] < 1e-3


def test_dry_run_writes_the_run_folder(tmp_path):
    rows = dry_run("robertson", tmp_path / "run",
                   ["train_loss", "test_loss", "err_k1", "err_k2", "err_k3", "nfe_f",
                    "steps_f", "jac_f", "lu_f"],
                   ["trajectories.png", "loss.png", "rates.png", "step_sizes.png",
                    "solvers.json"])
    assert rows[0]["nfe_f"] > 0 and rows[0]["steps_f"] > 0
    solvers = json.loads((tmp_path / "run" / "solvers.json").read_text())
    assert [s["method"] for s in solvers] == [RobertsonConfig().method, "dopri5"]
    assert solvers[0]["status"] == "SUCCESS"
    # the dry run caps dopri5 at 50 steps, far fewer than it needs to reach t = 1
    assert solvers[1]["status"] == "MAX_STEPS_REACHED" and solvers[1]["steps"] == 50


def test_a_short_run_learns_the_rates(tmp_path):
    # one evaluation per step: the first row's train_loss is the initial guess's loss
    cfg = RobertsonConfig(t_end=10.0, n_times=12, n_test=16, niters=12, eval_every=1,
                          lr=0.1, compare="none", plots=False, progress=False,
                          save=str(tmp_path / "run"))
    summary = run(cfg, log=lambda s: None)
    rows = summary["history"]
    first, last = rows[0], rows[-1]
    assert last["train_loss"] < first["train_loss"] / 5
    assert last["test_loss"] < first["test_loss"] / 2
    # every rate moved toward the truth from its initial factor of 10**0.5 = 3.2
    guess = initial_log10_rates(cfg.seed, cfg.init_spread)
    learned = summary["func"].log10_k.detach().tolist()
    before = [abs(g - math.log10(k)) for g, k in zip(guess, RATES, strict=True)]
    after = [abs(g - math.log10(k)) for g, k in zip(learned, RATES, strict=True)]
    assert all(a < b for a, b in zip(after, before, strict=True))
    assert sum(after) < sum(before) / 2


def test_resume_continues_exactly(tmp_path, capsys):
    resume_is_exact("robertson", tmp_path, [*SHORT, "--compare", "none"])
    # the data define the task: another window is refused on --resume
    capsys.readouterr()
    assert cli.main(["train", "robertson", "--resume", str(tmp_path / "resumed"),
                     "--t-end", "1"]) == 2
    assert "--t-end" in capsys.readouterr().err


def test_unscaled_loss_is_an_option(tmp_path):
    assert cli.main(["train", "robertson", "--dry-run", "--scale", "False", "--compare", "none",
                     "--progress", "False", "--plots", "False",
                     "--save", str(tmp_path / "run")]) == 0
    rows = read_metrics(tmp_path / "run")
    assert np.isfinite([r["test_loss"] for r in rows]).all()


def test_an_explicit_method_fails_in_one_line(tmp_path, capsys):
    save = tmp_path / "run"
    status = cli.main(["train", "robertson", "--method", "dopri5", "--t-end", "1e3",
                       "--max-steps", "200", "--progress", "False", "--save", str(save)])
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--method dopri5" in err and "MAX_STEPS_REACHED" in err and "stiff" in err
    # nothing was trained, so nothing is left to block a rerun in the same folder
    assert not save.exists()


def test_an_unknown_method_is_one_line(tmp_path, capsys):
    status = cli.main(["train", "robertson", "--method", "rodas9", "--save",
                       str(tmp_path / "run")])
    assert status == 2
    assert "--method 'rodas9': expected a solver name" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
