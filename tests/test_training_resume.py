"""A hard kill (SIGKILL) in the middle of an epoch, then ``--resume``, ends exactly where an
uninterrupted run ends: same weights, same metrics (times aside)."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import torch

from odeflow.training import read_metrics

FLAGS = [
    "--dataset", "digits", "--network", "mlp", "--nepochs", "2", "--batch-size", "32",
    "--max-train-samples", "320", "--max-test-samples", "100", "--digits-size", "12",
    "--digits-pad", "2", "--milestones", "1", "--threads", "1", "--progress", "False",
    "--plots", "False",
]  # fmt: skip

# Runs the experiment; with KILL_MARKER set, it stops in epoch 2 before batch 3 (after two
# optimizer steps of that epoch), creates the marker and waits to be killed.
SCRIPT = textwrap.dedent(
    """
    import os, sys, time
    from odeflow.data import loader
    marker = os.environ.get("KILL_MARKER")
    if marker:
        original = loader.BatchLoader.__iter__
        def stalling(self):
            for i, batch in enumerate(original(self)):
                if self.shuffle and self.epoch == 1 and i == 2:
                    open(marker, "w").close()
                    time.sleep(600)
                yield batch
        loader.BatchLoader.__iter__ = stalling
    from odeflow.experiments.mnist import main
    main(sys.argv[1:])
    """
)


def _run(tmp_path, args, env_extra=None, wait=True):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {**os.environ, **(env_extra or {})}
    proc = subprocess.Popen(
        [sys.executable, str(script), *FLAGS, *args], env=env, cwd=tmp_path,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    if wait:
        out, _ = proc.communicate(timeout=240)
        assert proc.returncode == 0, out
    return proc


def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    _run(tmp_path, ["--save", str(straight)])

    marker = tmp_path / "in-epoch-2"
    proc = _run(tmp_path, ["--save", str(killed)], {"KILL_MARKER": str(marker)}, wait=False)
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "the run never reached epoch 2"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(killed / "last.pt", weights_only=True)["epoch"] == 1
    assert not list(killed.glob(".*.tmp"))

    _run(tmp_path, ["--resume", str(killed)])

    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(killed / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    drop = ("time_per_batch", "epoch_time")
    rows_a = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(straight)]
    rows_b = [{k: v for k, v in r.items() if k not in drop} for r in read_metrics(killed)]
    assert len(rows_a) == 2 and rows_a == rows_b
