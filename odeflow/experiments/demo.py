"""``odeflow demo``: seed A's ODE-Net trained on scikit-learn's digits in under a minute.

The digits (1,797 images of 8×8) are upsampled to 16×16 with a 2-pixel border, so
the ODE block works on 3×3 feature maps; the network is seed A's ODE-Net with 32
channels (52,938 parameters), trained with the seed's SGD (momentum 0.9, rate scaled
by batch/128) in batches of 64 for 7 epochs, the rate divided by 10 after epochs 5 and 6,
without augmentation. Every setting can be overridden with the ``odeflow train`` flags.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..training.runfolder import next_free_dir
from .mnist import MNISTConfig, parse_args, run

__all__ = ["DEMO", "next_free_dir", "main"]

# Tuned for < 1 min on 2 CPU cores with >= 97 % test accuracy (see docs/experiments.md).
DEMO = MNISTConfig(
    dataset="digits",
    network="odenet",
    digits_size=16,
    digits_pad=2,
    width=32,
    nepochs=7,
    batch_size=64,
    lr=0.4,  # x 64/128 -> 0.2
    milestones=(5, 6),
    data_aug=False,
    test_batch_size=500,
    threads=1,  # tiny convolutions: one thread is faster than two contending ones
    save="",
)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the demo and print accuracy, NFE, parameter count, time and the plot paths."""
    cfg = parse_args(argv, base=DEMO, prog="odeflow demo")
    if not cfg.save and not cfg.resume and not cfg.dry_run:
        cfg.save = str(next_free_dir("runs/demo"))  # a dry run goes to a temporary folder
    summary = run(cfg)
    if summary["rank"] == 0:
        run_dir = Path(summary["run_dir"])
        print(
            f"\nODE-Net on digits: test accuracy {summary['test_acc']:.4f} "
            f"(best {summary['best_acc']:.4f})\n"
            f"  parameters       {summary['parameters']:,}\n"
            f"  NFE-F / NFE-B    {summary['history'][-1]['nfe_f']:.1f} / "
            f"{summary['history'][-1]['nfe_b']:.1f} per batch (last epoch)\n"
            f"  training time    {summary['seconds']:.1f} s\n"
            f"  plots            {run_dir / 'accuracy.png'}, {run_dir / 'nfe.png'}\n"
            f"  run folder       {run_dir}"
        )
    return summary
