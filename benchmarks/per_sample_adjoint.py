"""Per-sample adjoint: each sample of a batch has its own output times, gradient by the adjoint.

The workload of ``per_sample_outputs`` (``B`` van der Pol oscillators, each with ``T`` output
times of its own in [0, 10], dopri5, rtol = atol = 1e-6, float64, one thread) with ``μ`` a
parameter; the loss is the sum of squares of every output. Timed: forward and backward
together, round-robin in one process (median of ``--reps``):

* odeflow per-sample, ``gradient="adjoint"`` (one backward solve landing on every sample's
  output times);
* odeflow per-sample, ``gradient="direct"`` (backpropagation through the steps);
* torchode per-sample (``t_eval`` a ``(B, T)`` tensor, backpropagation through its steps).

Also prints the relative difference (2-norm) of the adjoint's ``∂L/∂μ`` and ``∂L/∂y0`` from
direct's.

The plain adjoint solves ``y`` backwards, and van der Pol's attracting cycle repels
backwards in time: with few output times (``--times 10``) ``y`` diverges between the restarts
at the outputs and some samples' backward solves stop with step-size underflow (a22c9f2 too).

Run: ``python -m benchmarks.per_sample_adjoint [--batch 64] [--times 200] [--reps 5]``.
"""

from __future__ import annotations

import argparse

import torch

import odeflow

from .per_sample_outputs import print_medians, time_rounds, workload

F64 = torch.float64


def contenders(batch: int, times: int):
    _, y0, grid = workload(batch, times)
    g = torch.Generator().manual_seed(0)
    mu = (0.5 + 4.5 * torch.rand(batch, generator=g, dtype=F64)).requires_grad_(True)
    y0 = y0.requires_grad_(True)

    def vdp(t, y):
        x, v = y.unbind(-1)
        return torch.stack((v, mu * (1 - x * x) * v - x), -1)

    def odeflow_run(gradient):
        def go():
            ys = odeflow.solve(vdp, y0, grid, rtol=1e-6, atol=1e-6, gradient=gradient,
                               adjoint_params=(mu,), options={"per_sample": True}).ys
            return torch.autograd.grad(ys.pow(2).sum(), (mu, y0))
        return go

    out = {"odeflow adjoint": odeflow_run("adjoint"), "odeflow direct": odeflow_run("direct")}
    try:
        import torchode as to
    except ImportError:
        print("torchode is not installed (pip install '.[bench]'): its row is skipped")
        return out
    term = to.ODETerm(vdp)
    solver = to.AutoDiffAdjoint(to.Dopri5(term=term),
                                to.IntegralController(atol=1e-6, rtol=1e-6, term=term))

    def torchode():
        ys = solver.solve(to.InitialValueProblem(y0=y0, t_eval=grid)).ys
        return torch.autograd.grad(ys.pow(2).sum(), (mu, y0))
    out["torchode direct"] = torchode
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--times", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    grads, seconds = time_rounds(contenders(args.batch, args.times), args.reps)
    print(f"B={args.batch}, {args.times} own output times per sample, dopri5, float64, "
          f"forward + backward, median of {args.reps}, one thread (odeflow at "
          f"{odeflow.__file__})")
    print_medians(seconds, "odeflow adjoint", 20)
    for which, k in (("dL/dmu", 0), ("dL/dy0", 1)):
        a, d = grads["odeflow adjoint"][k], grads["odeflow direct"][k]
        print(f"  adjoint vs direct {which}: |difference| / |direct| = "
              f"{float((a - d).norm() / d.norm()):.1e}")


if __name__ == "__main__":
    main()
