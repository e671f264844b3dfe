"""Side-by-side runs of torchdiffeq's examples (``tools/torchdiffeq_suite.py example --seed``).

Imported before the example script starts (through a ``sitecustomize`` the suite tool
writes): seeds ``random``, NumPy and torch from ``TDQ_SEED``, and at exit prints (lines
tagged ``[harness]``) the wall time, a checksum of the trained parameters, the small
learned parameters, event times, and the NFE of one final forward solve. The example
scripts themselves are not modified.
"""

import atexit
import os
import sys
import time
import traceback

_T0 = time.perf_counter()
if os.environ.get("TDQ_SEED"):
    import random

    import numpy as np
    import torch

    _seed = int(os.environ["TDQ_SEED"])
    random.seed(_seed)
    np.random.seed(_seed)
    torch.manual_seed(_seed)


def _counting(torch, func):
    class Count(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f, self.n = func, 0

        def forward(self, t, y):
            self.n += 1
            return self.f(t, y)

    return Count()


def _final_solve(torch, main, ode, func):
    name = os.path.basename(sys.argv[0])
    if name == "ode_demo.py":
        c = _counting(torch, func)
        with torch.no_grad():
            y = ode(c, main.true_y0, main.t)
            loss = torch.mean(torch.abs(y - main.true_y)).item()
        print(f"[harness] final test solve: NFE {c.n}, loss {loss:.6f}")
    elif name == "latent_ode.py":
        c = _counting(torch, func)
        with torch.no_grad():
            z = ode(c, main.z0.detach(), main.samp_ts)
        print(f"[harness] final latent solve: NFE {c.n}, |z(T)| sum {z[-1].abs().sum().item():.6f}")
    elif name == "cnf.py":
        torch.manual_seed(123)
        x, logp = main.get_batch(main.args.num_samples)
        c = _counting(torch, func)
        times = torch.tensor([main.t1, main.t0]).float()
        zt, logpt = ode(c, (x, logp), times, atol=1e-5, rtol=1e-5, method="dopri5")
        nll = -(main.p_z0.log_prob(zt[-1]) - logpt[-1].view(-1)).mean().item()
        print(f"[harness] final cnf solve (fixed batch, seed 123): NFE {c.n}, NLL {nll:.6f}")


def _report():
    try:
        import torch

        main = sys.modules.get("__main__")
        backend = sys.modules.get("torchdiffeq")
        if backend is None:
            return
        print(f"[harness] backend module: {getattr(backend, '__file__', None)}")
        print(f"[harness] wall {time.perf_counter() - _T0:.1f} s")
        for name in ("func", "rec", "dec", "model", "system"):
            obj = getattr(main, name, None)
            if isinstance(obj, torch.nn.Module):
                total = sum(p.detach().double().abs().sum().item() for p in obj.parameters())
                print(f"[harness] {name}: sum|param| = {total:.10g}")
                for pn, p in obj.named_parameters():
                    if p.numel() <= 2:
                        print(f"[harness]   {name}.{pn} = {p.detach().reshape(-1).tolist()}")
        events = getattr(main, "event_times", None)
        if events is not None:
            flat = events.reshape(-1) if hasattr(events, "reshape") else events
            print("[harness] event_times = [" + ", ".join(f"{float(v):.10f}" for v in flat) + "]")
        ode = getattr(main, "odeint", None) or getattr(backend, "odeint", None)
        _final_solve(torch, main, ode, getattr(main, "func", None))
    except Exception as exc:  # report, never mask the script's own exit status
        traceback.print_exc()
        print(f"[harness] report failed: {exc!r}")


atexit.register(_report)
