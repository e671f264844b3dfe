"""Side-by-side runs of torchdiffeq's examples (``tools/torchdiffeq_suite.py example --seed``).

Imported before the example script starts (through a ``sitecustomize`` the suite tool
writes): seeds ``random``, NumPy and torch from ``TDQ_SEED``, and at exit prints (lines
tagged ``[harness]``) the wall time, a checksum of the trained parameters, the small
learned parameters, event times, and the NFE of one final forward solve. The example
scripts themselves are not modified.
"""
import atexit, os, sys, time  # noqa: E401
_T0 = time.perf_counter()
if os.environ.get("TDQ_SEED"):
    import random, numpy as np, torch
    _s = int(os.environ["TDQ_SEED"])
    random.seed(_s); np.random.seed(_s); torch.manual_seed(_s)

def _report():
    try:
        import torch
        m = sys.modules.get("__main__")
        be = sys.modules.get("torchdiffeq")
        if be is None:
            return
        print(f"[harness] backend module: {getattr(be, '__file__', None)}")
        print(f"[harness] wall {time.perf_counter() - _T0:.1f} s")
        for name in ("func", "rec", "dec", "model", "system"):
            obj = getattr(m, name, None)
            if isinstance(obj, torch.nn.Module):
                s = sum(p.detach().double().abs().sum().item() for p in obj.parameters())
                print(f"[harness] {name}: sum|param| = {s:.10g}")
                for pn, p in obj.named_parameters():
                    if p.numel() <= 2:
                        print(f"[harness]   {name}.{pn} = {p.detach().reshape(-1).tolist()}")
        ev = getattr(m, "event_times", None)
        if ev is not None:
            vals = [float(e) for e in (ev.reshape(-1) if hasattr(ev, "reshape") else ev)]
            print("[harness] event_times = [" + ", ".join(f"{v:.10f}" for v in vals) + "]")
        ode = getattr(m, "odeint", None) or getattr(be, "odeint", None)
        func = getattr(m, "func", None)
        class Count(torch.nn.Module):
            def __init__(s, f): super().__init__(); s.f = f; s.n = 0
            def forward(s, t, y): s.n += 1; return s.f(t, y)
        name = os.path.basename(sys.argv[0])
        if name == "ode_demo.py":
            c = Count(func)
            with torch.no_grad():
                y = ode(c, m.true_y0, m.t)
                loss = torch.mean(torch.abs(y - m.true_y)).item()
            print(f"[harness] final test solve: NFE {c.n}, loss {loss:.6f}")
        elif name == "latent_ode.py":
            c = Count(func)
            with torch.no_grad():
                z = ode(c, m.z0.detach(), m.samp_ts)
            print(f"[harness] final latent solve: NFE {c.n}, |z(T)| sum {z[-1].abs().sum().item():.6f}")
        elif name == "cnf.py":
            torch.manual_seed(123)
            x, lp = m.get_batch(m.args.num_samples)
            c = Count(func)
            zt, lpt = ode(c, (x, lp), torch.tensor([m.t1, m.t0]).float(), atol=1e-5, rtol=1e-5, method="dopri5")
            nll = -(m.p_z0.log_prob(zt[-1]) - lpt[-1].view(-1)).mean().item()
            print(f"[harness] final cnf solve (fixed batch, seed 123): NFE {c.n}, NLL {nll:.6f}")
    except Exception as e:  # report, don't mask the script's own exit status
        import traceback; traceback.print_exc()
        print(f"[harness] report failed: {e!r}")
atexit.register(_report)
