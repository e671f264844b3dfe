"""odeflow.experiments: config dataclass -> flags, seed flags, resume config, dry runs."""

import dataclasses
import json
import subprocess
import sys

import pytest

from odeflow.experiments import EXPERIMENTS, MNISTConfig, build, build_parser, resolve_gradient
from odeflow.experiments.config import str2bool
from odeflow.experiments.demo import DEMO, next_free_dir
from odeflow.experiments.mnist import default_run_dir, parse_args
from odeflow.training import RunFolderError

SEED_FLAGS = ["--network", "--tol", "--adjoint", "--downsampling-method", "--nepochs",
              "--data-aug", "--lr", "--batch-size", "--test-batch-size", "--save",
              "--gpu"]  # fmt: skip
OUR_FLAGS = ["--device", "--method", "--gradient", "--seed", "--resume", "--dry-run",
             "--max-train-samples", "--max-test-samples"]  # fmt: skip


def test_every_field_is_a_flag_with_help():
    helptext = build_parser(MNISTConfig).format_help()
    for f in dataclasses.fields(MNISTConfig):
        assert "--" + f.name.replace("_", "-") in helptext
        assert f.metadata["help"], f.name
    for flag in SEED_FLAGS + OUR_FLAGS:
        assert flag in helptext


def test_defaults_are_the_seeds():
    cfg = MNISTConfig()
    assert (cfg.network, cfg.tol, cfg.adjoint, cfg.downsampling_method) == (
        "odenet", 1e-3, False, "conv"
    )  # fmt: skip
    assert (cfg.nepochs, cfg.data_aug, cfg.lr, cfg.batch_size, cfg.test_batch_size) == (
        160, True, 0.1, 128, 1000
    )  # fmt: skip
    assert (cfg.milestones, cfg.lr_decay, cfg.momentum) == ((60, 100, 140), 0.1, 0.9)


def test_parsing_seed_spellings_and_booleans():
    cfg = parse_args(["--adjoint", "True", "--data_aug", "False", "--batch_size", "256",
                      "--downsampling-method", "res", "--milestones", "3", "5"])  # fmt: skip
    assert cfg.adjoint is True and cfg.data_aug is False and cfg.batch_size == 256
    assert cfg.downsampling_method == "res" and cfg.milestones == (3, 5)
    assert resolve_gradient(cfg) == "adjoint"
    assert parse_args(["--adjoint"]).adjoint is True
    assert resolve_gradient(parse_args(["--gradient", "checkpoint"])) == "checkpoint"
    with pytest.raises(ValueError, match="contradicts"):
        parse_args(["--adjoint", "True", "--gradient", "direct"])
    with pytest.raises(SystemExit):
        parse_args(["--network", "vgg"])
    assert str2bool("yes") and not str2bool("0")


def test_experiment_defaults_set_the_dataset_only():
    assert EXPERIMENTS["fashion-mnist"].dataset == "fashion-mnist"
    assert dataclasses.replace(EXPERIMENTS["digits"], dataset="mnist") == MNISTConfig()
    cfg = parse_args(["--nepochs", "2"], base=EXPERIMENTS["digits"])
    assert cfg.dataset == "digits" and cfg.nepochs == 2


def test_default_run_dir_names_the_variant():
    assert str(default_run_dir(MNISTConfig(adjoint=True))) == "runs/mnist-odenet-adjoint"
    assert str(default_run_dir(MNISTConfig(network="resnet"))) == "runs/mnist-resnet"
    assert str(default_run_dir(MNISTConfig(save="x/y"))) == "x/y"


def test_resume_reads_the_saved_config_and_applies_given_flags(tmp_path):
    saved = dataclasses.asdict(MNISTConfig(dataset="digits", network="resnet", width=8))
    saved["gradient_resolved"] = "direct"  # extra keys in config.json are ignored
    (tmp_path / "config.json").write_text(json.dumps(saved))
    cfg = parse_args(["--resume", str(tmp_path), "--nepochs", "7"])
    assert (cfg.dataset, cfg.network, cfg.width, cfg.nepochs) == ("digits", "resnet", 8, 7)
    assert cfg.milestones == (60, 100, 140)  # list in JSON -> tuple
    with pytest.raises(RunFolderError, match="no config.json"):
        parse_args(["--resume", str(tmp_path / "nothing")])


def test_build_makes_the_seed_model_and_optimizer():
    parts = build(MNISTConfig(dataset="digits", max_train_samples=64, max_test_samples=32))
    assert parts["parameters"] == 208_266
    opt = parts["optimizer"]
    assert opt.defaults["momentum"] == 0.9 and parts["lr_fn"](0) == pytest.approx(0.1)
    assert parts["lr_fn"](60) == pytest.approx(0.01)
    x, y = next(iter(parts["train_loader"]))
    assert x.shape == (64, 1, 28, 28) and y.shape == (64,)


# Run in a subprocess with a time limit, so that a solver that stops making progress
# (e.g. an adjoint backward solve that shrinks its steps forever) fails the test instead
# of hanging the whole suite.
DRY_RUN = """
import json, sys
from odeflow.experiments import MNISTConfig
from odeflow.experiments.mnist import run
from odeflow.nn import nfe_counts
network, gradient, save = sys.argv[1:]
# 16x16 digits padded to 24 give the ODE block a 5x5 state. At 12x12 (a 2x2 state) each
# GroupNorm group holds 4 values, its Jacobian is near-singular and, with ReLU, the
# adjoint's parameter-gradient field jumps at every activation flip: a dopri5 backward solve
# there can shrink its steps to ~1e-6 and stall (seen with odeflow's estimator; torchdiffeq
# passed the same state by its different step sequence).
cfg = MNISTConfig(dataset="digits", network=network, gradient=gradient, width=8,
                  dry_run=True, batch_size=16, test_batch_size=32, digits_size=16,
                  digits_pad=4, rk_step_size=0.5, save=save, progress=False, threads=1)
summary = run(cfg, log=lambda s: None)
print(json.dumps({"row": summary["history"][0], "nfe": nfe_counts(summary["model"])}))
"""


@pytest.mark.parametrize(
    "network,gradient", [("odenet", "direct"), ("odenet", "adjoint"), ("rknet", "direct")]
)
def test_dry_run_trains_two_batches_and_reports_nfe(tmp_path, network, gradient):
    save = tmp_path / "run"
    try:
        proc = subprocess.run(
            [sys.executable, "-c", DRY_RUN, network, gradient, str(save)],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        pytest.fail(f"dry run of {network}/{gradient} did not finish within 90 s")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    row = result["row"]
    assert row["nfe_f"] > 0
    assert (row["nfe_b"] > 0) == (gradient == "adjoint")
    if network == "rknet":
        assert row["nfe_f"] == 4 * 2  # RK4, step 0.5 on [0, 1]
    assert result["nfe"][0] > 0
    files = {p.name for p in save.iterdir()}
    assert {"config.json", "metrics.csv", "last.pt", "best.pt", "accuracy.png", "nfe.png"} <= files


def test_demo_config_and_folder_naming(tmp_path):
    assert DEMO.dataset == "digits" and DEMO.network == "odenet"
    assert next_free_dir(tmp_path / "demo") == tmp_path / "demo"
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo-2").mkdir()
    assert next_free_dir(tmp_path / "demo") == tmp_path / "demo-3"
