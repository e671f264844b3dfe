"""Peak memory of S3's checkpointed training step, as the core does it and with the
previous replayed step's graph released before the next replay (a diagnosis, not a fix:
the patch lives in this process only).

    MALLOC_MMAP_THRESHOLD_=65536 python -m benchmarks.checkpoint_memory [as-is|release]

``gradient="checkpoint"`` replays one step at a time under autograd and calls
``torch.autograd.grad(..., retain_graph=True)`` (kept since 904c983 so that a tensor
computed once outside ``func`` from a parameter keeps its graph). With the graph
retained, the step's saved activations live as long as something references the
step's outputs: ``targets``/``grads`` of step k are rebound only after step k − 1 has
been replayed, so two steps' graphs are alive at the peak. ``release`` deletes them
right after the gradient call (same gradients, checked to the bit). Peak = VmHWM after
``clear_refs`` minus RSS before, median of 3 after a warm-up step, as S3 measures it.
"""

from __future__ import annotations

import inspect
import statistics
import sys
import textwrap

import torch


def _release_patch() -> None:
    import odeflow.sensitivity.checkpoint as ck

    src = textwrap.dedent(inspect.getsource(ck._Checkpoint.backward))
    line = "adj = got[0] if got[0] is not None else torch.zeros_like(adj)\n"
    i = src.index(line)
    indent = src[src.rindex("\n", 0, i) + 1:i]
    src = src.replace(indent + line, f"{indent}del targets, grads\n{indent}{line}")
    src = src.replace("@staticmethod\n", "")
    ns: dict = {}
    exec(compile(src, "checkpoint_backward_release", "exec"), ck.__dict__, ns)
    ck._Checkpoint.backward = staticmethod(ns["backward"])


def main(mode: str = "as-is") -> None:
    torch.set_num_threads(2)
    if mode == "release":
        _release_patch()
    import odeflow

    from .common import params_of
    from .s3 import ATOL, RTOL, make_problem
    from .worker import peak_rss_delta

    raw, y0, t = make_problem()
    params = params_of(raw)

    def step():
        y = y0.detach().requires_grad_(True)
        sol = odeflow.solve(raw, y, t, rtol=RTOL, atol=ATOL, method="dopri5",
                            gradient="checkpoint")
        return torch.autograd.grad(sol.ys[-1].pow(2).sum(), [y, *params])

    grads = step()
    mib = [peak_rss_delta(step)[0] / 2**20 for _ in range(3)]
    check = sum(float(g.double().abs().sum()) for g in grads)
    print(f"{mode}: peak {statistics.median(mib):.1f} MiB {[round(m, 1) for m in mib]}; "
          f"sum |grad| = {check!r}")


if __name__ == "__main__":
    main(*(sys.argv[1:2] or ["as-is"]))
