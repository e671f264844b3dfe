"""``odeflow train robertson``: a stiff neural ODE, Robertson's kinetics learned from data.

Robertson's three reactions (:mod:`.robertson_data`) have rate constants from 0.04 to 3e7:
the fast ones hold the intermediate ``y2`` at about 1e-5 while ``y1`` and ``y3`` change over
ten decades of time. The model keeps the mass-action form of the reactions and learns the
three rate constants (as ``log10 k``, each starting a factor ``10 ** --init-spread`` off,
up or down by the bits of ``--seed % 8``) from the three concentrations observed at
``--n-times`` times spaced evenly in ``log10 t`` over ``[--t-start, --t-end]``.

Two things make this trainable, both from Kim, Ji, Deng, Ma & Rackauckas, "Stiff neural
ordinary differential equations" (Chaos 31, 093122, 2021):

- a stiff (implicit) solver: ``--method rodas5p`` (Rosenbrock) by default, or
  ``kvaerno5`` (ESDIRK). An explicit method's step is bounded by stability, not
  accuracy, so dopri5 needs millions of steps where rodas5p needs a few hundred; the run
  ends with the same forward solve under ``--compare dopri5`` (capped at
  ``--compare-max-steps``) and reports both solvers' steps, evaluations, time and status;
- a loss on scaled outputs (``--scale True``): each species' error is divided by that
  species' largest value in the data, so ``y2`` (≈ 1e-5) counts as much as ``y1`` and
  ``y3`` (≈ 1). Without it ``y2`` is invisible in the loss and ``k2``, ``k3``, which act
  through ``y2``, are barely learned.

``metrics.csv``: ``step, lr, train_loss, test_loss, err_k1, err_k2, err_k3, k1, k2, k3,
nfe_f, nfe_b, steps_f, jac_f, lu_f, nfe_test, time``; ``err_k*`` are relative
errors ``|k - k_true| / k_true``, ``*_f`` the training forward solve's counters (per
step). ``solvers.json`` holds the side-by-side; figures: ``trajectories.png``,
``loss.png``, ``rates.png``, ``step_sizes.png``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import SolveError, solve
from ..training.errors import ConfigError, UserError
from .config import NON_NEGATIVE, POSITIVE, SOLVER, Check, at_least, opt
from .epochs import resolve_gradient
from .robertson_data import RATES, Y0, log_times, robertson_solution
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

__all__ = ["RobertsonConfig", "MassActionKinetics", "SolverFailedError", "initial_log10_rates",
           "scaled_mse", "compare_solvers", "build", "run", "main"]

NOISE_STEP = -1  # generator "step" of the observation noise: never a training step


class SolverFailedError(UserError):
    """The model's solve could not finish (typically: an explicit method on this stiff
    problem); the message names the solver, where it stopped and what to try."""


@dataclass
class RobertsonConfig(StepConfig):
    """Every setting of one Robertson run; each field is a command-line flag."""

    # observation window, spaced evenly in log10 t (the solve starts at t = 0); the data
    # define the task, so --resume refuses to change them (model=True)
    t_start: float = opt(1e-5, "first observation time", model=True, check=POSITIVE)
    t_end: float = opt(1e5, "last observation time", model=True, check=POSITIVE)
    n_times: int = opt(40, "observation times (training data)", model=True, check=at_least(1))
    n_test: int = opt(200, "times of the test trajectory (same span)", model=True,
                      check=at_least(1))
    # Gaussian noise, in units of each species' largest value
    noise: float = opt(0.0, "observation noise, as a fraction of each species' maximum",
                       model=True, check=NON_NEGATIVE)
    # the initial guess: each log10 k off by +-init_spread (signs: the bits of seed % 8)
    init_spread: float = opt(0.5, "initial log10 k = true +- this (signs: bits of --seed %% 8)",
                             check=NON_NEGATIVE)
    # Kim et al.'s loss scaling; False is the plain MSE, for comparison
    scale: bool = opt(True, "loss on outputs scaled by each species' maximum")
    method: str = opt("rodas5p", "ODE solver for the model (stiff: rodas5p, rodas4, kvaerno5)",
                      check=SOLVER)
    # checkpoint: the backprop gradient exactly, and here faster than building the graph of
    # every Rosenbrock step (None: checkpoint, or the adjoint with --adjoint True)
    gradient: str | None = opt(
        None, "direct | adjoint | checkpoint (default: checkpoint, or adjoint with --adjoint)",
        choices=("direct", "adjoint", "checkpoint"),
    )  # fmt: skip
    rtol: float = opt(1e-6, "relative tolerance of the model's solves", check=POSITIVE)
    atol: float = opt(1e-12, "absolute tolerance of the model's solves", check=POSITIVE)
    max_steps: int = opt(100_000, "step cap of the model's solves (max_num_steps)",
                         check=at_least(1))
    # the side-by-side at the end: the same forward solve with this method
    compare: str = opt("dopri5", "solver to compare with at the end ('none': skip)",
                       check=Check(lambda v: v == "none" or SOLVER.test(v),
                                   lambda: f"'none' or {SOLVER.describe()}"))
    compare_max_steps: int = opt(20_000, "step cap of the comparison solver", check=at_least(1))
    niters: int = opt(150, "number of optimisation steps", check=at_least(1))
    eval_every: int = opt(10, "steps between evaluations", check=at_least(1))
    lr: float = opt(0.05, "peak learning rate (Adam, on log10 k)", check=POSITIVE)
    lr_final: float = opt(0.1, "final learning rate as a fraction of --lr (cosine decay)",
                          check=NON_NEGATIVE)


    def validate(self) -> None:
        """Rules between flags (:func:`~odeflow.experiments.config.check_config`)."""
        if not self.t_start < self.t_end:
            raise ConfigError(f"--t-start {self.t_start:g}, --t-end {self.t_end:g}: expected "
                              f"0 < t-start < t-end")


class MassActionKinetics(nn.Module):
    """Robertson's reactions by mass action, with learnable ``log10`` rate constants.

    ``y1' = -k1 y1 + k3 y2 y3``, ``y2' = k1 y1 - k2 y2² - k3 y2 y3``, ``y3' = k2 y2²``.
    Rates are learned on a log scale: they differ by nine orders of magnitude, and Adam's
    steps are then relative changes of each rate alike.
    """

    def __init__(self, log10_rates: Sequence[float]) -> None:
        super().__init__()
        self.log10_k = nn.Parameter(torch.tensor(list(log10_rates), dtype=torch.float64))

    def rates(self) -> torch.Tensor:
        """``(k1, k2, k3)``."""
        return 10.0**self.log10_k

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        k1, k2, k3 = self.rates().unbind()
        y1, y2, y3 = y.unbind(-1)
        r1, r2, r3 = k1 * y1, k2 * y2 * y2, k3 * y2 * y3
        return torch.stack([-r1 + r3, r1 - r2 - r3, r2], dim=-1)


def initial_log10_rates(seed: int, spread: float) -> list[float]:
    """The initial guess: each true ``log10 k`` moved by ``±spread``.

    The signs are the bits of ``seed % 8`` (bit ``i`` set: ``k_{i+1}`` starts too high),
    so seeds 0–7 are the eight corners of the box around the truth; random signs would
    make several small seeds start from the same corner.
    """
    signs = [1.0 if (seed % 8) >> i & 1 else -1.0 for i in range(3)]
    return [math.log10(k) + spread * s for k, s in zip(RATES, signs, strict=True)]


def scaled_mse(pred: torch.Tensor, target: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Mean squared error of ``pred / scale`` against ``target / scale`` (per species)."""
    return (((pred - target) / scale) ** 2).mean()


def _counters(stats: Any) -> dict[str, float]:
    # the implicit counters are 0 for explicit methods
    return {"nfe": stats.nfe, "steps": stats.n_steps, "accepted": stats.n_accepted,
            "rejected": stats.n_rejected, "jacobians": stats.n_jacobians, "lu": stats.n_lu,
            "newton_iters": stats.n_newton_iters}


class _StepRecorder(nn.Module):
    """``func`` that records each accepted step's ``(t, dt)`` (for the step-size plot)."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.steps: list[tuple[float, float]] = []

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.func(t, y)

    def callback_accept_step(self, t0: torch.Tensor, y0: Any, dt: torch.Tensor) -> None:
        self.steps.append((float(t0), float(dt)))


def compare_solvers(
    func: nn.Module, t: torch.Tensor, methods: Sequence[str], *, rtol: float, atol: float,
    max_steps: int, reference: torch.Tensor | None = None, scale: torch.Tensor | None = None,
) -> list[dict[str, Any]]:
    """The same forward solve of ``func`` from ``Y0`` over ``t`` with each of ``methods``.

    Each entry: ``method``, ``status`` (a :class:`~odeflow.Status` name), ``t_reached``,
    ``seconds``, the counters (``nfe``, ``steps``, ``accepted``, ``rejected``,
    ``jacobians``, ``lu``, ``newton_iters``), ``max_scaled_error`` against ``reference``
    (when given and the solve finished) and ``step_sizes`` (accepted ``(t, dt)`` pairs).
    A failed solve is a result here, not an error.
    """
    y0 = torch.tensor(Y0, dtype=torch.float64)
    results = []
    for method in methods:
        recorder = _StepRecorder(func)
        start = time.perf_counter()
        entry: dict[str, Any] = {"method": method}
        try:
            with torch.no_grad():
                sol = solve(recorder, y0, t, method=method, rtol=rtol, atol=atol,
                            options={"max_num_steps": max_steps})
            stats, reached = sol.stats, float(t[-1])
            if reference is not None:
                err = (sol.ys[1:] - reference).abs() / (scale if scale is not None else 1.0)
                entry["max_scaled_error"] = float(err.max())
        except SolveError as exc:
            stats, reached = exc.stats, float(exc.t)
        entry.update(status=str(stats.status), t_reached=reached,
                     seconds=time.perf_counter() - start, **_counters(stats),
                     step_sizes=recorder.steps)
        results.append(entry)
    return results


def build(cfg: RobertsonConfig) -> dict[str, Any]:
    """Data, model, optimizer and the :class:`StepTask` of ``cfg``."""
    times = log_times(cfg.t_start, cfg.t_end, cfg.n_times)
    test_times = log_times(cfg.t_start, cfg.t_end, cfg.n_test)
    zero = torch.zeros(1, dtype=torch.float64)
    t_train, t_test = torch.cat([zero, times]), torch.cat([zero, test_times])
    clean = robertson_solution(times)
    test_y = robertson_solution(test_times)
    # each species' scale: its largest value in the data (y2's is about 3.6e-5)
    scale = clean.abs().amax(dim=0)
    noise = torch.randn(clean.shape, generator=step_gen(cfg.seed, NOISE_STEP),
                        dtype=torch.float64)
    data = clean + cfg.noise * scale * noise
    loss_scale = scale if cfg.scale else torch.ones_like(scale)

    func = MassActionKinetics(initial_log10_rates(cfg.seed, cfg.init_spread))
    init_state = {k: v.clone() for k, v in func.state_dict().items()}
    optimizer = torch.optim.Adam(func.parameters(), lr=cfg.lr)
    tol = dict(method=cfg.method, rtol=cfg.rtol, atol=cfg.atol,
               options={"max_num_steps": cfg.max_steps})
    gradient = resolve_gradient(cfg)
    y0 = torch.tensor(Y0, dtype=torch.float64)
    true = torch.tensor(RATES, dtype=torch.float64)

    def model_solve(t: torch.Tensor, **kwargs: Any) -> Any:
        try:
            return solve(func, y0, t, **tol, **kwargs)
        except SolveError as exc:
            raise SolverFailedError(
                f"--method {cfg.method} could not solve the model over [0, {cfg.t_end:g}]: "
                f"{exc.stats.status} at t={exc.t:.4g} after {exc.stats.n_steps} steps; "
                "Robertson's system is stiff: use --method rodas5p or kvaerno5 "
                "(or a much shorter --t-end)") from exc

    def rate_metrics() -> dict[str, float]:
        k = func.rates().detach()
        rel = ((k - true).abs() / true).tolist()
        return {**{f"err_k{i + 1}": r for i, r in enumerate(rel)},
                **{f"k{i + 1}": float(v) for i, v in enumerate(k)}}

    def train_step(k: int) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        sol = model_solve(t_train, gradient=gradient)
        loss = scaled_mse(sol.ys[1:], data, loss_scale)
        loss.backward()
        optimizer.step()
        s = sol.stats
        return {"train_loss": float(loss.detach()), "nfe_f": s.nfe,
                "nfe_b": s.nfe_backward or 0, "steps_f": s.n_steps, "jac_f": s.n_jacobians,
                "lu_f": s.n_lu}

    @torch.no_grad()
    def evaluate() -> dict[str, float]:
        sol = model_solve(t_test)
        # the test loss is always on scaled outputs, so runs with --scale False compare
        return {"test_loss": float(scaled_mse(sol.ys[1:], test_y, scale)),
                **rate_metrics(), "nfe_test": sol.stats.nfe}

    def plot(run_dir: Path, history: list[dict[str, float]]) -> list[Path]:
        with torch.no_grad():
            learned = model_solve(t_test).ys[1:]
            current = {k: v.clone() for k, v in func.state_dict().items()}
            func.load_state_dict(init_state)
            try:
                initial = solve(func, y0, t_test, throw=False, **tol).ys[1:]
            finally:
                func.load_state_dict(current)
        paths = [plot_trajectories(run_dir, test_times, test_y, learned, initial, times, data)]
        paths.append(plot_columns(history, ("train_loss", "test_loss"), run_dir / "loss.png",
                                  "scaled mean squared error", logy=True))
        paths.append(plot_columns(history, ("err_k1", "err_k2", "err_k3"),
                                  run_dir / "rates.png", "relative error of k", logy=True))
        return paths

    task = StepTask(
        model=func,
        optimizer=optimizer,
        lr_fn=lambda k: cosine_lr(k, cfg.lr, cfg.lr_final, cfg.niters),
        train_step=train_step,
        evaluate=evaluate,
        fields=("train_loss", "test_loss", "err_k1", "err_k2", "err_k3", "k1", "k2", "k3",
                "nfe_f", "nfe_b", "steps_f", "jac_f", "lu_f", "nfe_test"),
        best_key="test_loss",
        plot=plot,
    )
    return {"task": task, "func": func, "t_train": t_train, "data": data, "clean": clean,
            "scale": scale}


def plot_trajectories(run_dir: Path, t, true_y, learned, initial, t_obs, obs) -> Path:
    """``trajectories.png``: each species against ``log t``: data, truth, initial guess
    and the learned model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for j, ax in enumerate(axes):
        ax.plot(t, true_y[:, j], "-", color="k", lw=1, label="true")
        ax.plot(t, initial[:, j], ":", color="C7", label="initial guess")
        ax.plot(t, learned[:, j], "--", color="C1", label="learned")
        ax.plot(t_obs, obs[:, j], "o", ms=3, color="C0", label="data")
        ax.set_xscale("log")
        ax.set_xlabel("t")
        ax.set_title(f"y{j + 1}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return save_figure(fig, run_dir / "trajectories.png")


def plot_step_sizes(run_dir: Path, results: list[dict[str, Any]]) -> Path:
    """``step_sizes.png``: each compared solver's accepted step size against ``t``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        if r["step_sizes"]:
            ts, dts = zip(*r["step_sizes"], strict=True)
            ax.plot(ts, dts, ".", ms=2, label=f"{r['method']} ({r['steps']} steps, {r['status']})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("t")
    ax.set_ylabel("accepted step size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, run_dir / "step_sizes.png")


def describe(r: dict[str, Any], t_end: float) -> str:
    """One line of the side-by-side."""
    where = ""
    if r["status"] != "SUCCESS":
        where = f", stopped at t = {r['t_reached']:.4g} of {t_end:g}"
    implicit = f", {r['jacobians']} Jacobians, {r['lu']} LU" if r["jacobians"] else ""
    err = f", max scaled error {r['max_scaled_error']:.2g}" if "max_scaled_error" in r else ""
    return (f"  {r['method']:<9} {r['status']:<18} {r['steps']:>7} steps "
            f"({r['rejected']} rejected), {r['nfe']} evaluations{implicit}, "
            f"{r['seconds']:.2f} s{where}{err}")


def _compare(cfg: RobertsonConfig, parts: dict[str, Any], run_dir: Path,
             history: list[dict[str, float]], seconds: float, log=print) -> list[dict[str, Any]]:
    """The side-by-side at the end of a run: the learned model's forward solve with
    ``--method`` and ``--compare``, logged and written to ``solvers.json``."""
    func = parts["func"]
    methods = [cfg.method] + ([cfg.compare] if cfg.compare not in ("none", cfg.method) else [])
    same = dict(rtol=cfg.rtol, atol=cfg.atol, reference=parts["clean"], scale=parts["scale"])
    # the model's own method keeps the training's step cap; the compared one gets
    # --compare-max-steps, so that a hopeless solve ends soon
    comparison = compare_solvers(func, parts["t_train"], methods[:1],
                                 max_steps=cfg.max_steps, **same)
    comparison += compare_solvers(func, parts["t_train"], methods[1:],
                                  max_steps=cfg.compare_max_steps, **same)
    log(f"the learned model's forward solve over [0, {cfg.t_end:g}] "
        f"({cfg.n_times} output times, rtol {cfg.rtol}, atol {cfg.atol}; "
        f"{cfg.compare} capped at {cfg.compare_max_steps} steps):")
    for r in comparison:
        log(describe(r, cfg.t_end))
    saved = [{k: v for k, v in r.items() if k != "step_sizes"} for r in comparison]
    (run_dir / "solvers.json").write_text(json.dumps(saved, indent=2) + "\n")
    if cfg.plots:
        log(f"wrote {plot_step_sizes(run_dir, comparison)}")
    row = history[-1]
    log(f"test_loss {row['test_loss']:.3g} (scaled MSE), "
        f"{seconds / max(row['step'], 1):.2f} s per step; rates: " + ", ".join(
        f"k{i} {row[f'k{i}']:.4g} (true {RATES[i - 1]:g}, error {100 * row[f'err_k{i}']:.3g}%)"
        for i in (1, 2, 3)))
    return comparison


def run(cfg: RobertsonConfig, log=print) -> dict[str, Any]:
    """Train ``cfg`` end to end, then compare solvers on the learned model; returns
    ``run_dir``, ``history``, ``seconds``, ``func``, ``comparison``."""
    if cfg.dry_run:
        cfg = dataclasses.replace(cfg, t_end=1.0, n_times=8, n_test=16, niters=2,
                                  eval_every=1, compare_max_steps=50)
    if cfg.gradient is None and not cfg.adjoint:
        cfg = dataclasses.replace(cfg, gradient="checkpoint")
    with start_run(cfg, "robertson", log) as start:
        run_dir = start.run_dir
        parts = build(cfg)
        func = parts["func"]
        k0 = ", ".join(f"{float(k):.3g}" for k in func.rates().detach())
        log(f"robertson: rates k1, k2, k3 = {', '.join(f'{k:g}' for k in RATES)}; initial guess "
            f"{k0}; {cfg.n_times} times in [{cfg.t_start:g}, {cfg.t_end:g}], {cfg.method} "
            f"rtol {cfg.rtol} atol {cfg.atol}, gradient {resolve_gradient(cfg)}, "
            f"loss {'scaled' if cfg.scale else 'unscaled'}, run folder {run_dir}")
        # a SolverFailedError before the first checkpoint leaves no folder (start_run)
        history, seconds = train_study(cfg, parts["task"], start, log)

        comparison = _compare(cfg, parts, run_dir, history, seconds, log) if history else []
    return {"run_dir": str(run_dir), "history": history, "func": func, "seconds": seconds,
            "comparison": comparison}


def main(
    argv: Sequence[str] | None = None, base: RobertsonConfig | None = None,
    prog: str | None = None,
) -> dict[str, Any]:
    """``odeflow train robertson [flags]``."""
    return run_main(RobertsonConfig, run, argv, base, prog or "odeflow train robertson",
                    ("err_k1", "err_k2", "err_k3"))
