"""Draw the work-precision plot of the benchmarks page from the S2 results.

    python tools/work_precision_plot.py [RESULTS] [--out PNG]

RESULTS defaults to benchmarks/results/s2.json, PNG to docs/benchmarks/work-precision.png.

Reads the error at t = 10, the median time and the NFE of every contender at each rtol
(the S2 table of BENCHMARKS.md, written by ``python -m benchmarks s2``) and plots error
against time and against evaluations, one line per contender, for each problem.
Needs matplotlib (the ``experiments`` extra).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

STYLE = {  # contender -> (colour, marker); odeflow solid, the others dashed
    "odeflow dopri5": ("C0", "o"), "odeflow tsit5": ("C1", "o"), "odeflow dopri8": ("C2", "o"),
    "torchdiffeq dopri5": ("C0", "s"), "torchdiffeq dopri8": ("C2", "s"),
    "torchode dopri5": ("C0", "^"), "torchode tsit5": ("C1", "^"),
    "scipy RK45": ("C0", "x"), "scipy DOP853": ("C2", "x"),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="?", default=ROOT / "benchmarks/results/s2.json", type=Path)
    ap.add_argument("--out", default=ROOT / "docs/benchmarks/work-precision.png", type=Path)
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    data = json.loads(args.results.read_text())
    curves: dict[tuple[str, str], list[tuple[float, float, float, float]]] = defaultdict(list)
    for row in data["rows"]:
        if row.get("status") != "ok" or row.get("error") is None:
            continue
        curves[row["problem"], row["contender"]].append(
            (row["rtol"], row["error"], row["time"]["median"] * 1e3, row["nfe"]))
    problems = sorted({p for p, _ in curves}, key=["vdp", "lorenz"].index)

    fig, axes = plt.subplots(2, len(problems), figsize=(4.2 * len(problems), 6.4), squeeze=False)
    for j, problem in enumerate(problems):
        for (p, contender), pts in sorted(curves.items()):
            if p != problem:
                continue
            pts.sort()
            colour, marker = STYLE.get(contender, ("k", "."))
            ls = "-" if contender.startswith("odeflow") else "--"
            err = [e for _, e, _, _ in pts]
            for i, x in enumerate(([ms for _, _, ms, _ in pts], [n for _, _, _, n in pts])):
                axes[i, j].loglog(x, err, ls=ls, color=colour, marker=marker, ms=4, lw=1,
                                  label=contender)
        titles = {"vdp": "van der Pol (μ = 1)", "lorenz": "Lorenz"}
        axes[0, j].set_title(titles.get(problem, problem))
        axes[0, j].set_xlabel("time per solve, ms (median)")
        axes[1, j].set_xlabel("evaluations of f (NFE)")
        for i in range(2):
            axes[i, j].set_ylabel("error at t = 10")
            axes[i, j].grid(True, which="major", alpha=0.3)
            axes[i, j].xaxis.set_minor_formatter(NullFormatter())
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=5, fontsize=7, frameon=False)
    fig.suptitle(f"S2: float64, rtol 1e-3, 1e-5, 1e-7 (run {data['started'][:10]}, "
                 f"odeflow {data['versions'].get('odeflow_git', '')})", fontsize=9)
    fig.tight_layout(rect=(0, 0.07, 1, 0.97))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=90)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
