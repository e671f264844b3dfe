"""Run torchsde's own test suite against odeflow.sde (or against torchsde itself).

Nothing of torchsde is copied into odeflow: point this tool at a checkout of torchsde
(``git clone https://github.com/google-research/torchsde``, or ``git archive v0.2.6`` of
a mirror), and it runs that checkout's ``tests/`` with ``import torchsde`` resolving to
``odeflow.sde`` through a one-line module alias placed first on ``PYTHONPATH`` (the
submodules ``torchsde.settings`` and ``torchsde.types`` resolve to odeflow's too). With
``--backend torchsde`` the same command runs the checkout's own package, for comparison.

Usage::

    python tools/torchsde_suite.py CHECKOUT [--backend odeflow|torchsde] [pytest args...]

Example::

    python tools/torchsde_suite.py /tmp/torchsde-0.2.6 -q -x tests/test_sdeint.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# torchsde's test modules each drop sys.path[0] ("always import the installed library"),
# five times in all, which would drop the alias and then the standard library: pad the front
# of sys.path. pytest >= 8 removed pytest.skip(msg=...), which the suite uses for CUDA-only
# cases: map it to reason= so those report as skips instead of errors.
SITECUSTOMIZE = """import sys
sys.path[:0] = [{shim!r}] * 8
import pytest
_skip = pytest.skip
def _compat_skip(reason="", *, allow_module_level=False, msg=None):
    return _skip(msg if msg is not None else reason, allow_module_level=allow_module_level)
_compat_skip.Exception = _skip.Exception
pytest.skip = _compat_skip
"""
ALIAS = ("import sys, odeflow.sde as _m; sys.modules[__name__] = _m; sys.modules.update("
         "{__name__ + '.' + k: getattr(_m, k) for k in ('settings', 'types')})\n")


def run(checkout: Path, pytest_args: list[str], backend: str) -> int:
    tests = checkout / "tests"
    if not (tests / "test_sdeint.py").is_file():
        raise SystemExit(f"no tests/test_sdeint.py under {checkout}: is it a torchsde checkout?")
    with tempfile.TemporaryDirectory() as shim:
        paths = [shim]
        Path(shim, "sitecustomize.py").write_text(SITECUSTOMIZE.format(shim=shim))
        if backend == "odeflow":
            Path(shim, "torchsde.py").write_text(ALIAS)
        else:
            paths.append(str(checkout))
        paths.append(str(ROOT))
        env = dict(os.environ)
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        # Without a test path among the arguments, run the whole tests/ folder.
        has_path = any(Path(checkout, a.split("::")[0]).exists() for a in pytest_args
                       if not a.startswith("-"))
        # --import-mode=append: pytest puts the checkout (which holds the real torchsde
        # package) after PYTHONPATH, so the alias is what `import torchsde` finds.
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--import-mode=append",
               "--rootdir", str(checkout), *pytest_args, *([] if has_path else ["tests"])]
        return subprocess.call(cmd, cwd=checkout, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path)
    parser.add_argument("--backend", choices=("odeflow", "torchsde"), default="odeflow")
    ns, rest = parser.parse_known_args(argv)
    return run(ns.checkout.resolve(), rest, ns.backend)


if __name__ == "__main__":
    sys.exit(main())
