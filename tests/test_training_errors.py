"""A user's mistake ends ``odeflow train`` with one line and exit status 2, never a
traceback, and never costs a finished epoch: truncated or empty checkpoints on resume,
model-changing flags on resume, unwritable ``--save``, truncated data files, a run folder
that already holds a run."""

import subprocess
import sys

import pytest
import torch

from odeflow import cli
from odeflow.data import write_idx
from odeflow.training import (
    CheckpointError,
    NoCheckpointError,
    ResumeMismatchError,
    RunExistsError,
    RunFolderError,
    find_resume_checkpoint,
    read_metrics,
)

TINY = ["--network", "mlp", "--digits-size", "12", "--digits-pad", "2", "--batch-size", "32",
        "--max-train-samples", "96", "--max-test-samples", "48", "--milestones", "1",
        "--progress", "False", "--plots", "False", "--threads", "1"]  # fmt: skip


def _train(*args):
    return cli.main(["train", "digits", *TINY, *args])


def _snapshot(folder):
    """Every file under ``folder`` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    return err


@pytest.fixture
def run1(tmp_path, capsys):
    """A run folder after one epoch."""
    run = tmp_path / "run"
    assert _train("--nepochs", "1", "--save", str(run)) == 0
    capsys.readouterr()
    return run


# --- resume with a truncated or empty last.pt ---------------------------------------------


def test_truncated_last_resumes_from_best_and_keeps_everything(tmp_path, run1, capsys):
    epoch1 = (run1 / "last.pt").read_bytes()
    assert _train("--resume", str(run1), "--nepochs", "2") == 0
    # best.pt back at epoch 1 (as if epoch 2 had not improved), last.pt cut in half
    (run1 / "best.pt").write_bytes(epoch1)
    last = (run1 / "last.pt").read_bytes()
    (run1 / "last.pt").write_bytes(last[: len(last) // 2])
    before = _snapshot(run1)
    capsys.readouterr()

    assert _train("--resume", str(run1), "--nepochs", "2") == 0
    out = capsys.readouterr().out
    assert f"{run1 / 'last.pt'} is truncated or corrupt" in out
    assert "from best.pt after epoch 1" in out
    kept = run1 / "set-aside-1"
    assert (kept / "last.pt").read_bytes() == before["last.pt"]  # the broken file, as found
    assert (kept / "metrics.csv").read_bytes() == before["metrics.csv"]  # both old rows
    assert [r["epoch"] for r in read_metrics(run1)] == [1, 2]

    straight = tmp_path / "straight"
    assert _train("--nepochs", "2", "--save", str(straight)) == 0
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(run1 / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k


def test_empty_last_without_intact_checkpoint_changes_nothing(run1, capsys):
    (run1 / "last.pt").write_bytes(b"")
    best = (run1 / "best.pt").read_bytes()
    (run1 / "best.pt").write_bytes(best[:100])
    before = _snapshot(run1)

    assert _train("--resume", str(run1), "--nepochs", "2") == 2
    err = _error_line(capsys)
    assert f"{run1 / 'last.pt'} is truncated or corrupt" in err
    assert "no intact checkpoint" in err and "To recover" in err
    assert _snapshot(run1) == before
    with pytest.raises(CheckpointError):
        find_resume_checkpoint(run1)


def test_resume_without_any_checkpoint_is_one_line(run1, capsys):
    (run1 / "last.pt").unlink()
    (run1 / "best.pt").unlink()
    assert _train("--resume", str(run1)) == 2
    assert "no checkpoint there" in _error_line(capsys)
    with pytest.raises(NoCheckpointError):
        find_resume_checkpoint(run1)
    assert _train("--resume", str(run1.parent / "missing")) == 2
    assert "no config.json there" in _error_line(capsys)


# --- resume with flags that change the model ----------------------------------------------


@pytest.mark.parametrize(
    "flags,named",
    [
        (
            ["--network", "resnet"],
            "--network 'resnet' differs from the run's saved --network 'mlp'",
        ),
        (["--width", "16"], "--width 16 differs from the run's saved --width 64"),
    ],
)
def test_model_changing_flag_on_resume_is_refused(run1, capsys, monkeypatch, flags, named):
    def no_loading(*args, **kwargs):
        raise AssertionError("state loaded before the flags were checked")

    monkeypatch.setattr("odeflow.training.runfolder.load_checkpoint", no_loading)
    before = _snapshot(run1)
    assert _train("--resume", str(run1), *flags) == 2
    assert named in _error_line(capsys)
    assert _snapshot(run1) == before


def test_resuming_under_another_experiment_is_refused(run1, capsys):
    before = _snapshot(run1)
    assert cli.main(["train", "fashion-mnist", "--resume", str(run1)]) == 2
    err = _error_line(capsys)
    assert "--dataset 'fashion-mnist' differs from the run's saved --dataset 'digits'" in err
    assert _snapshot(run1) == before
    with pytest.raises(ResumeMismatchError):
        from odeflow.experiments.mnist import parse_args

        parse_args(["--resume", str(run1), "--network", "odenet"])


def test_same_model_flags_and_a_larger_nepochs_resume(run1, capsys):
    assert _train("--resume", str(run1), "--network", "mlp", "--nepochs", "2") == 0
    assert [r["epoch"] for r in read_metrics(run1)] == [1, 2]


# --- unwritable --save, truncated data, a folder that holds a run -------------------------


def test_unwritable_save_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert _train("--dry-run", "--save", str(blocker / "run")) == 2
    assert f"cannot write the run folder {blocker / 'run'}" in _error_line(capsys)
    assert blocker.read_text() == "not a folder"
    with pytest.raises(RunFolderError):
        from odeflow.training import prepare_run_dir

        prepare_run_dir(blocker, resume=False)


def test_truncated_data_file_is_one_line(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_idx(data / "train-images-idx3-ubyte", torch.zeros(8, 28, 28, dtype=torch.uint8))
    write_idx(data / "train-labels-idx1-ubyte", torch.zeros(8, dtype=torch.uint8))
    write_idx(data / "t10k-images-idx3-ubyte", torch.zeros(4, 28, 28, dtype=torch.uint8))
    write_idx(data / "t10k-labels-idx1-ubyte", torch.zeros(4, dtype=torch.uint8))
    images = data / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-300])
    code = cli.main(["train", "mnist", "--network", "mlp", "--dry-run", "--progress", "False",
                     "--data-dir", str(data), "--save", str(tmp_path / "run")])  # fmt: skip
    assert code == 2
    err = _error_line(capsys)
    assert str(images) in err and "truncated" in err


def test_folder_holding_a_run_is_refused_and_untouched(run1, capsys):
    before = _snapshot(run1)
    assert _train("--nepochs", "1", "--save", str(run1)) == 2
    err = _error_line(capsys)
    assert "already holds a run" in err and f"--resume {run1}" in err
    assert _snapshot(run1) == before
    # a folder with only metrics.csv left also holds a run (its rows are not deleted)
    (run1 / "last.pt").unlink()
    (run1 / "best.pt").unlink()
    before = _snapshot(run1)
    assert _train("--nepochs", "1", "--save", str(run1)) == 2
    assert "already holds a run (metrics.csv)" in _error_line(capsys)
    assert _snapshot(run1) == before


def test_command_line_exit_status_is_2_without_traceback(run1):
    proc = subprocess.run(
        [sys.executable, "-m", "odeflow.cli", "train", "digits", *TINY, "--save", str(run1)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("odeflow train digits: error:")
    assert len(proc.stderr.strip().splitlines()) == 1
    with pytest.raises(RunExistsError):
        from odeflow.training import prepare_run_dir

        prepare_run_dir(run1, resume=False)
