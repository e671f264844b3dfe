"""The SDE section's adjoint lines for ``python -m benchmarks render``: odeflow's
reversible Heun adjoint against torchsde's (paired ratio) and the peak-RSS growth of
both against the number of steps (``benchmarks/sde.py``, ``adjoint_memory``)."""

from __future__ import annotations


def adjoint_lines(d: dict) -> list[str]:
    """The adjoints against each other (paired) and their memory against the steps."""
    from .render import _ok, _table, _x

    out = []
    for r in d["rows"]:
        ref = next((x for x in d["rows"] if x["case"] == r["case"] and _ok(x)
                    and x["contender"].startswith("torchsde sdeint_adjoint")), None)
        if r["contender"] == "odeflow sdeint_adjoint" and _ok(r) and ref:
            ratios = sorted(a / b for a, b in zip(r["time"]["all"], ref["time"]["all"]))
            out.append(f"- {r['case']}: odeflow sdeint_adjoint is "
                       f"{_x(ratios[len(ratios) // 2])} torchsde sdeint_adjoint (paired).")
    mem = (d.get("memory") or {}).get("peak_rss_growth_bytes") or {}
    steps = sorted({int(n) for v in mem.values() for n in v if str(n).isdigit()})
    if mem and steps:
        out += ["", f"Peak-RSS growth over one call, MiB ({d['memory']['case']}; a fresh "
                "process per figure):", ""]
        head = ["contender"] + [f"{n} steps" for n in steps]
        rows = ["| " + " | ".join([label] + [
            f"{v[str(n)] / 2**20:.1f}" if str(n) in v else (v.get("status") or "–")
            for n in steps]) + " |" for label, v in mem.items()]
        out += _table(head, rows)
    while out and out[-1] == "":
        out.pop()
    return (["Adjoint against adjoint:", ""] + out + [""]) if out else []
