"""CIFAR-10: the binary batch reader on small files written in the official format, the
checked archive extraction, the augmentation, the plateau schedule, the ODE-only net and
`odeflow train cifar10` dry runs (CIFAR-10 itself is not on these machines)."""

import hashlib
import io
import tarfile

import pytest
import torch

from odeflow import cli
from odeflow.data import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFARError,
    CIFARNotFoundError,
    color_jitter,
    download_cifar10,
    load_cifar10,
    normalize,
    random_hflip,
    read_cifar_batch,
    write_cifar_batch,
)
from odeflow.data.cifar10 import CIFAR10_MD5, CIFAR10_URL, RECORD_BYTES
from odeflow.experiments import EXPERIMENTS
from odeflow.experiments.cifar10 import CIFAR10Config, build
from odeflow.nn import count_parameters, odeonly
from odeflow.training import plateau_lr, read_metrics

NAMES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


def _write_set(folder, per_file=8):
    """Six batch files of ``per_file`` random images each; returns their contents."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = {}
    for i, name in enumerate(NAMES):
        parts[name] = _images(per_file, i)
        write_cifar_batch(folder / name, *parts[name])
    return parts


# --- the binary format ------------------------------------------------------------------


def test_record_layout_is_label_then_red_green_blue_planes(tmp_path):
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    x[1, 0, 0, 0], x[1, 1, 0, 0], x[1, 2, 0, 1], x[1, 0, 1, 0] = 11, 22, 33, 44
    path = write_cifar_batch(tmp_path / "b.bin", x, torch.tensor([3, 7]))
    blob = path.read_bytes()
    assert len(blob) == 2 * RECORD_BYTES == 2 * 3073
    r = blob[RECORD_BYTES:]  # second record
    assert r[0] == 7 and r[1] == 11 and r[1 + 1024] == 22 and r[1 + 2048 + 1] == 33
    assert r[1 + 32] == 44  # row-major: pixel (1, 0) of the red plane
    images, labels = read_cifar_batch(path)
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 32, 32)
    assert torch.equal(images, x) and labels.tolist() == [3, 7]


def test_truncated_empty_and_bad_label_files_name_the_file(tmp_path):
    path = write_cifar_batch(tmp_path / "data_batch_1.bin", *_images(3, 0))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(CIFARError, match="data_batch_1.bin.*truncated"):
        read_cifar_batch(path)
    path.write_bytes(b"")
    with pytest.raises(CIFARError, match="data_batch_1.bin: empty"):
        read_cifar_batch(path)
    path.write_bytes(bytes([10]) + bytes(3072))
    with pytest.raises(CIFARError, match="label 10"):
        read_cifar_batch(path)


@pytest.mark.parametrize("layout", ["", "cifar-10-batches-bin", "cifar10/cifar-10-batches-bin"])
def test_load_from_a_local_folder(tmp_path, layout):
    parts = _write_set(tmp_path / layout if layout else tmp_path)
    x, y = load_cifar10(tmp_path, "train")
    assert x.shape == (40, 3, 32, 32) and y.shape == (40,) and y.dtype == torch.int64
    assert torch.equal(x[8:16], parts["data_batch_2.bin"][0])  # batches 1..5 in order
    tx, ty = load_cifar10(tmp_path, "test")
    assert torch.equal(tx, parts["test_batch.bin"][0])
    assert torch.equal(ty, parts["test_batch.bin"][1])


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(CIFARNotFoundError) as exc:
        load_cifar10(tmp_path / "nothing", "train")
    msg = str(exc.value)
    assert CIFAR10_URL in msg and CIFAR10_MD5 in msg and "--download" in msg


def _archive(tmp_path, extra=()):
    """A cifar-10-binary.tar.gz of small batches, plus ``extra`` (name, bytes) members."""
    src = tmp_path / "src"
    parts = _write_set(src)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in NAMES:
            tar.add(src / name, arcname=f"cifar-10-batches-bin/{name}")
        for name, data in extra:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = buf.getvalue()
    return blob, hashlib.md5(blob).hexdigest(), parts


def test_download_checks_md5_and_extracts_only_the_six_batches(tmp_path):
    blob, md5, parts = _archive(tmp_path, extra=[("../evil.txt", b"x"), ("/abs.txt", b"y")])
    served = tmp_path / "served.tar.gz"
    served.write_bytes(blob)
    root = tmp_path / "data"
    folder = download_cifar10(root, url=served.as_uri(), md5=md5)
    assert folder == root / "cifar-10-batches-bin"
    assert sorted(p.name for p in folder.iterdir()) == sorted(NAMES)
    assert not (tmp_path / "evil.txt").exists() and not (root / "evil.txt").exists()
    x, _ = read_cifar_batch(folder / "data_batch_3.bin")
    assert torch.equal(x, parts["data_batch_3.bin"][0])
    assert (root / "cifar-10-binary.tar.gz").read_bytes() == blob  # kept for next time


def test_bad_checksum_extracts_nothing(tmp_path):
    blob, _, _ = _archive(tmp_path)
    root = tmp_path / "data"
    root.mkdir()
    (root / "cifar-10-binary.tar.gz").write_bytes(blob)  # fetched by hand
    with pytest.raises(CIFARError, match="MD5 does not match"):
        load_cifar10(root, "train")  # the official MD5 is checked
    assert not (root / "cifar-10-batches-bin").exists()


def test_no_network_download_fails_with_instructions(tmp_path):
    with pytest.raises(CIFARNotFoundError, match="download of .* failed"):
        download_cifar10(tmp_path, url=(tmp_path / "absent.tar.gz").as_uri())
    assert not list(tmp_path.glob("*.part"))


# --- augmentation, schedule, model --------------------------------------------------------


def test_flip_jitter_normalize():
    x = torch.rand(64, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    f = random_hflip(x, generator=g)
    flipped = (f != x).flatten(1).any(1)
    assert torch.equal(f[flipped], x[flipped].flip(-1)) and 10 < int(flipped.sum()) < 54
    j1 = color_jitter(x, generator=torch.Generator().manual_seed(1))
    j2 = color_jitter(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(j1, j2) and j1.min() >= 0 and j1.max() <= 1
    assert 0 < (j1 - x).abs().mean() < 0.1  # slight
    assert torch.allclose(color_jitter(x, 0, 0, 0), x, atol=1e-6)
    n = normalize(torch.tensor(CIFAR10_MEAN)[None, :, None, None].expand(1, 3, 2, 2), CIFAR10_MEAN,
                  CIFAR10_STD)  # fmt: skip
    assert n.abs().max() < 1e-6


def test_plateau_lr_replays_torchs_reduce_on_plateau():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(60, generator=g) * 0.1 + torch.linspace(0.3, 0.9, 60).clamp(max=0.7)
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=3)
    for epoch in range(60):
        assert plateau_lr(scores[:epoch].tolist(), 0.1, patience=3) == pytest.approx(
            opt.param_groups[0]["lr"]
        ), epoch
        sched.step(float(scores[epoch]))
    assert opt.param_groups[0]["lr"] < 0.1  # the sequence did plateau


def test_odeonly_net_is_the_assignments():
    net = odeonly(in_channels=3, dim=128)
    assert count_parameters(net) == 306_058
    assert net[0].in_channels == 3 and net[0].out_channels == 128 and net[0].stride == (2, 2)
    assert net[1].method == "rk4_classic" and net[1].options == {"step_size": 0.1}
    assert isinstance(net[4], torch.nn.Dropout) and net[4].p == 0.5
    assert net[-1].in_features == 128 and net[-1].out_features == 10


def test_config_defaults_and_build(tmp_path):
    cfg = EXPERIMENTS["cifar10"]
    assert isinstance(cfg, CIFAR10Config)
    assert (cfg.network, cfg.width, cfg.step_size, cfg.lr, cfg.momentum) == (
        "odeonly", 128, 0.1, 0.1, 0.9
    )  # fmt: skip
    assert (cfg.weight_decay, cfg.plateau_patience, cfg.batch_size) == (1e-4, 15, 128)
    _write_set(tmp_path, per_file=4)
    parts = build(CIFAR10Config(data_dir=str(tmp_path), width=8, val_samples=6, batch_size=4,
                                test_batch_size=8))  # fmt: skip
    assert len(parts["train_loader"].labels) == 14 and len(parts["val_loader"].labels) == 6
    x, _ = next(iter(parts["test_loader"]))
    assert x.shape == (4, 3, 32, 32) and x.min() < 0  # normalised
    assert parts["lr_schedule"](0, []) == pytest.approx(0.1 * 4 / 128)


# --- odeflow train cifar10 -----------------------------------------------------------------

DRY = ["--dry-run", "--width", "8", "--val-samples", "8", "--batch-size", "4",
       "--test-batch-size", "4", "--threads", "1", "--progress", "False"]  # fmt: skip


@pytest.mark.parametrize(
    "flags,nfe_f",
    [([], 40), (["--network", "odenet"], None), (["--network", "resnet"], 0),
     (["--adaptive", "True", "--adjoint", "True"], None)],
)  # fmt: skip
def test_train_cifar10_dry_run(tmp_path, capsys, flags, nfe_f):
    _write_set(tmp_path / "data")
    run = tmp_path / "run"
    code = cli.main(["train", "cifar10", *DRY, *flags, "--data-dir", str(tmp_path / "data"),
                     "--save", str(run)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert "test accuracy" in capsys.readouterr().out
    (row,) = read_metrics(run)
    assert 0 <= row["val_acc"] <= 1 and 0 <= row["test_acc"] <= 1
    if nfe_f is not None:
        assert row["nfe_f"] == nfe_f  # classic RK4, step 0.1: 10 steps x 4 stages
    else:
        assert row["nfe_f"] > 0 and row["nfe_f"] != 40
    assert (row["nfe_b"] > 0) == ("--adjoint" in flags)
    assert {"config.json", "last.pt", "best.pt", "accuracy.png", "nfe.png"} <= {
        p.name for p in run.iterdir()
    }


def test_train_cifar10_user_errors(tmp_path, capsys):
    _write_set(tmp_path / "data")
    cut = tmp_path / "data" / "test_batch.bin"
    cut.write_bytes(cut.read_bytes()[:-1])
    args = ["train", "cifar10", *DRY, "--data-dir", str(tmp_path / "data")]
    assert cli.main([*args, "--save", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(cut) in err and "truncated" in err and len(err.splitlines()) == 1
    assert cli.main(["train", "cifar10", *DRY, "--data-dir", str(tmp_path / "none"),
                     "--save", str(tmp_path / "run2")]) == 2  # fmt: skip
    assert "cifar-10-binary.tar.gz" in capsys.readouterr().err
