"""The figures of ``odeflow train latent-sde`` (matplotlib, headless).

- ``posterior.png``: held-out series, one column each and one row per coordinate: the
  noise-free series, its noisy observations and sampled posterior paths;
- ``prior.png``: the noise-free data and paths sampled from the learned prior SDE, in 3-D;
- ``elbo.png``: the training and test ELBO per evaluation.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data.lorenz import LorenzSeries
from .steps import save_figure

__all__ = ["plot_posterior", "plot_prior", "plot_elbo"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_posterior(path: Path, series: LorenzSeries, paths: torch.Tensor) -> Path:
    """``series`` (N of them) against posterior ``paths`` ``(S, N, T, 3)``."""
    plt = _pyplot()
    n = len(series)
    t = series.t.numpy()
    fig, axes = plt.subplots(3, n, figsize=(3.3 * n, 5.4), squeeze=False, sharex=True)
    for j in range(n):
        obs = series.mask[j].bool().numpy()
        for c, ax in enumerate(axes[:, j]):
            for s in range(paths.shape[0]):
                ax.plot(t, paths[s, j, :, c].numpy(), "-", color="C1", lw=0.7, alpha=0.5,
                        label="posterior samples" if s == 0 else None)
            ax.plot(t, series.clean[j, :, c].numpy(), "k--", lw=1.0, label="true")
            ax.plot(t[obs], series.noisy[j, obs, c].numpy(), ".", color="C0", ms=4,
                    label="observed")
            if j == 0:
                ax.set_ylabel("xyz"[c])
        axes[0, j].set_title(f"test series {j}", fontsize=9)
        axes[-1, j].set_xlabel("t")
    axes[0, 0].legend(fontsize=7, loc="best")
    return save_figure(fig, path)


def plot_prior(path: Path, clean: torch.Tensor, prior: torch.Tensor) -> Path:
    """Noise-free series ``(N, T, 3)`` beside prior samples ``(M, T, 3)``, same axes."""
    plt = _pyplot()
    fig = plt.figure(figsize=(8, 4))
    limits = None
    for k, (title, paths) in enumerate((("data (noise-free)", clean),
                                        ("samples of the learned prior", prior))):
        ax = fig.add_subplot(1, 2, k + 1, projection="3d")
        for p in paths.numpy():
            ax.plot(p[:, 0], p[:, 1], p[:, 2], lw=0.8)
            ax.scatter(p[:1, 0], p[:1, 1], p[:1, 2], marker="x", s=10, color="k")
        ax.set_title(title, fontsize=10)
        ax.set_xticklabels([])
        ax.set_yticklabels([])
        ax.set_zticklabels([])
        if limits is None:
            limits = ax.get_xlim(), ax.get_ylim(), ax.get_zlim()
        else:
            ax.set_xlim(limits[0])
            ax.set_ylim(limits[1])
            ax.set_zlim(limits[2])
    return save_figure(fig, path)


def plot_elbo(path: Path, history: list[dict[str, float]]) -> Path:
    """``elbo`` and ``test_elbo`` against the step, on a symmetric log scale: the ELBO
    starts thousands of nats below zero and ends tens above, and a linear axis would
    flatten the end of the run to a line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [r["step"] for r in history]
    for column in ("elbo", "test_elbo"):
        ax.plot(steps, [r[column] for r in history], "-o", ms=2, label=column)
    ax.set_yscale("symlog", linthresh=10.0)
    ax.set_xlabel("step")
    ax.set_ylabel("ELBO per series (nats, symlog)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path, dpi=120)
