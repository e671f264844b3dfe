"""``odeflow train latent-ode``: a latent ODE on irregularly sampled, noisy 2-D spirals.

Chen et al. (2018) §5.1: spirals (:mod:`odeflow.data.spirals`) observed at ``--n-obs``
random times each within the first ``--n-window`` points of a 100-point grid, with noise;
a GRU read backwards over the observations gives ``q(z₀|x)``, ``z₀`` follows a learned
latent ODE, a decoder maps it back; trained by the ELBO (KL weight warmed up linearly over
``--kl-warmup`` steps). Evaluated on held-out spirals from the posterior mean of ``z₀``:

- ``test_rmse``: RMSE against the noise-free spirals at each series' observed times;
- ``test_rmse_extrap``: RMSE against the noise-free spirals on the rest of the grid
  (beyond the observation window).

RMSE is over points and both coordinates: ``sqrt(mean((pred − clean)²))``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.spirals import THETA_MAX, SpiralSeries, make_spirals
from ..nn.latent import LatentODE
from ..training.errors import ConfigError
from .config import NON_NEGATIVE, POSITIVE, SOLVER, at_least, opt
from .epochs import resolve_gradient
from .steps import (
    StepConfig,
    StepTask,
    cosine_lr,
    plot_columns,
    run_main,
    save_figure,
    start_run,
    train_study,
)
from .steps import step_generator as step_gen

__all__ = ["LatentODEConfig", "build", "rmse", "run", "main"]

DATA_STEP = -2  # generator "step" of the data set: never a training step


@dataclass
class LatentODEConfig(StepConfig):
    """Every setting of one latent-ODE run; each field is a command-line flag."""

    n_train: int = opt(1000, "training spirals", check=at_least(1))
    n_test: int = opt(100, "held-out spirals", check=at_least(1))
    # grid: n_total points on [0, t_total]; the first n_window are the observation window
    n_total: int = opt(100, "grid points per spiral", check=at_least(2))
    t_total: float = opt(10.0, "time span of the grid", check=POSITIVE)
    n_window: int = opt(50, "grid points in the observation window", check=at_least(2))
    n_obs: int = opt(30, "observed points per spiral (random, within the window)",
                     check=at_least(1))
    noise_std: float = opt(0.1, "observation noise (standard deviation)", check=NON_NEGATIVE)
    obs_std: float = opt(0.1, "standard deviation of the Gaussian likelihood", check=POSITIVE)
    latent: int = opt(4, "latent dimension", model=True, check=at_least(1))
    rnn_hidden: int = opt(25, "GRU units of the encoder", model=True, check=at_least(1))
    ode_hidden: int = opt(20, "hidden units of the latent ODE", model=True, check=at_least(1))
    dec_hidden: int = opt(20, "hidden units of the decoder", model=True, check=at_least(1))
    kl_warmup: int = opt(200, "steps over which the KL weight grows from 0 to 1",
                         check=NON_NEGATIVE)
    method: str = opt("dopri5", "ODE solver of the latent ODE", check=SOLVER)
    rtol: float = opt(1e-3, "relative tolerance", check=POSITIVE)
    atol: float = opt(1e-4, "absolute tolerance", check=POSITIVE)
    batch_size: int = opt(100, "spirals per step", check=at_least(1))
    niters: int = opt(2000, "number of optimisation steps", check=at_least(1))
    eval_every: int = opt(100, "steps between evaluations", check=at_least(1))
    lr: float = opt(1e-2, "peak learning rate (Adam)", check=POSITIVE)
    lr_final: float = opt(0.01, "final learning rate as a fraction of --lr (cosine decay)",
                          check=NON_NEGATIVE)


    def validate(self) -> None:
        """Rules between flags (:func:`~odeflow.experiments.config.check_config`)."""
        if not self.n_obs <= self.n_window <= self.n_total:
            raise ConfigError(f"--n-obs {self.n_obs}, --n-window {self.n_window}, --n-total "
                              f"{self.n_total}: expected n-obs <= n-window <= n-total")
        if self.t_total >= THETA_MAX:
            raise ConfigError(f"--t-total {self.t_total:g}: expected a span below 6π "
                              f"({THETA_MAX:.3f}), the length of the spirals")


def rmse(pred: torch.Tensor, clean: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """``sqrt(mean((pred − clean)²))`` over points (where ``mask`` is 1) and coordinates."""
    sq = ((pred - clean) ** 2).mean(-1)
    if mask is None:
        return float(sq.mean().sqrt())
    return float(((sq * mask).sum() / mask.sum()).sqrt())


def build(cfg: LatentODEConfig) -> dict[str, Any]:
    """Data, model, optimizer and the :class:`StepTask` of ``cfg``."""
    data = make_spirals(cfg.n_train + cfg.n_test, n_total=cfg.n_total, t_total=cfg.t_total,
                        n_window=cfg.n_window, n_obs=cfg.n_obs, noise_std=cfg.noise_std,
                        generator=step_gen(cfg.seed, DATA_STEP))
    train = data.subset(torch.arange(cfg.n_train))
    test = data.subset(torch.arange(cfg.n_train, cfg.n_train + cfg.n_test))
    model = LatentODE(2, cfg.latent, cfg.rnn_hidden, cfg.ode_hidden, cfg.dec_hidden,
                      method=cfg.method, rtol=cfg.rtol, atol=cfg.atol,
                      gradient=resolve_gradient(cfg))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    w = cfg.n_window
    t_window = data.t[:w]

    def train_step(k: int) -> dict[str, float]:
        g = step_gen(cfg.seed, k)
        idx = torch.randperm(cfg.n_train, generator=g)[: cfg.batch_size]
        batch = train.subset(idx)
        optimizer.zero_grad(set_to_none=True)
        kl_weight = min(1.0, (k + 1) / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0
        loss, parts = model.elbo(t_window, batch.noisy[:, :w], batch.mask, cfg.obs_std,
                                 generator=g, kl_weight=kl_weight)
        loss.backward()
        optimizer.step()
        stats = model.last_stats
        return {"train_loss": float(loss.detach()), "kl": parts["kl"], "nfe_f": stats.nfe,
                "nfe_b": stats.nfe_backward or 0}

    @torch.no_grad()
    def predict(series: SpiralSeries) -> torch.Tensor:
        mean, _ = model.encoder(t_window, series.noisy[:, :w], series.mask)
        return model.decode(mean, series.t)

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        pred = predict(test)
        return {
            "test_rmse": rmse(pred[:, :w], test.clean[:, :w], test.mask),
            "test_rmse_extrap": rmse(pred[:, w:], test.clean[:, w:]),
            "nfe_test": model.last_stats.nfe,
        }

    def plot(run_dir: Path, history: list[dict[str, float]]) -> list[Path]:
        shown = test.subset(torch.arange(min(4, cfg.n_test)))
        paths = [plot_reconstructions(run_dir / "reconstructions.png", shown, predict(shown), w)]
        paths.append(plot_columns(history, ("test_rmse", "test_rmse_extrap"),
                                  run_dir / "rmse.png", "RMSE"))
        return paths

    task = StepTask(
        model=model,
        optimizer=optimizer,
        lr_fn=lambda k: cosine_lr(k, cfg.lr, cfg.lr_final, cfg.niters),
        train_step=train_step,
        evaluate=evaluate,
        fields=("train_loss", "kl", "test_rmse", "test_rmse_extrap", "nfe_f", "nfe_b",
                "nfe_test"),
        best_key="test_rmse",
        plot=plot,
    )
    return {"task": task, "model": model, "train": train, "test": test}


def plot_reconstructions(path: Path, series: SpiralSeries, pred: torch.Tensor, w: int) -> Path:
    """Noise-free spiral, noisy observations, reconstruction and extrapolation, per panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(series)
    fig, axes = plt.subplots(1, n, figsize=(3.2 * n, 3.4), squeeze=False)
    for i, ax in enumerate(axes[0]):
        clean, p = series.clean[i].numpy(), pred[i].numpy()
        obs = series.mask[i].bool().numpy()
        ax.plot(clean[:, 0], clean[:, 1], "k--", lw=0.8, label="true")
        ax.plot(series.noisy[i, :w][obs, 0], series.noisy[i, :w][obs, 1], ".", color="C0",
                ms=4, label="observed")
        ax.plot(p[:w, 0], p[:w, 1], "-", color="C1", label="reconstruction")
        ax.plot(p[w - 1 :, 0], p[w - 1 :, 1], "-", color="C2", label="extrapolation")
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][0].legend(fontsize=7)
    return save_figure(fig, path)


def run(cfg: LatentODEConfig, log=print) -> dict[str, Any]:
    """Train ``cfg`` end to end; returns ``run_dir``, ``history``, ``seconds``, ``model``."""
    if cfg.dry_run:
        cfg = dataclasses.replace(cfg, n_train=16, n_test=8, batch_size=8, niters=2,
                                  eval_every=1)
    with start_run(cfg, "latent-ode", log) as start:
        parts = build(cfg)
        log(f"latent ODE: {sum(p.numel() for p in parts['model'].parameters())} parameters, "
            f"{cfg.n_train} training spirals with {cfg.n_obs} observations each, "
            f"gradient {resolve_gradient(cfg)}, run folder {start.run_dir}")
        history, seconds = train_study(cfg, parts["task"], start, log)
    return {"run_dir": str(start.run_dir), "history": history, "model": parts["model"],
            "seconds": seconds}


def main(
    argv: Sequence[str] | None = None, base: LatentODEConfig | None = None,
    prog: str | None = None,
) -> dict[str, Any]:
    """``odeflow train latent-ode [flags]``."""
    return run_main(LatentODEConfig, run, argv, base, prog or "odeflow train latent-ode",
                    ("test_rmse", "test_rmse_extrap"))
