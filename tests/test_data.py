"""odeflow.data: IDX reading and checks, MNIST/Fashion-MNIST folders and downloads,
digits, augmentation and the deterministic loader."""

import gzip
import io
import urllib.error
from pathlib import Path

import pytest
import torch

from odeflow.data import (
    FASHION_MNIST,
    MNIST,
    BatchLoader,
    DataNotFoundError,
    IDXError,
    download,
    load_dataset,
    load_digits,
    load_idx_dataset,
    random_crop,
    read_idx,
    write_idx,
)
from odeflow.data import mnist as mnist_module

DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


# --- IDX --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32,
                                   torch.float32, torch.float64])  # fmt: skip
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_roundtrip(tmp_path, dtype, suffix):
    x = (torch.randn(3, 4, 5) * 50).to(dtype)
    path = write_idx(tmp_path / f"a-idx3{suffix}", x)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    y = read_idx(path)
    assert y.dtype == dtype and torch.equal(x, y)


def test_idx_is_big_endian(tmp_path):
    path = write_idx(tmp_path / "b", torch.tensor([1, 256], dtype=torch.int32))
    assert path.read_bytes() == bytes.fromhex("0000 0c 01 00000002 00000001 00000100")


def test_idx_bad_magic_names_the_file(tmp_path):
    path = tmp_path / "bad-idx"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00\x00\x00\x01" + b"\x05")
    with pytest.raises(IDXError, match="bad-idx.*magic"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_truncated_names_the_file(tmp_path, suffix):
    full = tmp_path / f"full{suffix}"
    write_idx(full, torch.zeros(10, 28, 28, dtype=torch.uint8))
    raw = gzip.decompress(full.read_bytes()) if suffix else full.read_bytes()
    cut = tmp_path / f"cut-images{suffix}"
    blob = raw[:-100]
    cut.write_bytes(gzip.compress(blob) if suffix else blob)
    with pytest.raises(IDXError, match="cut-images.*truncated"):
        read_idx(cut)


def test_idx_trailing_data_is_an_error(tmp_path):
    path = write_idx(tmp_path / "t", torch.zeros(4, dtype=torch.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(IDXError, match="trailing"):
        read_idx(path)


def test_idx_corrupt_gzip_names_the_file(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x04abcd")[:-12])
    with pytest.raises(IDXError, match="broken.gz.*gzip"):
        read_idx(path)


def test_idx_wrong_ndim(tmp_path):
    path = write_idx(tmp_path / "labels", torch.zeros(4, dtype=torch.uint8))
    with pytest.raises(IDXError, match="1 dimensions, expected 3"):
        read_idx(path, expect_ndim=3)


# --- MNIST-style folders ------------------------------------------------------------------


def _write_fake(folder: Path, n_train=20, n_test=10, gz=True, label_count=None):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    sfx = ".gz" if gz else ""
    tr = torch.randint(0, 256, (n_train, 28, 28), generator=g, dtype=torch.uint8)
    te = torch.randint(0, 256, (n_test, 28, 28), generator=g, dtype=torch.uint8)
    trl = torch.randint(0, 10, (label_count or n_train,), generator=g, dtype=torch.uint8)
    tel = torch.randint(0, 10, (n_test,), generator=g, dtype=torch.uint8)
    write_idx(folder / f"train-images-idx3-ubyte{sfx}", tr)
    write_idx(folder / f"train-labels-idx1-ubyte{sfx}", trl)
    write_idx(folder / f"t10k-images-idx3-ubyte{sfx}", te)
    write_idx(folder / f"t10k-labels-idx1-ubyte{sfx}", tel)
    return tr, trl, te, tel


@pytest.mark.parametrize("gz", [True, False])
def test_load_idx_dataset_from_folder(tmp_path, gz):
    tr, trl, te, tel = _write_fake(tmp_path / "mnist", gz=gz)
    x, y = load_idx_dataset("mnist", tmp_path, "train")  # found in root/mnist
    assert torch.equal(x, tr) and torch.equal(y, trl.long())
    x, y = load_idx_dataset("mnist", tmp_path / "mnist", "test")
    assert torch.equal(x, te) and y.dtype == torch.int64


def test_label_count_mismatch_is_an_error(tmp_path):
    _write_fake(tmp_path, n_train=20, label_count=19)
    with pytest.raises(IDXError, match="20 images but .* 19 labels"):
        load_idx_dataset("mnist", tmp_path, "train")


def test_missing_files_message_says_where_and_what(tmp_path):
    with pytest.raises(DataNotFoundError) as err:
        load_idx_dataset("mnist", tmp_path, "train")
    msg = str(err.value)
    assert "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert str(tmp_path.resolve()) in msg
    assert "ossci-datasets.s3.amazonaws.com" in msg and "--download" in msg


def test_download_without_network_fails_clearly(tmp_path, monkeypatch):
    def offline(url, timeout=None):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", offline)
    with pytest.raises(DataNotFoundError, match="(?s)download failed.*network unreachable"):
        download(MNIST, tmp_path)
    assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.gz"))


def _serve(monkeypatch, payloads: dict[str, bytes]):
    def fake(url, timeout=None):
        name = url.rsplit("/", 1)[1]
        if name not in payloads:
            raise urllib.error.URLError("404")
        return io.BytesIO(payloads[name])

    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", fake)


def test_download_rejects_a_file_with_the_wrong_digest(tmp_path, monkeypatch):
    blob = gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x02\x01\x02")
    _serve(monkeypatch, {f.name + ".gz": blob for f in FASHION_MNIST.files})
    with pytest.raises(DataNotFoundError, match="SHA-256 does not match"):
        download(FASHION_MNIST, tmp_path)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind


def test_download_accepts_files_with_matching_digests(tmp_path, monkeypatch):
    # A dataset spec whose digests are those of small files served by a fake mirror.
    import dataclasses
    import hashlib

    src = tmp_path / "src"
    _write_fake(src)
    payloads = {p.name: p.read_bytes() for p in src.iterdir()}
    files = [
        dataclasses.replace(
            f, sha256_gz=hashlib.sha256(payloads[f.name + ".gz"]).hexdigest(), sha256_raw=None
        )
        for f in MNIST.files
    ]
    spec = dataclasses.replace(
        MNIST, name="tiny", train_images=files[0], train_labels=files[1],
        test_images=files[2], test_labels=files[3],
    )  # fmt: skip
    _serve(monkeypatch, payloads)
    download(spec, tmp_path / "dst")
    assert sorted(p.name for p in (tmp_path / "dst").iterdir()) == sorted(payloads)


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason="apt-get install dataset-fashion-mnist")
def test_debian_fashion_mnist():
    x, y = load_idx_dataset("fashion-mnist", "/nonexistent-folder", "test")
    assert x.shape == (10000, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(torch.bincount(y), torch.full((10,), 1000))
    x, y = load_idx_dataset("fashion-mnist", DEBIAN_FASHION, "train")
    assert x.shape == (60000, 28, 28)
    assert torch.equal(torch.bincount(y), torch.full((10,), 6000))
    for f in FASHION_MNIST.files:  # the published SHA-256 of the decompressed files
        mnist_module._verify(DEBIAN_FASHION / (f.name + ".gz"), f)


# --- digits -------------------------------------------------------------------------------


def test_digits_layout_and_split():
    tx, ty, vx, vy = load_digits()
    assert tx.shape[1:] == (1, 28, 28) and vx.shape[1:] == (1, 28, 28)
    assert len(tx) + len(vx) == 1797
    assert 0.0 <= float(tx.min()) and float(tx.max()) <= 1.0
    # MNIST-like: the 4-pixel border is empty, the digit sits in the 20x20 box
    assert float(tx[..., :4, :].abs().sum()) == 0.0 and float(tx[..., 4:24, 4:24].sum()) > 0
    # stratified: every class ~20 % held out
    frac = torch.bincount(vy, minlength=10).float() / (
        torch.bincount(vy, minlength=10) + torch.bincount(ty, minlength=10)
    )
    assert torch.all((frac - 0.2).abs() < 0.02)


def test_digits_split_depends_on_seed_only():
    a, b = load_digits(seed=0), load_digits(seed=0)
    c = load_digits(seed=1)
    assert torch.equal(a[3], b[3]) and not torch.equal(a[3], c[3])


def test_digits_native_size():
    tx, *_ = load_digits(size=8, pad=0)
    assert tx.shape[1:] == (1, 8, 8)


def test_load_dataset_subsets():
    data = load_dataset("digits", max_train_samples=100, max_test_samples=50)
    assert len(data.train_x) == 100 and len(data.test_y) == 50 and data.num_classes == 10
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar")


# --- augmentation and loader ---------------------------------------------------------------


def test_random_crop_is_a_shifted_window():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    gen = torch.Generator().manual_seed(3)
    out = random_crop(x, padding=2, generator=gen)
    assert out.shape == x.shape
    gen = torch.Generator().manual_seed(3)
    oy = torch.randint(0, 5, (2,), generator=gen)
    ox = torch.randint(0, 5, (2,), generator=gen)
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        expected = padded[i, :, oy[i] : oy[i] + 6, ox[i] : ox[i] + 6]
        assert torch.equal(out[i], expected)
    assert torch.equal(random_crop(x, padding=0), x)


def _collect(loader, epoch):
    loader.set_epoch(epoch)
    return [(x.clone(), y.clone()) for x, y in loader]


def test_loader_replays_an_epoch_exactly_and_reshuffles_between_epochs():
    x = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8)
    y = torch.arange(50)
    loader = BatchLoader(x, y, 8, shuffle=True, crop_padding=4, seed=7)
    a, b, c = _collect(loader, 2), _collect(loader, 2), _collect(loader, 3)
    assert len(a) == len(loader) == 7
    assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(a, b))
    assert not torch.equal(torch.cat([t[1] for t in a]), torch.cat([t[1] for t in c]))
    assert sorted(torch.cat([t[1] for t in a]).tolist()) == list(range(50))
    assert a[0][0].dtype == torch.float32 and a[0][0].shape[1:] == (1, 28, 28)


def test_loader_shards_for_two_ranks():
    x, y = torch.zeros(21, 1, 4, 4), torch.arange(21)
    train = [BatchLoader(x, y, 4, shuffle=True, seed=0, rank=r, world_size=2) for r in (0, 1)]
    seen = [torch.cat([b[1] for b in _collect(ld, 0)]) for ld in train]
    assert len(seen[0]) == len(seen[1]) == 11  # padded to equal length for DDP
    assert set(seen[0].tolist()) | set(seen[1].tolist()) == set(range(21))
    test = [BatchLoader(x, y, 4, shuffle=False, rank=r, world_size=2) for r in (0, 1)]
    shards = [torch.cat([b[1] for b in ld]) for ld in test]
    assert sorted(torch.cat(shards).tolist()) == list(range(21))  # each sample exactly once


def test_loader_max_batches():
    loader = BatchLoader(torch.zeros(40, 1, 4, 4), torch.zeros(40), 4, shuffle=False,
                         max_batches=2)  # fmt: skip
    assert len(loader) == 2 and len(list(loader)) == 2
