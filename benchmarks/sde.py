"""SDE — ``odeflow.sde`` against torchsde 0.2.6, same problems, same run, fixed steps.

Cases (the SDE issue's workloads), float32, ``dt`` = 1e-2 on t ∈ [0, 1] (100 steps):

* ``gbm srk``: geometric Brownian motion ``dy = μ y dt + σ y dW`` (Itô, diagonal noise,
  per-channel μ, σ), batch 4096 × 8, ``srk``, forward under ``torch.no_grad``. Accuracy:
  the strong error E|y(1) − y_exact(1)| against the closed form
  ``y0 exp((μ − σ²/2) t + σ W(t))`` on the path each row was driven by (``W(1)`` read back
  from that row's Brownian motion).
* ``latent euler``: a latent-SDE-like model, batch 256, dim 16: drift
  ``Linear(16, 64)-Tanh-Linear(64, 16)``, diffusion ``softplus(w ⊙ y + b)`` (diagonal),
  Itô, ``euler``; forward (no grad) and forward + backward of ``Σ ys²`` w.r.t. ``y0`` and
  every parameter, with 11 output times.
* ``latent reversible_heun``: the same model as a Stratonovich SDE, ``reversible_heun``,
  forward and forward + backward.

Every row builds its Brownian motion inside the timed call (as a training step does):
each library's own ``BrownianInterval(t0=0, t1=1, size, dt=1e-2, entropy=SEED,
levy_area_approximation=...)`` with the Lévy area the method needs. The extra rows
``odeflow sdeint, torchsde's BM`` drive odeflow's solver with torchsde's Brownian
interval: the same path as the torchsde row, and the solver's time without odeflow's
Brownian motion. Gradients: odeflow backprops through the solver; ``sdeint_adjoint`` is
not in odeflow yet (its row says so, and starts working when it lands); torchsde's
``sdeint_adjoint`` (``adjoint_reversible_heun`` for reversible Heun) is a reference row.

Equal accuracy, latent cases: a check outside the timing solves each case in float64 with
both libraries on one shared precomputed path (:class:`GridBrownian`: ``W`` on the ``dt``
grid, queries rounded to it) and reports the largest |Δy| and the largest relative
gradient difference against torchsde's ``sdeint``. A shared ``BrownianInterval`` is not
the same path for both: the libraries compute their step times differently (torchsde
accumulates ``t + dt``, odeflow takes ``t0 + k dt``), and torchsde's interval splits its
tree at the query points, so a query at 0.30000000000000004 instead of 0.3 draws a
different path from there on (measured: |Δy| up to 0.15 from t = 0.3).

Target (SDE issue): odeflow ≤ 0.5× torchsde's time on each case, at equal accuracy.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .common import Unavailable, describe_error, log, make_row, round_robin, selected

DT = 1e-2
T1 = 1.0
SEED = 20240601
GBM_SIZE = (4096, 8)
LATENT_SIZE = (256, 16)
HIDDEN = 64
N_OUT = 11
TARGET = 0.5
QUICK = {"gbm": (256, 8), "latent": (32, 16)}
MEMORY_STEPS = (100, 400, 1600)

# (case, method, sde_type, gradient modes)
CASES = [
    ("gbm srk", "srk", "ito", ("forward",)),
    ("latent euler", "euler", "ito", ("forward", "fwd+bwd")),
    ("latent reversible_heun", "reversible_heun", "stratonovich", ("forward", "fwd+bwd")),
]
ADJOINT_METHOD = {"euler": "euler", "reversible_heun": "adjoint_reversible_heun"}
LEVY = {"srk": "space-time", "euler": "none", "reversible_heun": "none"}
# (label, solver library, Brownian-motion library, adjoint); reference rows for the target
CONTENDERS = [
    ("odeflow sdeint", "odeflow", "odeflow", False),
    ("torchsde sdeint", "torchsde", "torchsde", False),
    ("odeflow sdeint, torchsde's BM", "odeflow", "torchsde", False),
    ("odeflow sdeint_adjoint", "odeflow", "odeflow", True),
    ("torchsde sdeint_adjoint (reference)", "torchsde", "torchsde", True),
]
REFERENCE = "torchsde sdeint"


# --------------------------------------------------------------------------------------
# Models (each counts its drift and diffusion calls)
# --------------------------------------------------------------------------------------
class _Counting(nn.Module):
    def reset(self) -> None:
        self.nf = 0
        self.ng = 0

    @property
    def nfe(self) -> int:
        return self.nf + self.ng


class GBM(_Counting):
    """``dy = μ y dt + σ y dW``, diagonal Itô noise, per-channel μ and σ."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, d: int, dtype=torch.float32):
        super().__init__()
        self.register_buffer("mu", torch.linspace(-0.5, 0.5, d, dtype=dtype))
        self.register_buffer("sigma", torch.linspace(0.1, 0.8, d, dtype=dtype))
        self.reset()

    def f(self, t, y):
        self.nf += 1
        return self.mu * y

    def g(self, t, y):
        self.ng += 1
        return self.sigma * y

    def exact(self, y0, W, t):
        return y0 * torch.exp((self.mu - 0.5 * self.sigma ** 2) * t + self.sigma * W)


class LatentSDE(_Counting):
    """MLP drift ``Linear-Tanh-Linear`` and diagonal diffusion ``softplus(w ⊙ y + b)``."""

    noise_type = "diagonal"

    def __init__(self, d: int, sde_type: str, hidden: int = HIDDEN, dtype=torch.float32):
        super().__init__()
        self.sde_type = sde_type
        gen = torch.Generator().manual_seed(7)
        self.net = nn.Sequential(nn.Linear(d, hidden), nn.Tanh(), nn.Linear(hidden, d))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) / math.sqrt(p.shape[-1]))
        self.w = nn.Parameter(0.1 * torch.randn(d, generator=gen))
        self.b = nn.Parameter(torch.full((d,), -1.0))
        self.to(dtype)
        self.reset()

    def f(self, t, y):
        self.nf += 1
        return self.net(y)

    def g(self, t, y):
        self.ng += 1
        return nn.functional.softplus(self.w * y + self.b)


# --------------------------------------------------------------------------------------
# Runners
# --------------------------------------------------------------------------------------
def _lib(name: str):
    if name == "odeflow":
        try:
            import odeflow.sde as lib
        except ImportError as e:
            raise Unavailable(f"odeflow.sde is missing ({describe_error(e)})") from e
        return lib
    try:
        import torchsde as lib
    except ImportError as e:
        raise Unavailable("torchsde is not installed (pip install '.[test]')") from e
    return lib


def _runner(sde, y0, ts, method, grad, solver_lib, bm_lib, adjoint, keep):
    """One timed call: a fresh Brownian interval, one solve, (backward); returns stats."""
    solver, bml = _lib(solver_lib), _lib(bm_lib)
    size, levy = tuple(y0.shape), LEVY[method]
    dtype = y0.dtype
    if adjoint and grad != "fwd+bwd":
        raise Unavailable("adjoint rows are timed forward + backward only")
    params = [p for p in sde.parameters() if p.requires_grad]
    kw = dict(method=method, dt=DT)
    if adjoint:
        fn = solver.sdeint_adjoint
        kw["adjoint_method"] = ADJOINT_METHOD[method]
    else:
        fn = solver.sdeint

    def run():
        nf0, ng0 = sde.nf, sde.ng
        bm = bml.BrownianInterval(t0=0.0, t1=T1, size=size, dtype=dtype, entropy=SEED, dt=DT,
                                  levy_area_approximation=levy)
        grads = None
        if grad == "forward":
            with torch.no_grad():
                ys = fn(sde, y0, ts, bm=bm, **kw)
            nf, ng = sde.nf - nf0, sde.ng - ng0
        else:
            y = y0.detach().requires_grad_(True)
            ys = fn(sde, y, ts, bm=bm, **kw)
            nf, ng = sde.nf - nf0, sde.ng - ng0
            grads = torch.autograd.grad(ys.pow(2).sum(), [y, *params])
        nfe = nf + ng
        nfe_bwd = sde.nf + sde.ng - nf0 - ng0 - nfe
        out = {"nfe": nfe, "nfe_bwd": nfe_bwd, "nfe_drift": nf, "nfe_diffusion": ng,
               "steps": math.ceil(T1 / DT - 1e-9)}
        if solver_lib == "odeflow" and not adjoint:
            st = solver.last_stats()
            out["steps"] = int(st.n_steps)
        keep["ys"], keep["bm"], keep["grads"] = ys.detach(), bm, grads
        return out

    return run


class GridBrownian:
    """A shared precomputed path: ``W`` on the grid ``k dt`` (float64), increments between
    the grid points nearest the query times. Both libraries take it (duck-typed), so both
    solvers see exactly the same increments whatever times they compute. With
    ``return_U`` (one grid cell only) it also gives the space-time integral
    ``U = ∫ (W(s) − W(a)) ds = h dW / 2 + h H``, ``H ~ N(0, h/12)`` drawn per cell."""

    levy_area_approximation = "space-time"

    def __init__(self, size, n: int, dt: float, seed: int, dtype=torch.float64):
        gen = torch.Generator().manual_seed(seed)
        dW = torch.randn((n, *size), generator=gen, dtype=torch.float64) * math.sqrt(dt)
        H = torch.randn((n, *size), generator=gen, dtype=torch.float64) * math.sqrt(dt / 12)
        self.W = torch.cat([torch.zeros((1, *size), dtype=torch.float64),
                            dW.cumsum(0)]).to(dtype)
        self.U = (dt * (0.5 * dW + H)).to(dtype)
        self.dt, self.n = dt, n
        self.shape, self.dtype, self.device = tuple(size), dtype, torch.device("cpu")

    def size(self):
        return self.shape

    def _k(self, t) -> int:
        k = round(float(t) / self.dt)
        if not 0 <= k <= self.n or abs(k * self.dt - float(t)) > 1e-6 * self.dt:
            raise ValueError(f"query time {float(t)!r} is not on the grid of {self.dt}")
        return k

    def __call__(self, ta, tb=None, return_U=False, return_A=False):
        if return_A:
            raise ValueError("the grid path has no Lévy area A")
        if tb is None:
            return self.W[self._k(ta)]
        ka, kb = self._k(ta), self._k(tb)
        dW = self.W[kb] - self.W[ka]
        if return_U:
            if kb != ka + 1:
                raise ValueError("U is known for single grid cells only")
            return dW, self.U[ka]
        return dW

    def __repr__(self):
        return f"GridBrownian(dt={self.dt}, n={self.n})"


def _bare(fn, y0):
    t = torch.tensor(0.0)

    def call():
        with torch.no_grad():
            return fn(t, y0)

    return call


def _same_path_check(method: str, sde_type: str, size, only, gbm: bool = False) -> dict:
    """float64, one shared :class:`GridBrownian` path: max |Δy| and the largest relative
    gradient difference of every solver against torchsde's sdeint (see the module doc);
    for GBM also each solver's strong error against the closed form on that path."""
    out = {}
    if gbm:
        sde = GBM(size[1], dtype=torch.float64)
        y0 = torch.ones(size, dtype=torch.float64)
    else:
        sde = LatentSDE(size[1], sde_type, dtype=torch.float64)
        y0 = torch.randn(size, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    ts = torch.linspace(0.0, T1, N_OUT, dtype=torch.float64)
    params = list(sde.parameters())
    res = {}
    for label, lib, _, adjoint in CONTENDERS:
        if label == "odeflow sdeint, torchsde's BM" or (adjoint and gbm) or (
                not selected(label, only) and label != REFERENCE):
            continue
        solver = _lib(lib)
        fn = solver.sdeint_adjoint if adjoint else solver.sdeint
        kw = dict(method=method, dt=DT)
        if adjoint:
            kw["adjoint_method"] = ADJOINT_METHOD[method]
        bm = GridBrownian(size, math.ceil(T1 / DT - 1e-9), DT, SEED)
        y = y0.clone().requires_grad_(True)
        try:
            ys = fn(sde, y, ts, bm=bm, **kw)
            g = torch.autograd.grad(ys.pow(2).sum(), [y, *params]) if params else [
                torch.autograd.grad(ys.pow(2).sum(), y)[0]]
        except NotImplementedError as e:
            out[label] = {"status": f"unavailable: NotImplementedError: {e}"}
            continue
        res[label] = (ys.detach(), g)
        if gbm:
            err = (ys[-1].detach() - sde.exact(y0, bm(0.0, T1), T1)).abs()
            out[label] = {"strong_error": err.mean().item(),
                          "strong_error_rms": err.pow(2).mean().sqrt().item()}
    ref = res.get(REFERENCE)
    for label, (ys, g) in res.items():
        if ref is None:
            break
        rel = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()
                  for a, b in zip(g, ref[1]))
        out.setdefault(label, {}).update({
            "max_abs_dy": (ys - ref[0]).abs().max().item(), "max_rel_dgrad": rel,
            "y_scale": ref[0].abs().max().item()})
    return out


def run(quick: bool, reps: int | None, compile: bool = True,
        only: list[str] | None = None) -> dict:
    reps = reps or (2 if quick else 7)
    gbm_size = QUICK["gbm"] if quick else GBM_SIZE
    lat_size = QUICK["latent"] if quick else LATENT_SIZE
    rows = []
    for case, method, sde_type, grads in CASES:
        is_gbm = case.startswith("gbm")
        size = gbm_size if is_gbm else lat_size
        if is_gbm:
            sde = GBM(size[1])
            y0 = torch.ones(size)
        else:
            sde = LatentSDE(size[1], sde_type)
            y0 = torch.randn(size, generator=torch.Generator().manual_seed(1))
        ts = torch.linspace(0.0, T1, N_OUT)
        check = _same_path_check(method, sde_type, size, only, gbm=is_gbm)
        for grad in grads:
            full = f"{case} {grad}"
            runners, pre, keeps = {}, {}, {}
            for label, slib, blib, adjoint in CONTENDERS:
                if not selected(label, only) or (adjoint and grad != "fwd+bwd"):
                    continue
                keeps[label] = {}
                try:
                    runners[label] = _runner(sde, y0, ts, method, grad, slib, blib, adjoint,
                                             keeps[label])
                except Unavailable as e:
                    pre[label] = {"status": f"unavailable: {e}"}
            log(f"sde {full}: {len(runners)} contenders x {reps} reps")
            bare = {"f": _bare(sde.f, y0), "g": _bare(sde.g, y0)}
            outcomes, costs = round_robin(runners, reps, bare, label=f"sde {full}")
            bf, bg = (sorted(costs[k])[len(costs[k]) // 2] for k in ("f", "g"))
            outcomes.update(pre)
            for label, *_ in CONTENDERS:
                if label not in outcomes:
                    continue
                o = outcomes[label]
                row = make_row(full, label, o, problem=case.split()[0], method=method,
                               sde_type=sde_type, gradient=grad,
                               batch=list(size), dt=DT, reference=REFERENCE)
                if o["status"] == "ok":
                    # The user's functions alone (forward, no grad): the floor of a
                    # forward solve with these calls; fwd+bwd adds their backward.
                    row["bare_f_us"], row["bare_g_us"] = bf * 1e6, bg * 1e6
                    row["fg_floor_s"] = row["nfe_drift"] * bf + row["nfe_diffusion"] * bg
                k = keeps.get(label) or {}
                if o["status"] == "ok" and is_gbm and "ys" in k:
                    exact = sde.exact(y0, k["bm"](0.0, T1), T1)
                    err = (k["ys"][-1] - exact).abs()
                    row["strong_error"] = err.mean().item()
                    row["strong_error_rms"] = err.pow(2).mean().sqrt().item()
                if label in check:
                    row["same_path_float64"] = check[label]
                rows.append(row)
            # Paired ratio against torchsde sdeint: round k's time over round k's.
            ref = next((r for r in rows if r["case"] == full and r["contender"] == REFERENCE
                        and r["status"] == "ok"), None)
            for r in rows:
                if r["case"] == full and ref and r["status"] == "ok" and r is not ref:
                    ratios = sorted(a / b for a, b in zip(r["time"]["all"],
                                                          ref["time"]["all"]))
                    if ratios:
                        r["vs_torchsde_paired"] = ratios[len(ratios) // 2]
    memory = adjoint_memory(lat_size, (25, 100) if quick else MEMORY_STEPS, only)
    return {
        "memory": memory,
        "config": {"dt": DT, "t": [0.0, T1], "output_times": N_OUT, "dtype": "float32",
                   "gbm_batch": list(gbm_size), "latent_batch": list(lat_size),
                   "hidden": HIDDEN, "seed": SEED, "reps": reps,
                   "threads": torch.get_num_threads(), "target": TARGET,
                   "versions_extra": {"torchsde": _torchsde_version()}},
        "rows": rows,
        "reference": REFERENCE,
    }


MEMORY_CONTENDERS = {"odeflow sdeint_adjoint": ("odeflow", True),
                     "torchsde sdeint_adjoint (reference)": ("torchsde", True),
                     "odeflow sdeint": ("odeflow", False)}


def _memory_child(label: str, n: int, size: list[int]) -> None:
    """In a fresh process: one latent reversible-Heun fwd+bwd with ``n`` steps; prints the
    growth of the process's peak RSS (``VmHWM``) over the call, in bytes, as JSON."""
    import json

    from .worker import _status_kb

    torch.set_num_threads(1)
    slib, adjoint = MEMORY_CONTENDERS[label]
    solver = _lib(slib)
    fn = solver.sdeint_adjoint if adjoint else solver.sdeint
    kw = {"adjoint_method": "adjoint_reversible_heun"} if adjoint else {}
    sde = LatentSDE(size[1], "stratonovich")
    y0 = torch.randn(size, generator=torch.Generator().manual_seed(1))
    before = _status_kb("VmHWM")
    bm = solver.BrownianInterval(t0=0.0, t1=T1, size=tuple(size), entropy=SEED, dt=T1 / n)
    y = y0.detach().requires_grad_(True)
    ys = fn(sde, y, torch.tensor([0.0, T1]), bm=bm, method="reversible_heun", dt=T1 / n, **kw)
    torch.autograd.grad(ys.pow(2).sum(), [y, *sde.parameters()])
    print(json.dumps((_status_kb("VmHWM") - before) * 1024))


def adjoint_memory(size, steps, only) -> dict:
    """Peak-RSS growth of one latent reversible-Heun fwd+bwd, per number of steps.

    Each figure is a fresh process (the kernel's high-water mark cannot always be reset in
    place): ``VmHWM`` after the call minus before it, so one-time allocations of the first
    call are included alike at every step count; what grows with the steps is the solver's.
    """
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
    out: dict = {}
    for label in MEMORY_CONTENDERS:
        if not selected(label, only):
            continue
        out[label] = {}
        for n in steps:
            code = ("from benchmarks.sde import _memory_child; "
                    f"_memory_child({label!r}, {n}, {list(size)})")
            res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                 cwd=root, env=env)
            if res.returncode:
                out[label] = {"status": "error: " + (res.stderr.strip().splitlines() or ["?"])[-1]}
                break
            out[label][n] = json.loads(res.stdout.strip().splitlines()[-1])
            log(f"sde memory {label}, {n} steps: {out[label][n] / 2**20:.1f} MiB")
    return {"case": f"latent reversible_heun fwd+bwd, batch {list(size)}, t in [0, 1], "
                    "2 output times, float32, one thread", "peak_rss_growth_bytes": out}


def _torchsde_version() -> str:
    try:
        import torchsde

        return str(torchsde.__version__)
    except Exception as e:  # absent: say why
        return f"missing ({type(e).__name__})"


# --------------------------------------------------------------------------------------
# Profile jobs (``python -m benchmarks profile sde-gbm|sde-latent|sde-revheun``)
# --------------------------------------------------------------------------------------
def profile_job(which: str):
    """``(model, one, n, what)`` for :func:`benchmarks.profile.profile`: one odeflow
    solve of a case, with its Brownian interval built inside, as the benchmark times it."""
    from types import SimpleNamespace

    import odeflow.sde as osde

    case = {"sde-gbm": CASES[0], "sde-latent": CASES[1], "sde-revheun": CASES[2]}[which]
    name, method, sde_type, _ = case
    grad = "forward" if which == "sde-gbm" else "fwd+bwd"
    if which == "sde-gbm":
        sde, y0 = GBM(GBM_SIZE[1]), torch.ones(GBM_SIZE)
    else:
        sde = LatentSDE(LATENT_SIZE[1], sde_type)
        y0 = torch.randn(LATENT_SIZE, generator=torch.Generator().manual_seed(1))
    ts = torch.linspace(0.0, T1, N_OUT)
    run1 = _runner(sde, y0, ts, method, grad, "odeflow", "odeflow", False, {})

    def one():
        run1()
        return SimpleNamespace(stats=osde.last_stats())

    n = 3 if which == "sde-gbm" else 10
    return sde, one, n, (f"odeflow sdeint, {name} ({method}), {grad}, batch "
                         f"{tuple(y0.shape)}, dt {DT}, its BrownianInterval built inside "
                         f"({n} solves, per-solve figures)")
