"""Run torchsde's example scripts against odeflow.sde (or against torchsde itself).

Nothing of torchsde is copied into odeflow: point this tool at a checkout of torchsde
0.2.6, and it runs each of that checkout's ``examples/*.py`` as ``python -m
examples.NAME`` (as their docstrings say; ``cont_ddpm`` needs the package form for its
``from . import unet``) with ``import torchsde`` resolving to ``odeflow.sde`` through the
same one-line module alias as ``tools/torchsde_suite.py``. Each script gets small
iteration counts on its own command line (see ``EXAMPLES``), a scratch output folder and
a timeout, and the tool prints one line per script: ``PASS``, ``FAIL`` (with the last
line of its error) or ``BLOCKED`` when the script stops on a package that cannot work
here (named with the reason in ``BLOCKERS``). With ``--backend torchsde`` the same
commands run the checkout's own package, so a failure can be told apart from odeflow's.

Usage::

    python tools/torchsde_examples.py CHECKOUT [--backend odeflow|torchsde]
        [--only NAME ...] [--timeout SECONDS] [--verbose] [--extra='FLAGS']

Example::

    python tools/torchsde_examples.py /tmp/torchsde-0.2.6 --only latent_sde
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from torchsde_suite import ALIAS  # noqa: E402  (one alias for the suite and the examples)


@dataclass(frozen=True)
class Example:
    """One example script and the command line that makes it a short run."""

    name: str
    args: tuple[str, ...]  # ``{out}`` is replaced by the run's scratch folder


#: Each script's own flags, set for a short run: a few training iterations, small batches,
#: and every plotting/sampling branch still taken once (sde_gan still takes about a minute
#: on one CPU core: its data set is fixed at 8192 samples).
EXAMPLES = (
    Example("latent_sde", ("--train-dir", "{out}", "--train-iters", "3", "--pause-iters", "2",
                           "--batch-size", "16", "--kl-anneal-iters", "2", "--dpi", "20")),
    Example("latent_sde_lorenz", ("--batch_size", "16", "--num_iters", "3", "--pause_every",
                                  "2", "--kl_anneal_iters", "2", "--train_dir", "{out}")),
    # sde_gan evaluates its loss over the whole 8192-sample data set at the first and last
    # step (and the averaged model's at the last): large batches make that few solves.
    Example("sde_gan", ("--batch_size", "1024", "--steps", "2", "--swa_step_start", "0",
                        "--steps_per_print", "100", "--num_plot_samples", "4")),
    Example("cont_ddpm", ("--train_dir", "{out}", "--epochs", "1", "--batch_size", "4",
                          "--pause_every", "1")),
)

#: Packages an example needs that cannot work in this environment, and why. A script that
#: stops on importing one of these is reported BLOCKED, not FAIL.
BLOCKERS = {
    "torchvision": "PyPI's torchvision for torch 2.13 (0.28.0) is a CUDA build that fails to "
                   "import beside the CPU torch here (operator torchvision::nms does not "
                   "exist), later ones need torch >= 2.14; and cont_ddpm downloads MNIST, "
                   "with no network here",
}


#: Installable packages the examples import besides torch, matplotlib, numpy and tqdm;
#: a script that stops on a missing one is a FAIL whose line says what to install.
INSTALLABLE = {"fire": "pip install fire", "torchcde": "pip install torchcde"}


@dataclass
class Outcome:
    """What one script did: its verdict, wall time and the line that explains it."""

    name: str
    verdict: str  # PASS, FAIL, BLOCKED or TIMEOUT
    seconds: float
    detail: str


def _last_error(text: str) -> str:
    """The exception line of a traceback (the last line that names an error)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Interrupt|Exit)\b", line):
            return line
    return lines[-1] if lines else ""


def _blocker(text: str) -> str | None:
    """The reason a script could not run here, if its error names a blocking package."""
    last = _last_error(text)
    for module, reason in BLOCKERS.items():
        if re.search(rf"\b{module}\b", last):
            return f"needs {module}: {reason}"
    return None


def run_one(checkout: Path, example: Example, backend: str, timeout: float,
            verbose: bool, extra: tuple[str, ...] = ()) -> Outcome:
    """Run one example in a scratch folder that holds the alias (or torchsde's package)
    and a link to the checkout's ``examples`` package; ``-m`` puts that folder first on
    ``sys.path``, ahead of the checkout's own ``torchsde``."""
    with tempfile.TemporaryDirectory(prefix=f"torchsde_{example.name}_") as work:
        Path(work, "examples").symlink_to(checkout / "examples", target_is_directory=True)
        if backend == "odeflow":
            Path(work, "torchsde.py").write_text(ALIAS)
        else:
            Path(work, "torchsde").symlink_to(checkout / "torchsde", target_is_directory=True)
        out = Path(work, "out")
        out.mkdir()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        env.setdefault("MPLBACKEND", "Agg")  # plt.show() must not wait for a window
        env.setdefault("OMP_NUM_THREADS", "1")
        cmd = [sys.executable, "-m", f"examples.{example.name}",
               *(a.format(out=out) for a in example.args), *extra]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return Outcome(example.name, "TIMEOUT", time.perf_counter() - start,
                           f"no result within {timeout:.0f} s")
        seconds = time.perf_counter() - start
        text = proc.stdout + proc.stderr
        if verbose:
            print(f"--- {example.name}: {' '.join(cmd[1:])}\n{text}", flush=True)
        if proc.returncode == 0:
            return Outcome(example.name, "PASS", seconds, "")
        reason = _blocker(text)
        if reason is not None:
            return Outcome(example.name, "BLOCKED", seconds, f"{reason} ({_last_error(text)})")
        last = _last_error(text)
        hint = next((f" ({fix})" for module, fix in INSTALLABLE.items()
                     if last.startswith("ModuleNotFoundError") and f"'{module}'" in last), "")
        return Outcome(example.name, "FAIL", seconds, f"exit {proc.returncode}: {last}{hint}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkout", type=Path, help="a torchsde 0.2.6 checkout")
    parser.add_argument("--backend", choices=("odeflow", "torchsde"), default="odeflow",
                        help="what `import torchsde` resolves to (default: odeflow.sde)")
    parser.add_argument("--only", nargs="+", choices=[e.name for e in EXAMPLES],
                        help="run only these examples")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds each script may run (default 300)")
    parser.add_argument("--verbose", action="store_true", help="print each script's output")
    parser.add_argument("--extra", default="",
                        help="more flags for every chosen script, e.g. --extra='--adjoint'")
    ns = parser.parse_args(argv)
    checkout = ns.checkout.resolve()
    if not (checkout / "examples" / "latent_sde.py").is_file():
        parser.error(f"checkout: no examples/latent_sde.py under {checkout}; pass a torchsde "
                     "0.2.6 checkout")
    if ns.timeout <= 0:
        parser.error(f"--timeout must be positive, got {ns.timeout}")
    chosen = [e for e in EXAMPLES if ns.only is None or e.name in ns.only]
    print(f"torchsde examples from {checkout} with backend {ns.backend}", flush=True)
    outcomes = []
    for example in chosen:
        outcome = run_one(checkout, example, ns.backend, ns.timeout, ns.verbose,
                          tuple(shlex.split(ns.extra)))
        outcomes.append(outcome)
        line = f"{outcome.verdict:8s} {outcome.name:18s} {outcome.seconds:6.1f} s"
        print(line + (f"  {outcome.detail}" if outcome.detail else ""), flush=True)
    counts = {v: sum(o.verdict == v for o in outcomes) for v in
              ("PASS", "FAIL", "BLOCKED", "TIMEOUT")}
    print(", ".join(f"{n} {v.lower()}" for v, n in counts.items() if n), flush=True)
    return 0 if counts["FAIL"] == 0 and counts["TIMEOUT"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
