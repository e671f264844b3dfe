"""``odeflow train cnf``: continuous normalizing flows on 2-D toy densities.

Maximum likelihood on fresh batches of ``--data`` (circles, moons, 8gaussians, pinwheel,
checkerboard; :mod:`odeflow.data.toy`) with a :class:`~odeflow.nn.cnf.CNF`: the state and
the log-density change integrated together, the trace exact or Hutchinson's estimate
(``--trace``, ``--noise``), and RNODE's regularisers (``--kinetic``, ``--jacobian-norm``,
Finlay et al. 2020) as flags. ``test_nll`` is the mean negative log-likelihood in nats
per point of ``--test-size`` fresh samples, with the exact trace; ``nfe_f`` / ``nfe_b``
are the training solves' forward / backward evaluations, ``nfe_test`` the test solve's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..data.toy import TOY_DENSITIES, circles_log_prob, sample_toy
from ..nn.cnf import CNF, NOISES, TRACES, CNFField
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

__all__ = ["CNFConfig", "build", "run", "main"]

TEST_STEP = -1  # the generator "step" of the test set: never a training step


@dataclass
class CNFConfig(StepConfig):
    """Every setting of one CNF run; each field is a command-line flag."""

    # the toy density
    data: str = opt("circles", "2-D density to fit", choices=tuple(TOY_DENSITIES))
    # how tr(df/dz) is computed during training (the test NLL always uses the exact trace)
    trace: str = opt("exact", "trace of the Jacobian in training", choices=TRACES)
    # Hutchinson's noise, drawn once per solve
    noise: str = opt("gaussian", "Hutchinson noise (one draw per solve)", choices=NOISES)
    # RNODE: weight of the kinetic energy  int ||f||^2 dt
    kinetic: float = opt(0.0, "weight of RNODE's kinetic-energy regulariser", check=NON_NEGATIVE)
    # RNODE: weight of the Jacobian Frobenius norm  int ||df/dz||_F^2 dt
    jacobian_norm: float = opt(0.0, "weight of RNODE's Jacobian Frobenius-norm regulariser",
                               check=NON_NEGATIVE)
    # the field's MLP
    hidden: int = opt(64, "hidden units per layer of f(t, z)", model=True, check=at_least(1))
    layers: int = opt(3, "hidden layers of f(t, z)", model=True, check=at_least(1))
    # flow end time
    T: float = opt(1.0, "end time of the flow (the base density lives at T)", check=POSITIVE)
    method: str = opt("dopri5", "ODE solver", check=SOLVER)
    rtol: float = opt(1e-4, "relative tolerance", check=POSITIVE)
    atol: float = opt(1e-4, "absolute tolerance", check=POSITIVE)
    batch_size: int = opt(256, "fresh samples per step", check=at_least(1))
    test_size: int = opt(5000, "fresh samples for test_nll", check=at_least(1))
    niters: int = opt(1000, "number of optimisation steps", check=at_least(1))
    eval_every: int = opt(100, "steps between evaluations", check=at_least(1))
    lr: float = opt(1e-2, "peak learning rate (Adam)", check=POSITIVE)
    lr_final: float = opt(0.02, "final learning rate as a fraction of --lr (cosine decay)",
                          check=NON_NEGATIVE)


def build(cfg: CNFConfig) -> dict[str, Any]:
    """Model, optimizer, test set and the :class:`StepTask` of ``cfg``."""
    field = CNFField(2, cfg.hidden, cfg.layers)
    kwargs = dict(T=cfg.T, method=cfg.method, rtol=cfg.rtol, atol=cfg.atol)
    cnf = CNF(field, trace=cfg.trace, noise=cfg.noise, gradient=resolve_gradient(cfg), **kwargs)
    exact = CNF(field, trace="exact", **kwargs)  # same field: the test NLL's exact trace
    optimizer = torch.optim.Adam(cnf.parameters(), lr=cfg.lr)
    test_x = sample_toy(cfg.data, cfg.test_size, step_gen(cfg.seed, TEST_STEP))

    def train_step(k: int) -> dict[str, float]:
        g = step_gen(cfg.seed, k)
        x = sample_toy(cfg.data, cfg.batch_size, g)
        optimizer.zero_grad(set_to_none=True)
        logp, reg = cnf.log_prob(x, generator=g)
        nll = -logp.mean()
        loss = nll + cfg.kinetic * reg["kinetic"] + cfg.jacobian_norm * reg["jacobian"]
        loss.backward()
        optimizer.step()
        stats = cnf.last_stats
        return {"train_nll": float(nll.detach()), "kinetic": float(reg["kinetic"].detach()),
                "jacobian": float(reg["jacobian"].detach()), "nfe_f": stats.nfe,
                "nfe_b": stats.nfe_backward or 0}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        logp, _ = exact.log_prob(test_x)
        return {"test_nll": float(-logp.mean()), "nfe_test": exact.last_stats.nfe}

    def plot(run_dir: Path, history: list[dict[str, float]]) -> list[Path]:
        paths = plot_cnf(run_dir, cfg, exact, test_x)
        paths.append(plot_columns(history, ("train_nll", "test_nll"), run_dir / "nll.png",
                                  "negative log-likelihood (nats)"))
        paths.append(plot_columns(history, ("nfe_f", "nfe_b", "nfe_test"), run_dir / "nfe.png",
                                  "function evaluations per solve"))
        return paths

    task = StepTask(
        model=cnf,
        optimizer=optimizer,
        lr_fn=lambda k: cosine_lr(k, cfg.lr, cfg.lr_final, cfg.niters),
        train_step=train_step,
        evaluate=evaluate,
        fields=("train_nll", "test_nll", "kinetic", "jacobian", "nfe_f", "nfe_b", "nfe_test"),
        best_key="test_nll",
        plot=plot,
    )
    return {"task": task, "cnf": cnf, "test_x": test_x}


def plot_cnf(run_dir: Path, cfg: CNFConfig, cnf: CNF, data: torch.Tensor) -> list[Path]:
    """``density.png`` (learned density beside the data), ``samples.png`` and ``flow.png``
    (base samples pushed back to the data at several times)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lim, n = 4.5, 100
    grid = torch.linspace(-lim, lim, n)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)
    with torch.no_grad():
        density = cnf.log_prob(points)[0].exp().reshape(n, n)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    axes[0].hist2d(data[:, 0].numpy(), data[:, 1].numpy(), bins=n, range=[[-lim, lim]] * 2)
    axes[0].set_title(f"data ({cfg.data})")
    axes[1].imshow(density.numpy(), origin="lower", extent=(-lim, lim, -lim, lim))
    axes[1].set_title("learned density")
    paths = [save_figure(fig, run_dir / "density.png")]

    z = torch.randn(2000, 2, generator=torch.Generator().manual_seed(cfg.seed))
    times = torch.linspace(cfg.T, 0.0, 5)
    flow = cnf.sample(z, times)
    fig, ax = plt.subplots(1, 2, figsize=(8, 4))
    ax[0].scatter(data[:2000, 0], data[:2000, 1], s=1)
    ax[0].set_title("data")
    ax[1].scatter(flow[-1][:, 0], flow[-1][:, 1], s=1, color="C1")
    ax[1].set_title("samples")
    for a in ax:
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
    paths.append(save_figure(fig, run_dir / "samples.png"))

    fig, axes = plt.subplots(1, len(times), figsize=(3 * len(times), 3))
    for a, t, pts in zip(axes, times, flow, strict=True):
        a.scatter(pts[:, 0], pts[:, 1], s=1, c=z[:, 0], cmap="coolwarm")
        a.set_title(f"t = {float(t):.2f}")
        a.set_xlim(-lim, lim)
        a.set_ylim(-lim, lim)
        a.set_xticks([])
        a.set_yticks([])
    paths.append(save_figure(fig, run_dir / "flow.png"))
    return paths


def run(cfg: CNFConfig, log=print) -> dict[str, Any]:
    """Train ``cfg`` end to end; returns ``run_dir``, ``history``, ``seconds``, ``cnf``,
    and ``entropy`` (the data's own, for ``circles``; else ``None``)."""
    if cfg.dry_run:
        cfg = dataclasses.replace(cfg, niters=2, eval_every=1, batch_size=64, test_size=128,
                                  hidden=16)
    with start_run(cfg, f"cnf-{cfg.data}", log) as start:
        parts = build(cfg)
        entropy = None
        if cfg.data == "circles":
            entropy = float(-circles_log_prob(parts["test_x"]).mean())
            log(f"circles: the test samples' own NLL (the data's entropy) is {entropy:.4f} nats")
        log(f"cnf on {cfg.data}: {sum(p.numel() for p in parts['cnf'].parameters())} "
            f"parameters, trace {cfg.trace}, kinetic {cfg.kinetic}, jacobian "
            f"{cfg.jacobian_norm}, gradient {resolve_gradient(cfg)}, run folder {start.run_dir}")
        history, seconds = train_study(cfg, parts["task"], start, log)
    return {"run_dir": str(start.run_dir), "history": history, "cnf": parts["cnf"],
            "entropy": entropy, "seconds": seconds}


def main(
    argv: Sequence[str] | None = None, base: CNFConfig | None = None, prog: str | None = None
) -> dict[str, Any]:
    """``odeflow train cnf [flags]``."""
    return run_main(CNFConfig, run, argv, base, prog or "odeflow train cnf",
                    ("test_nll", "nfe_f", "nfe_b", "nfe_test"))
