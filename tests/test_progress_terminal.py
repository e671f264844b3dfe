"""``progress=True`` on a terminal (tqdm's bar, or a line rewritten in place without
tqdm) and on a stream that cannot say whether it is one: the drawing never changes the
solution, and the final state (t at the end, 100 %) is shown."""

from __future__ import annotations

import io
import sys

import pytest
import torch

import odeflow

F64 = torch.float64
T = torch.tensor([0.0, 2.0], dtype=F64)
Y0 = torch.tensor([1.0, 0.5], dtype=F64)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


class _NoIsatty:
    """A stream without ``isatty`` (some wrapped log streams)."""

    def __init__(self):
        self.buffer = io.StringIO()

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass

    def getvalue(self):
        return self.buffer.getvalue()


def _solve(**kw):
    return odeflow.solve(lambda t, y: -y, Y0, T, **kw)


@pytest.mark.parametrize("stream,tqdm", [("terminal", True), ("terminal", False),
                                         ("no_isatty", False)])
def test_progress_output_and_unchanged_solution(monkeypatch, stream, tqdm):
    if tqdm:
        pytest.importorskip("tqdm")
    else:  # importing tqdm.auto then fails
        monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    err = _Terminal() if stream == "terminal" else _NoIsatty()
    monkeypatch.setattr(sys, "stderr", err)
    quiet = _solve()
    shown = _solve(progress=True)
    assert torch.equal(shown.ys, quiet.ys)
    text = err.getvalue()
    assert "solve t=2 steps=" in text
    assert "100" in text  # the final fraction
    if stream == "terminal" and not tqdm:
        assert text.startswith("\r") and text.endswith("\n")  # rewritten in place, then done
    if stream == "no_isatty":
        assert "\r" not in text and text.endswith("100.0%\n")  # plain log lines


def test_per_sample_progress_on_a_terminal(monkeypatch):
    monkeypatch.setitem(sys.modules, "tqdm.auto", None)
    err = _Terminal()
    monkeypatch.setattr(sys, "stderr", err)
    sol = odeflow.solve(lambda t, y: -y, Y0[:, None], T, options={"per_sample": True},
                        progress=True)
    assert sol.ys.shape == (2, 2, 1)
    assert "per-sample solve done=1 steps=" in err.getvalue()
