"""The ``odeflow`` command: usage, train, plot, demo and bench forwarding."""

import subprocess
import sys

import pytest

from odeflow import cli
from odeflow.experiments import EXPERIMENTS
from odeflow.training import read_metrics

TINY = ["--network", "mlp", "--dry-run", "--digits-size", "12", "--digits-pad", "2",
        "--progress", "False", "--threads", "1"]  # fmt: skip


def test_usage_lists_the_commands(capsys):
    assert cli.main([]) == 2
    out = capsys.readouterr().out
    for word in ("demo", "train", "plot", "bench", "fashion-mnist"):
        assert word in out
    assert cli.main(["frobnicate"]) == 2


def test_train_help_documents_the_flags(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", "fashion-mnist", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "odeflow train fashion-mnist" in out and "--adjoint" in out
    assert "default: 'fashion-mnist'" in out
    assert cli.main(["train", "imagenet"]) == 2


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_experiments_help_renders(name, capsys):
    # argparse formats help strings with %: a stray one breaks --help of that experiment.
    with pytest.raises(SystemExit) as exc:
        cli.main(["train", name, "--help"])
    assert exc.value.code == 0
    assert f"odeflow train {name}" in capsys.readouterr().out


def test_train_then_plot_two_runs(tmp_path, capsys):
    for name in ("a", "b"):
        assert cli.main(["train", "digits", *TINY, "--save", str(tmp_path / name)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    assert len(read_metrics(tmp_path / "a")) == 1
    out = tmp_path / "cmp"
    assert cli.main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["accuracy.png", "nfe.png"]
    with pytest.raises(SystemExit):
        cli.main(["plot", str(tmp_path / "missing")])


def test_demo_runs_with_overrides(tmp_path, capsys):
    args = ["--dry-run", "--progress", "False", "--save", str(tmp_path / "demo")]
    summary_code = cli.main(["demo", *args])
    out = capsys.readouterr().out
    assert summary_code == 0
    assert "test accuracy" in out and "52,938" in out and "NFE-F / NFE-B" in out
    assert (tmp_path / "demo" / "accuracy.png").is_file()


def test_bench_without_benchmarks_folder_fails_clearly(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cli, "repo_root", lambda: tmp_path)
    assert cli.main(["bench", "s1"]) == 2
    assert "no benchmarks/__main__.py" in capsys.readouterr().err


def test_bench_forwards_its_arguments(tmp_path, monkeypatch):
    pkg = tmp_path / "benchmarks"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(
        "import json, pathlib\n"
        "def main(argv):\n"
        f"    pathlib.Path({str(tmp_path / 'argv.json')!r}).write_text(json.dumps(argv))\n"
        "    return 3\n"
    )
    monkeypatch.setattr(cli, "repo_root", lambda: tmp_path)
    for mod in ("benchmarks", "benchmarks.__main__"):
        monkeypatch.delitem(sys.modules, mod, raising=False)
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert cli.main(["bench", "s2", "--quick"]) == 3
    assert (tmp_path / "argv.json").read_text() == '["s2", "--quick"]'


def test_module_entry_point():
    proc = subprocess.run([sys.executable, "-m", "odeflow.cli", "--help"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0 and "odeflow <command>" in proc.stdout
