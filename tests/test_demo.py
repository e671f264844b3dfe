"""`odeflow demo` is deterministic for a given seed and thread count (issue 13 §7): two
runs give the same metrics and bit-identical weights, so the figure the README quotes is
the one a fresh run prints (on the same machine and code)."""

import torch

from odeflow import cli
from odeflow.training import load_checkpoint, read_metrics


def test_demo_is_deterministic(tmp_path, capsys):
    runs = []
    for name in ("a", "b"):
        save = tmp_path / name
        assert cli.main(["demo", "--dry-run", "--progress", "False", "--plots", "False",
                         "--seed", "3", "--save", str(save)]) == 0
        runs.append(save)
    capsys.readouterr()
    a, b = (read_metrics(r) for r in runs)
    timing = {"time_per_batch", "epoch_time"}
    assert [{k: v for k, v in r.items() if k not in timing} for r in a] == [
        {k: v for k, v in r.items() if k not in timing} for r in b
    ]
    wa, wb = (load_checkpoint(r / "last.pt")["model"] for r in runs)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
