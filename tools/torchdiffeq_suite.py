"""Run torchdiffeq's own test suite, or one of its example scripts, against odeflow.

Nothing of torchdiffeq is copied into odeflow: point this tool at a checkout of
torchdiffeq (``git clone https://github.com/rtqichen/torchdiffeq``), and it runs that
checkout's ``tests/`` (or ``examples/NAME.py``) with ``import torchdiffeq`` resolving to
odeflow through a one-line module alias placed first on ``PYTHONPATH``. With
``--backend torchdiffeq`` the same command runs the real torchdiffeq (the checkout's own
package), for side-by-side numbers.

Usage::

    python tools/torchdiffeq_suite.py tests CHECKOUT [pytest args...]
    python tools/torchdiffeq_suite.py example CHECKOUT NAME [--backend odeflow|torchdiffeq]
        [--seed N] [args]

``--seed N`` seeds ``random``, NumPy and torch before the script starts and prints an
end-of-run report (``tools/torchdiffeq_harness.py``); docs/torchdiffeq_examples.md was
measured this way.

Examples::

    python tools/torchdiffeq_suite.py tests ../torchdiffeq -q
    python tools/torchdiffeq_suite.py example ../torchdiffeq ode_demo --niters 100
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ALIAS = "import sys, odeflow; sys.modules[__name__] = odeflow\n"


def _env(shim_dir: str, extra: list[str], backend: str, checkout: Path) -> dict[str, str]:
    env = dict(os.environ)
    # The shim folder holds the alias (odeflow backend only) and any sitecustomize.
    paths = [shim_dir] if backend == "odeflow" else [shim_dir, str(checkout)]
    paths += extra + [str(ROOT)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def _shim(folder: str, backend: str) -> None:
    if backend == "odeflow":
        Path(folder, "torchdiffeq.py").write_text(ALIAS)


def run_tests(checkout: Path, pytest_args: list[str], backend: str) -> int:
    tests = checkout / "tests"
    files = sorted(str(p) for p in tests.glob("*_tests.py"))
    if not files:
        raise SystemExit(f"no *_tests.py under {tests}: is {checkout} a torchdiffeq checkout?")
    with tempfile.TemporaryDirectory() as shim:
        _shim(shim, backend)
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(tests),
               *files, *pytest_args]
        return subprocess.call(cmd, cwd=tests, env=_env(shim, [str(tests)], backend, checkout))


def run_example(checkout: Path, name: str, args: list[str], backend: str,
                seed: int | None = None) -> int:
    script = checkout / "examples" / f"{name}.py"
    if not script.is_file():
        raise SystemExit(f"no example {script}")
    with tempfile.TemporaryDirectory() as shim:
        _shim(shim, backend)
        env_extra = {}
        if seed is not None:
            Path(shim, "sitecustomize.py").write_text(
                f"import sys; sys.path.insert(0, {str(ROOT / 'tools')!r}); "
                "import torchdiffeq_harness  # noqa: F401\n")
            env_extra["TDQ_SEED"] = str(seed)
        cmd = [sys.executable, str(script), *args]
        env = _env(shim, [], backend, checkout)
        env.update(env_extra)
        return subprocess.call(cmd, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    p_tests = sub.add_parser("tests", help="run CHECKOUT/tests/*_tests.py with pytest")
    p_tests.add_argument("checkout", type=Path)
    p_tests.add_argument("--backend", choices=("odeflow", "torchdiffeq"), default="odeflow")
    p_ex = sub.add_parser("example", help="run CHECKOUT/examples/NAME.py")
    p_ex.add_argument("checkout", type=Path)
    p_ex.add_argument("name")
    p_ex.add_argument("--backend", choices=("odeflow", "torchdiffeq"), default="odeflow")
    p_ex.add_argument("--seed", type=int, default=None,
                      help="seed random/NumPy/torch first and print an end-of-run report")
    ns, rest = parser.parse_known_args(argv)
    checkout = ns.checkout.resolve()
    if ns.what == "tests":
        return run_tests(checkout, rest, ns.backend)
    return run_example(checkout, ns.name, rest, ns.backend, ns.seed)


if __name__ == "__main__":
    sys.exit(main())
