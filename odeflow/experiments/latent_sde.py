"""``odeflow train latent-sde``: a latent SDE on noisy, irregular stochastic-Lorenz series.

Li, Wong, Chen & Duvenaud (2020, §7.2): series of the stochastic Lorenz attractor
(:mod:`odeflow.data.lorenz`, simulated with :mod:`odeflow.sde`, normalised, with
observation noise, each observed at ``--n-obs`` random times of a ``--n-points`` grid)
are fitted by a latent SDE (:mod:`odeflow.nn.latent_sde`): a GRU over the reversed
observations gives a context and ``q(z₀|x)``, a posterior SDE driven by the context and a
prior SDE share a diagonal diffusion, a linear decoder maps back, and the loss is the
negative ELBO, whose path KL comes from ``odeflow.sde.sdeint(..., logqp=True)`` (KL
weight warmed up linearly over ``--kl-warmup`` steps). Columns of ``metrics.csv``:

- ``train_loss``: the loss minimised (the KL weighted); ``elbo``, ``kl``, ``kl_path``:
  the training ELBO per series (KL weight 1) and its KL terms (``kl = kl0 + kl_path``);
- ``test_elbo``, ``test_log_lik``, ``test_kl``: on held-out series, averaged over
  ``EVAL_SAMPLES`` posterior samples each;
- ``test_rmse``: RMSE of the mean of those posterior paths against the noise-free
  series at every grid time (observed or not);
- ``nfe_f`` (drift + diffusion evaluations), ``sde_steps`` per training solve,
  ``nfe_b`` (those of the adjoint's backward pass; 0 for backpropagation), ``nfe_test``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.lorenz import LorenzSeries, make_lorenz
from ..nn.latent_sde import SDE_METHODS, LatentSDE
from ..training.errors import ConfigError
from .config import NON_NEGATIVE, POSITIVE, Check, at_least, opt
from .epochs import check_device, resolve_gradient
from .steps import (
    StepConfig,
    StepTask,
    cosine_lr,
    run_main,
    start_run,
    train_study,
)
from .steps import step_generator as step_gen

__all__ = ["LatentSDEConfig", "build", "run", "main", "EVAL_SAMPLES"]

DATA_STEP, EVAL_STEP, PLOT_STEP = -2, -3, -4  # generator "steps" that are no training step
EVAL_SAMPLES = 8  # posterior paths per held-out series

SDE_METHOD = Check(lambda v: v in SDE_METHODS, "one of " + ", ".join(SDE_METHODS))


@dataclass
class LatentSDEConfig(StepConfig):
    """Every setting of one latent-SDE run; each field is a command-line flag."""

    n_train: int = opt(512, "training series", check=at_least(1))
    n_test: int = opt(64, "held-out series", check=at_least(1))
    n_points: int = opt(50, "grid times per series", check=at_least(2))
    t_total: float = opt(1.0, "time span of the grid", check=POSITIVE)
    n_obs: int = opt(30, "observed grid times per series (random; = --n-points: regular)",
                     check=at_least(1))
    noise_std: float = opt(0.05, "observation noise (normalised units)", check=NON_NEGATIVE)
    obs_std: float = opt(0.05, "standard deviation of the Gaussian likelihood", check=POSITIVE)
    latent: int = opt(4, "latent dimension", model=True, check=at_least(1))
    context: int = opt(16, "size of the encoder's context", model=True, check=at_least(1))
    hidden: int = opt(32, "hidden units of the drifts and the diffusion", model=True,
                      check=at_least(1))
    rnn_hidden: int = opt(32, "GRU units of the encoder", model=True, check=at_least(1))
    # Itô: euler, milstein, srk; Stratonovich: midpoint, heun, reversible_heun
    method: str = opt("euler", "SDE solver, fixed steps: euler, milstein, srk (Itô); midpoint, "
                      "heun, reversible_heun (Stratonovich)", check=SDE_METHOD)
    dt: float = opt(0.02, "solver step", check=POSITIVE)
    kl_warmup: int = opt(200, "steps over which the KL weight grows from 0 to 1",
                         check=NON_NEGATIVE)
    batch_size: int = opt(64, "series per step", check=at_least(1))
    niters: int = opt(1000, "number of optimisation steps", check=at_least(1))
    eval_every: int = opt(100, "steps between evaluations", check=at_least(1))
    lr: float = opt(1e-2, "peak learning rate (Adam)", check=POSITIVE)
    lr_final: float = opt(0.01, "final learning rate as a fraction of --lr (cosine decay)",
                          check=NON_NEGATIVE)
    # "auto" = cuda:<gpu> when CUDA is available, else the CPU (faster for this small model)
    device: str = opt("cpu", "device: auto, cpu, cuda, cuda:N")
    gpu: int = opt(0, "GPU index (with --device auto)", check=NON_NEGATIVE)

    def validate(self) -> None:
        """Rules between flags (:func:`~odeflow.experiments.config.check_config`)."""
        if self.n_obs > self.n_points:
            raise ConfigError(f"--n-obs {self.n_obs}, --n-points {self.n_points}: expected "
                              f"n-obs <= n-points")
        spacing = self.t_total / (self.n_points - 1)
        if self.dt > spacing * (1 + 1e-9):
            raise ConfigError(f"--dt {self.dt:g}: expected at most the grid spacing "
                              f"{spacing:g} (--t-total / (--n-points - 1)), so that every "
                              f"observation gets a step")
        gradient = resolve_gradient(self)
        if gradient == "checkpoint":
            raise ConfigError("--gradient checkpoint: expected direct or adjoint (an SDE's "
                              "checkpointed gradient reaches only its own parameters, and "
                              "the posterior drift reads the encoder's context)")
        check_device(self)


def device_of(cfg: LatentSDEConfig) -> torch.device:
    """``--device`` (``auto``: ``cuda:<--gpu>`` when CUDA is available, else the CPU)."""
    if cfg.device == "auto":
        return torch.device("cuda", cfg.gpu) if torch.cuda.is_available() else torch.device("cpu")
    return torch.device(cfg.device)


def rmse(pred: torch.Tensor, clean: torch.Tensor) -> float:
    """``sqrt(mean((pred − clean)²))`` over every element."""
    return float(((pred - clean) ** 2).mean().sqrt())


def build(cfg: LatentSDEConfig) -> dict[str, Any]:
    """Data, model, optimizer and the :class:`StepTask` of ``cfg``."""
    device = device_of(cfg)
    data = make_lorenz(cfg.n_train + cfg.n_test, n_points=cfg.n_points, t_total=cfg.t_total,
                       n_obs=cfg.n_obs, noise_std=cfg.noise_std,
                       generator=step_gen(cfg.seed, DATA_STEP)).to(device)
    train = data.subset(torch.arange(cfg.n_train))
    test = data.subset(torch.arange(cfg.n_train, cfg.n_train + cfg.n_test))
    model = LatentSDE(3, cfg.latent, cfg.context, cfg.hidden, cfg.rnn_hidden, method=cfg.method,
                      dt=cfg.dt, gradient=resolve_gradient(cfg)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    t = data.t

    def train_step(k: int) -> dict[str, float]:
        g = step_gen(cfg.seed, k)
        idx = torch.randperm(cfg.n_train, generator=g)[: cfg.batch_size]
        batch = train.subset(idx.to(device))
        optimizer.zero_grad(set_to_none=True)
        kl_weight = min(1.0, (k + 1) / cfg.kl_warmup) if cfg.kl_warmup > 0 else 1.0
        loss, parts = model.elbo(t, batch.noisy, batch.mask, cfg.obs_std, generator=g,
                                 kl_weight=kl_weight)
        forward, posterior = model.last_stats, model.last_posterior
        in_forward = posterior.evaluations
        loss.backward()
        optimizer.step()
        kl_path = float(parts["kl_path"].detach().mean())
        return {"train_loss": float(loss.detach()), "elbo": float(parts["elbo"].detach().mean()),
                "kl": float(parts["kl0"].detach().mean()) + kl_path, "kl_path": kl_path,
                "nfe_f": forward.nfe, "nfe_b": posterior.evaluations - in_forward,
                "sde_steps": forward.n_steps}

    @torch.no_grad()
    def posterior_paths(series: LorenzSeries, generator: torch.Generator):
        """ELBO pieces and decoded paths ``(EVAL_SAMPLES, N, T, 3)`` of ``series``."""
        _, parts = model.elbo(t, series.noisy, series.mask, cfg.obs_std, generator=generator,
                              samples=EVAL_SAMPLES)
        return parts, parts["pred"].reshape(EVAL_SAMPLES, len(series), *parts["pred"].shape[1:])

    def evaluate() -> dict[str, float]:
        parts, paths = posterior_paths(test, step_gen(cfg.seed, EVAL_STEP))
        return {
            "test_elbo": float(parts["elbo"].mean()),
            "test_log_lik": float(parts["log_lik"].mean()),
            "test_kl": float((parts["kl0"] + parts["kl_path"]).mean()),
            "test_rmse": rmse(paths.mean(0), test.clean),
            "nfe_test": model.last_stats.nfe,
        }

    def plot(run_dir: Path, history: list[dict[str, float]]) -> list[Path]:
        from .latent_sde_plots import plot_elbo, plot_posterior, plot_prior

        g = step_gen(cfg.seed, PLOT_STEP)
        shown = test.subset(torch.arange(min(3, cfg.n_test), device=device))
        _, paths = posterior_paths(shown, g)
        prior = model.sample_prior(t, min(16, cfg.n_test), generator=g)
        return [
            plot_posterior(run_dir / "posterior.png", shown.to("cpu"), paths.cpu()),
            plot_prior(run_dir / "prior.png", test.clean[:16].cpu(), prior.cpu()),
            plot_elbo(run_dir / "elbo.png", history),
        ]

    task = StepTask(
        model=model,
        optimizer=optimizer,
        lr_fn=lambda k: cosine_lr(k, cfg.lr, cfg.lr_final, cfg.niters),
        train_step=train_step,
        evaluate=evaluate,
        fields=("train_loss", "elbo", "kl", "kl_path", "test_elbo", "test_log_lik", "test_kl",
                "test_rmse", "nfe_f", "nfe_b", "sde_steps", "nfe_test"),
        best_key="test_rmse",
        plot=plot,
    )
    return {"task": task, "model": model, "train": train, "test": test, "device": device}


def run(cfg: LatentSDEConfig, log=print) -> dict[str, Any]:
    """Train ``cfg`` end to end; returns ``run_dir``, ``history``, ``seconds``, ``model``."""
    if cfg.dry_run:
        n_points = min(cfg.n_points, 20)  # a coarser grid and step: 19 steps at most
        cfg = dataclasses.replace(cfg, n_train=16, n_test=8, batch_size=8, niters=2,
                                  eval_every=1, n_points=n_points, n_obs=min(cfg.n_obs, 12),
                                  dt=max(cfg.dt, cfg.t_total / (n_points - 1)))
    with start_run(cfg, "latent-sde", log) as start:
        parts = build(cfg)
        log(f"latent SDE: {sum(p.numel() for p in parts['model'].parameters())} parameters, "
            f"{cfg.n_train} training series with {cfg.n_obs} of {cfg.n_points} times observed, "
            f"{cfg.method} dt {cfg.dt:g}, gradient {resolve_gradient(cfg)}, device "
            f"{parts['device']}, run folder {start.run_dir}")
        history, seconds = train_study(cfg, parts["task"], start, log)
    return {"run_dir": str(start.run_dir), "history": history, "model": parts["model"],
            "seconds": seconds}


def main(
    argv: Sequence[str] | None = None, base: LatentSDEConfig | None = None,
    prog: str | None = None,
) -> dict[str, Any]:
    """``odeflow train latent-sde [flags]``."""
    return run_main(LatentSDEConfig, run, argv, base, prog or "odeflow train latent-sde",
                    ("elbo", "test_elbo", "test_rmse"))
