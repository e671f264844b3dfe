"""torchsde's example scripts through ``tools/torchsde_examples.py``, and the
``sdeint_adjoint`` cases the ``sde_gan`` example revealed.

The real examples need a torchsde checkout and minutes (``python
tools/torchsde_examples.py /tmp/torchsde-0.2.6``, see docs/sde.md); here a stand-in
checkout checks the tool's wiring in seconds: ``import torchsde`` in an example must be
``odeflow.sde`` even though the checkout holds its own ``torchsde`` package, and a script
stopped by a package that cannot work here is reported as blocked, not as a failure.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

import odeflow.sde as torchsde

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import torchsde_examples  # noqa: E402

D = torch.float64

USES_ALIAS = """import sys
import torchsde
import odeflow.sde
assert torchsde.sdeint is odeflow.sde.sdeint, torchsde
assert "--train-dir" in sys.argv  # the tool passed this example's own flags
"""


def _checkout(tmp_path: Path) -> Path:
    root = tmp_path / "torchsde"
    (root / "examples").mkdir(parents=True)
    (root / "examples" / "__init__.py").write_text("")
    (root / "torchsde").mkdir()  # the checkout's own package must not be what is imported
    (root / "torchsde" / "__init__.py").write_text("raise ImportError('the real torchsde')\n")
    (root / "examples" / "latent_sde.py").write_text(USES_ALIAS)
    (root / "examples" / "sde_gan.py").write_text("raise ValueError('broken example')\n")
    (root / "examples" / "cont_ddpm.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'torchvision'\")\n")
    return root


def test_tool_runs_examples_against_the_alias(tmp_path, capsys):
    root = _checkout(tmp_path)
    code = torchsde_examples.main([str(root), "--only", "latent_sde", "sde_gan", "cont_ddpm",
                                   "--timeout", "120"])
    out = capsys.readouterr().out
    assert code == 1  # sde_gan failed
    assert "PASS     latent_sde" in out
    assert "FAIL     sde_gan" in out and "ValueError: broken example" in out
    assert "BLOCKED  cont_ddpm" in out and "needs torchvision" in out
    assert "1 pass, 1 fail, 1 blocked" in out


def test_tool_rejects_a_folder_that_is_not_a_checkout(tmp_path):
    with pytest.raises(SystemExit):
        torchsde_examples.main([str(tmp_path)])


def test_last_error_line():
    text = "Traceback (most recent call last):\n  File 'x'\nRuntimeError: operator x::nms\n"
    assert torchsde_examples._last_error(text) == "RuntimeError: operator x::nms"
    assert torchsde_examples._blocker("ModuleNotFoundError: No module named 'torchvision'")
    assert torchsde_examples._blocker("ValueError: torch") is None


class _Precomputed(torchsde.SDEStratonovich):
    """A drift through tensors computed before the solve from a non-leaf parameter, and a
    diffusion that depends on nothing (as torchcde's CDE vector field in sde_gan)."""

    def __init__(self, coeffs):
        super().__init__(noise_type="diagonal")
        self.coeffs = coeffs
        self.derived = torch.tanh(coeffs) * 2  # a graph back to coeffs, built once

    def f(self, t, y):
        return -y * self.derived

    def g(self, t, y):
        return torch.zeros_like(y)


def test_adjoint_with_a_non_leaf_parameter_and_a_constant_diffusion():
    def grad(solver, **kw):
        w = torch.tensor([0.3, -0.2], dtype=D, requires_grad=True)
        coeffs = w.exp()  # not a leaf
        bm = torchsde.BrownianInterval(0.0, 1.0, size=(3, 2), dtype=D, entropy=5)
        ys = solver(_Precomputed(coeffs), torch.ones(3, 2, dtype=D), [0.0, 0.5, 1.0], bm=bm,
                    method="reversible_heun", dt=0.1, **kw)
        ys.pow(2).sum().backward()
        return w.grad

    def adjoint(sde, *args, **kw):
        # coeffs, not derived: each step's pull-back walks derived's graph back to coeffs.
        return torchsde.sdeint_adjoint(sde, *args, adjoint_params=(sde.coeffs,), **kw)

    reference = grad(torchsde.sdeint)
    torch.testing.assert_close(grad(adjoint), reference, rtol=1e-10, atol=1e-12)
    assert reference.abs().min() > 0
