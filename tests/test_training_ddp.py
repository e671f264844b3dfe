"""``torchrun --nproc_per_node=2`` on the digits (gloo, CPU): DDP keeps both ranks' weights
identical, and only rank 0 writes the run folder."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

from odeflow.training import read_metrics

SCRIPT = textwrap.dedent(
    """
    import os, sys, torch
    from odeflow.experiments.mnist import parse_args, run
    summary = run(parse_args(sys.argv[2:]))
    out = sys.argv[1]
    torch.save(summary["model"].state_dict(), os.path.join(out, f"rank{os.environ['RANK']}.pt"))
    """
)


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo")
def test_two_cpu_processes_end_with_identical_weights(tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(SCRIPT)
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
        str(script), str(tmp_path),
        "--dataset", "digits", "--network", "resnet", "--width", "8", "--nepochs", "2",
        "--batch-size", "64", "--max-train-samples", "256", "--max-test-samples", "101",
        "--digits-size", "12", "--digits-pad", "2", "--threads", "1", "--progress", "False",
        "--save", str(run_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    w0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    w1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    init = torch.load(run_dir / "last.pt", weights_only=True)["model"]
    for k in w0:
        assert torch.equal(w0[k], w1[k]), k
        assert torch.equal(w0[k], init[k]), k  # rank 0 saved the same weights
    assert json.loads((run_dir / "config.json").read_text())["world_size"] == 2
    rows = read_metrics(run_dir)
    assert [r["epoch"] for r in rows] == [1, 2]  # written once, by rank 0
    # the two shards together cover the 101 test images exactly once
    ckpt_hist = torch.load(run_dir / "last.pt", weights_only=True)["history"]
    assert ckpt_hist[-1]["test_acc"] * 101 == pytest.approx(round(ckpt_hist[-1]["test_acc"] * 101))
    # exactly one "epoch" log line per epoch: only rank 0 logs
    assert proc.stdout.count("epoch   1/2") == 1
