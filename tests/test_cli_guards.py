"""The training command never traps its user: bad flags are one line before anything is
written, dry runs and half-made runs never block a real run, a run folder has one writer,
and the light commands (--help, --version, plot, bench --help) answer cleanly."""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch

from odeflow import cli
from odeflow.training import CheckpointError, bars_wanted, load_model_state
from odeflow.training.runfolder import ResumePoint

QUIET = ["--progress", "False", "--plots", "False"]
# a spiral run of two steps on a short trajectory: well under a second
SPIRAL = ["--niters", "2", "--eval-every", "1", "--data-size", "60", "--t-end", "2.0", *QUIET]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in an empty folder, so that a default `runs/...` would land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    "argv,named",
    [
        (["latent-ode", "--method", "dopri", "--dry-run"], "--method 'dopri': expected a solver"),
        (["spiral", "--method", "dopri", "--dry-run"], "--method 'dopri'"),
        (["cnf", "--method", "dopri", "--dry-run"], "--method 'dopri'"),
        (["digits", "--method", "dopri", "--dry-run"], "--method 'dopri'"),
        (["spiral", "--niters", "-5"], "--niters -5: expected a number >= 1"),
        (["cnf", "--eval-every", "0"], "--eval-every 0: expected a number >= 1"),
        (["latent-ode", "--n-obs", "60"], "--n-obs 60, --n-window 50"),
        (["latent-ode", "--rtol", "0"], "--rtol 0.0: expected a number > 0"),
        (["robertson", "--t-start", "10", "--t-end", "1"], "expected 0 < t-start < t-end"),
        (["robertson", "--compare", "dopri"], "--compare 'dopri': expected 'none' or"),
        (["cifar10", "--plateau-factor", "2"], "--plateau-factor 2.0: expected a number in"),
        (["mnist", "--milestones", "3", "-1"], "--milestones -1: expected a number >= 0"),
        (["spiral", "--niters", "x"], "argument --niters: invalid int value: 'x'"),
        (["spiral", "--save", "a", "--resume", "b"], "--save a and --resume b"),
    ],
)
def test_a_bad_flag_is_one_line_and_writes_nothing(in_tmp, capsys, argv, named):
    try:
        status = cli.main(["train", *argv])
    except SystemExit as exc:  # argparse's own errors
        status = exc.code
    assert status == 2
    assert named in _one_error_line(capsys)
    assert list(in_tmp.iterdir()) == []


def test_the_demo_checks_its_flags_too(in_tmp, capsys):
    assert cli.main(["demo", "--method", "dopri", "--dry-run"]) == 2
    assert "--method 'dopri'" in _one_error_line(capsys)
    assert list(in_tmp.iterdir()) == []


def test_cuda_where_there_is_none_is_one_line(in_tmp, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cli.main(["train", "digits", "--device", "cuda", "--dry-run"]) == 2
    assert "--device cuda: CUDA is not available" in _one_error_line(capsys)
    assert cli.main(["train", "cifar10", "--device", "tpu:0"]) == 2
    assert "expected auto, cpu, cuda or cuda:N" in _one_error_line(capsys)
    assert list(in_tmp.iterdir()) == []


def test_dry_run_never_blocks_the_real_run(in_tmp, capsys):
    assert cli.main(["train", "spiral", "--dry-run", *QUIET]) == 0
    out = capsys.readouterr().out
    assert "dry run: writing to the temporary folder" in out
    assert not (in_tmp / "runs").exists()
    # the real runs: runs/spiral, then the next free name, and the message says so
    assert cli.main(["train", "spiral", *SPIRAL]) == 0
    assert (in_tmp / "runs" / "spiral" / "last.pt").is_file()
    assert cli.main(["train", "spiral", *SPIRAL]) == 0
    assert "runs/spiral already exists: this run goes to runs/spiral-2" in capsys.readouterr().out
    assert (in_tmp / "runs" / "spiral-2" / "last.pt").is_file()
    # a dry run given --save, then the real run there: it replaces the dry run
    save = str(in_tmp / "x")
    assert cli.main(["train", "spiral", "--dry-run", *QUIET, "--save", save]) == 0
    assert cli.main(["train", "spiral", *SPIRAL, "--niters", "3", "--save", save]) == 0
    assert "held a dry run: replaced" in capsys.readouterr().out
    rows = (in_tmp / "x" / "metrics.csv").read_text().splitlines()
    assert len(rows) == 1 + 3


def test_a_half_made_run_starts_again(in_tmp, capsys):
    save = in_tmp / "half"
    assert cli.main(["train", "spiral", *SPIRAL, "--save", str(save)]) == 0
    for name in ("last.pt", "best.pt"):  # as if it stopped before its first checkpoint
        (save / name).unlink()
    (save / "metrics.csv").write_text("step,lr\n")
    assert cli.main(["train", "spiral", "--resume", str(save)]) == 0
    assert "has no checkpoint yet: starting it again" in capsys.readouterr().out
    assert (save / "last.pt").is_file()
    (save / "last.pt").unlink()
    (save / "best.pt").unlink()
    (save / "metrics.csv").write_text("step,lr\n")
    assert cli.main(["train", "spiral", *SPIRAL, "--save", str(save)]) == 0


def test_a_failed_first_step_leaves_no_folder(in_tmp, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise KeyboardInterrupt  # e.g. Ctrl-C during the first steps

    monkeypatch.setattr("odeflow.experiments.steps.run_steps", fail)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["train", "spiral", *SPIRAL, "--save", str(in_tmp / "r")])
    assert not (in_tmp / "r").exists()


def test_a_run_folder_has_one_writer(in_tmp, capsys):
    save = in_tmp / "r"
    assert cli.main(["train", "spiral", *SPIRAL, "--save", str(save)]) == 0
    assert not (save / ".lock").exists()  # released at the end
    host = socket.gethostname()
    (save / ".lock").write_text(f"{os.getppid()} {host}\n")  # a live process
    assert cli.main(["train", "spiral", "--resume", str(save), "--niters", "3"]) == 2
    assert f"{save} is in use by another run (process {os.getppid()})" in _one_error_line(capsys)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (save / ".lock").write_text(f"{dead.pid} {host}\n")  # stale: its process is gone
    assert cli.main(["train", "spiral", "--resume", str(save), "--niters", "3", *QUIET]) == 0
    assert not (save / ".lock").exists()


def test_resuming_another_studys_run_is_one_line(in_tmp, capsys):
    save = in_tmp / "s"
    assert cli.main(["train", "spiral", *SPIRAL, "--save", str(save)]) == 0
    capsys.readouterr()
    assert cli.main(["train", "cnf", "--resume", str(save)]) == 2
    assert "that run was made by spiral, not odeflow train cnf" in _one_error_line(capsys)


def test_a_checkpoint_of_another_model_is_a_checkpoint_error(tmp_path):
    model = torch.nn.Linear(2, 2)
    other = torch.nn.Linear(3, 2)
    point = ResumePoint(tmp_path / "last.pt", {"model": other.state_dict(), "optimizer": {}})
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_model_state(model, torch.optim.Adam(model.parameters()), point)


def test_plot_draws_a_step_based_run(in_tmp, capsys):
    assert cli.main(["train", "spiral", *SPIRAL, "--save", "s"]) == 0
    assert cli.main(["plot", "s", "--out", "figs"]) == 0
    assert sorted(p.name for p in (in_tmp / "figs").iterdir()) == ["loss.png", "nfe.png"]


def test_progress_bars_only_on_a_terminal(in_tmp, capsys):
    assert not bars_wanted(True)  # capsys: stdout is not a terminal
    assert cli.main(["train", "spiral", *SPIRAL, "--progress", "True", "--save", "p"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err
    assert "step     2/2" in captured.out


def test_version_and_help_import_no_study():
    code = ("import sys; from odeflow import cli; cli.main(['--version']); cli.main(['--help']);"
            "cli.main(['train', '--help']);"
            "print(sorted(m for m in sys.modules if m.startswith('odeflow.experiments.')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0] == "odeflow 0.1.0"
    assert lines[-1] == "['odeflow.experiments.config']"  # torch-free flags, no study


def test_bench_help_names_itself_without_internal_commands(tmp_path, monkeypatch, capsys):
    pkg = tmp_path / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import argparse\n"
        "def _parser():\n"
        "    ap = argparse.ArgumentParser(prog='python -m benchmarks')\n"
        "    sub = ap.add_subparsers(dest='command', required=True)\n"
        "    sub.add_parser('s1', help='run workload s1')\n"
        "    sub.add_parser('_worker', help=argparse.SUPPRESS)\n"
        "    return ap\n"
        "def main(argv):\n"
        "    _parser().parse_args(argv)\n"
        "    return 0\n"
    )
    monkeypatch.setattr(cli, "repo_root", lambda: tmp_path)
    for mod in ("benchmarks", "benchmarks.__main__"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        with pytest.raises(SystemExit):
            cli.main(["bench", "--help"])
        out = capsys.readouterr().out
        assert out.startswith("usage: odeflow bench") and "_worker" not in out
        with pytest.raises(SystemExit):
            cli.main(["bench", "s1", "--help"])
        assert capsys.readouterr().out.startswith("usage: odeflow bench s1")
    finally:
        # The stand-in package must not outlive the test: a later test importing the real
        # benchmarks would get it from sys.modules (monkeypatch restores only what it deleted).
        for mod in ("benchmarks", "benchmarks.__main__"):
            if str(tmp_path) in str(getattr(sys.modules.get(mod), "__file__", "")):
                del sys.modules[mod]


def test_saved_config_records_the_dry_run(in_tmp):
    assert cli.main(["train", "spiral", "--dry-run", *QUIET, "--save", "d"]) == 0
    assert json.loads((in_tmp / "d" / "config.json").read_text())["dry_run"] is True
