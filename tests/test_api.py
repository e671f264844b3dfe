"""The public API: exported names match docs/API.md; torchdiffeq code ports by an import."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import torch

import odeflow

ROOT = Path(__file__).resolve().parents[1]


def test_exports_match_api_docs():
    documented = set(re.findall(r"^\| `(\w+)[`(]", (ROOT / "docs/API.md").read_text(), re.M))
    assert documented == set(odeflow.__all__)
    for name in odeflow.__all__:
        obj = getattr(odeflow, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_core_imports_torch_only_and_fast():
    code = (
        "import sys, time, torch; before = set(sys.modules); t = time.perf_counter(); "
        "import odeflow; dt = time.perf_counter() - t; new = set(sys.modules) - before; "
        "bad = sorted(m for m in new if m.split('.')[0] in "
        "('numpy', 'scipy', 'matplotlib', 'tqdm', 'sklearn')); print(dt, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    dt, bad = out.stdout.split(" ", 1)
    assert bad.strip() == "[]", f"core imported optional packages: {bad}"
    assert float(dt) < 0.5, f"import odeflow took {dt}s after torch"


def test_torchdiffeq_script_ports_by_changing_the_import():
    torchdiffeq = __import__("pytest").importorskip("torchdiffeq")

    class Lambda(torch.nn.Module):
        def forward(self, t, y):
            return torch.mm(y ** 3, torch.tensor([[-0.1, 2.0], [-2.0, -0.1]]))

    true_y0 = torch.tensor([[2.0, 0.0]])
    t = torch.linspace(0.0, 5.0, 50)
    for name in ("odeint", "odeint_adjoint"):
        ref = getattr(torchdiffeq, name)(Lambda(), true_y0, t, method="dopri5")
        ours = getattr(odeflow, name)(Lambda(), true_y0, t, method="dopri5")
        assert ours.shape == ref.shape
        assert torch.allclose(ours, ref, atol=1e-4)
