"""odeflow's benchmark harness: the four workloads of BENCHMARK_WORKLOADS.md, ``stiff`` and
``lanes`` (the per-sample clock's cost per step at B = 1) and ``sde`` (odeflow.sde
against torchsde).

Every workload times odeflow and its peers (torchdiffeq, torchode, SciPy) on the same
inputs in the same run, round-robin, and writes one JSON file under
``benchmarks/results/``; ``python -m benchmarks render`` turns those files into
``BENCHMARKS.md``.

Usage::

    python -m benchmarks s1 [--quick] [--out FILE]     # also s2, s3, s4, stiff, lanes, sde, all
    python -m benchmarks render benchmarks/results/*.json
    python -m benchmarks profile s1|s3

The same commands run as ``odeflow bench ...``.
"""

WORKLOADS = ("s1", "s2", "s3", "s4", "stiff", "lanes", "sde")
