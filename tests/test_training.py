"""odeflow.training: schedule, atomic checkpoints, the loop's run folder, exact resume."""

import json
import os

import pytest
import torch

from odeflow.data import BatchLoader, load_dataset
from odeflow.nn import build_classifier
from odeflow.training import (
    METRIC_FIELDS,
    RunExistsError,
    atomic_save,
    fit,
    load_checkpoint,
    lr_at,
    read_metrics,
)
from odeflow.training.plots import plot_runs

TIME_FIELDS = ("time_per_batch", "epoch_time")


def test_lr_schedule_is_the_seeds():
    assert lr_at(0) == pytest.approx(0.1)
    assert lr_at(59) == pytest.approx(0.1)
    assert lr_at(60) == pytest.approx(0.01)
    assert lr_at(100) == pytest.approx(0.001)
    assert lr_at(140) == pytest.approx(0.0001)
    assert lr_at(0, batch_size=256) == pytest.approx(0.2)
    assert lr_at(5, milestones=(3,), decay=0.5) == pytest.approx(0.05)


def test_atomic_save_leaves_no_temporary_and_loads_weights_only(tmp_path):
    path = tmp_path / "sub" / "x.pt"
    atomic_save({"a": torch.ones(2), "b": [1, 2.5, "s"]}, path)
    atomic_save({"a": torch.zeros(2), "b": []}, path)  # replaces
    assert os.listdir(path.parent) == ["x.pt"]
    obj = torch.load(path, weights_only=True)
    assert torch.equal(obj["a"], torch.zeros(2))


def test_load_checkpoint_rejects_foreign_files(tmp_path):
    torch.save({"weights": torch.ones(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an odeflow checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.pt")


def _parts(seed=0, network="mlp"):
    data = load_dataset("digits", max_train_samples=192, max_test_samples=96,
                        digits_size=12, digits_pad=2)  # fmt: skip
    train = BatchLoader(data.train_x, data.train_y, 32, shuffle=True, crop_padding=2, seed=seed)
    test = BatchLoader(data.test_x, data.test_y, 64, shuffle=False)
    torch.manual_seed(seed)
    model = build_classifier(network, image_size=12, dim=8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return model, opt, train, test


def _fit(run_dir, nepochs, resume=False, network="mlp"):
    model, opt, train, test = _parts(network=network)
    history = fit(
        model, opt, train, test, run_dir=run_dir, nepochs=nepochs,
        lr_fn=lambda e: lr_at(e, 0.1, 32, (1,), 0.5), config={"network": network},
        device=torch.device("cpu"), resume=resume, progress=False, plots=False,
        log=lambda s: None,
    )  # fmt: skip
    return model, history


def test_fit_writes_the_run_folder(tmp_path):
    run = tmp_path / "run"
    model, history = _fit(run, 2)
    assert sorted(p.name for p in run.iterdir()) == [
        "best.pt", "config.json", "last.pt", "metrics.csv"
    ]  # fmt: skip
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    assert set(rows[0]) == set(METRIC_FIELDS)
    assert rows[1]["lr"] == pytest.approx(0.0125)  # 0.1 * 32/128 * 0.5 after epoch 1
    assert all(0 <= r["test_acc"] <= 1 and r["time_per_batch"] > 0 for r in rows)
    assert json.loads((run / "config.json").read_text()) == {"network": "mlp"}
    ckpt = torch.load(run / "last.pt", weights_only=True)
    assert ckpt["epoch"] == 2 and len(ckpt["history"]) == 2
    for k, v in model.state_dict().items():
        assert torch.equal(ckpt["model"][k], v)
    best = torch.load(run / "best.pt", weights_only=True)
    assert best["best_acc"] == max(r["test_acc"] for r in rows)


def test_fit_refuses_to_overwrite_a_run(tmp_path):
    _fit(tmp_path / "run", 1)
    with pytest.raises(RunExistsError, match="--resume"):
        _fit(tmp_path / "run", 1)


@pytest.mark.parametrize("network", ["mlp", "odenet"])
def test_resume_equals_an_uninterrupted_run(tmp_path, network):
    straight, h_straight = _fit(tmp_path / "a", 2, network=network)
    _fit(tmp_path / "b", 1, network=network)
    resumed, h_resumed = _fit(tmp_path / "b", 2, resume=True, network=network)
    for (k, v), w in zip(straight.state_dict().items(), resumed.state_dict().values(),
                         strict=True):  # fmt: skip
        assert torch.equal(v, w), k
    assert len(h_resumed) == 2
    strip = [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in h_straight]
    assert [{k: v for k, v in r.items() if k not in TIME_FIELDS} for r in h_resumed] == strip
    assert [r["epoch"] for r in read_metrics(tmp_path / "b")] == [1, 2]


def test_resume_without_checkpoint_fails(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        _fit(tmp_path / "none", 1, resume=True)


def test_plots_overlay_runs(tmp_path):
    _fit(tmp_path / "r1", 1)
    _fit(tmp_path / "r2", 1)
    paths = plot_runs([tmp_path / "r1", tmp_path / "r2"], tmp_path / "cmp")
    assert [p.name for p in paths] == ["accuracy.png", "nfe.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plot_runs([tmp_path / "nothing"], tmp_path / "cmp")
