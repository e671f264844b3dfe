"""Shared checks of the iteration-based studies (`odeflow train` spiral, latent-ode,
latent-sde, cnf)."""

import torch

from odeflow import cli
from odeflow.training import load_checkpoint, read_metrics


def dry_run(name, save, columns, files, extra=()):
    """`odeflow train NAME --dry-run` writes a run folder with ``columns`` and ``files``."""
    assert cli.main(["train", name, "--dry-run", "--progress", "False", "--save", str(save),
                     *extra]) == 0
    rows = read_metrics(save)
    assert [r["step"] for r in rows] == [1, 2]
    assert set(columns) | {"step", "lr", "time"} <= set(rows[0])
    assert {"config.json", "metrics.csv", "last.pt", "best.pt", *files} <= {
        p.name for p in save.iterdir()
    }
    return rows


def resume_is_exact(name, tmp_path, flags):
    """Four steps straight == two steps (``--stop-after 2``) + ``--resume``: same rows
    (but the times) and bit-identical weights."""
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    flags = [*flags, "--niters", "4", "--eval-every", "2", "--progress", "False",
             "--plots", "False"]
    assert cli.main(["train", name, *flags, "--save", str(straight)]) == 0
    assert cli.main(["train", name, *flags, "--stop-after", "2", "--save", str(resumed)]) == 0
    assert len(read_metrics(resumed)) == 1
    assert cli.main(["train", name, "--resume", str(resumed)]) == 0
    a, b = read_metrics(straight), read_metrics(resumed)
    assert [r["step"] for r in b] == [2, 4]

    def untimed(rows):
        return [{k: v for k, v in r.items() if k != "time"} for r in rows]

    assert untimed(a) == untimed(b)
    wa, wb = load_checkpoint(straight / "last.pt"), load_checkpoint(resumed / "last.pt")
    assert wa["epoch"] == wb["epoch"] == 4
    for key in wa["model"]:
        assert torch.equal(wa["model"][key], wb["model"][key]), key
