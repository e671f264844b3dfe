"""MNIST and Fashion-MNIST from IDX files in a folder; checked downloads when allowed.

The four files of each dataset (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, raw or ``.gz``) are looked for in
``root``, ``root/<name>``, ``root/<Name>/raw`` (torchvision's layout) and the Debian
package folder ``/usr/share/datasets/<name>`` (``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch

from .idx import IDXError, read_idx

__all__ = [
    "IDXFile",
    "IDXDataset",
    "MNIST",
    "FASHION_MNIST",
    "IDX_DATASETS",
    "DataNotFoundError",
    "locate",
    "download",
    "load_idx_dataset",
]


@dataclass(frozen=True)
class IDXFile:
    """One file of an IDX dataset and the SHA-256 digests that identify it.

    Attributes:
        name: file name without ``.gz``.
        count: number of items it must hold.
        sha256_gz: digest of the ``.gz`` served by the canonical mirrors, if known.
        sha256_raw: digest of the decompressed file, if known (survives re-compression).
    """

    name: str
    count: int
    sha256_gz: str | None = None
    sha256_raw: str | None = None


@dataclass(frozen=True)
class IDXDataset:
    """An MNIST-shaped dataset: four IDX files, download mirrors, class names."""

    name: str
    title: str
    mirrors: tuple[str, ...]
    train_images: IDXFile
    train_labels: IDXFile
    test_images: IDXFile
    test_labels: IDXFile
    classes: tuple[str, ...]

    @property
    def files(self) -> tuple[IDXFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


MNIST = IDXDataset(
    name="mnist",
    title="MNIST",
    mirrors=(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    train_images=IDXFile(
        "train-images-idx3-ubyte",
        60000,
        sha256_gz="440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    train_labels=IDXFile(
        "train-labels-idx1-ubyte",
        60000,
        sha256_gz="3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    test_images=IDXFile(
        "t10k-images-idx3-ubyte",
        10000,
        sha256_gz="8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    # Its digest was not available when this table was written: the file is checked by
    # its IDX header and size only.
    test_labels=IDXFile("t10k-labels-idx1-ubyte", 10000),
    classes=tuple(str(i) for i in range(10)),
)

FASHION_MNIST = IDXDataset(
    name="fashion-mnist",
    title="Fashion-MNIST",
    mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    train_images=IDXFile(
        "train-images-idx3-ubyte",
        60000,
        sha256_raw="c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ),
    train_labels=IDXFile(
        "train-labels-idx1-ubyte",
        60000,
        sha256_raw="bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ),
    test_images=IDXFile(
        "t10k-images-idx3-ubyte",
        10000,
        sha256_raw="5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ),
    test_labels=IDXFile(
        "t10k-labels-idx1-ubyte",
        10000,
        sha256_raw="0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ),
    classes=(
        "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
        "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
    ),
)  # fmt: skip

IDX_DATASETS: dict[str, IDXDataset] = {MNIST.name: MNIST, FASHION_MNIST.name: FASHION_MNIST}


class DataNotFoundError(FileNotFoundError):
    """A dataset's files are missing; the message says which, where, and how to get them."""


def _candidates(root: Path, spec: IDXDataset) -> list[Path]:
    dirs = [root, root / spec.name, root / spec.title / "raw", root / spec.title]
    debian = Path("/usr/share/datasets") / spec.name
    return [*dirs, debian]


def locate(root: str | os.PathLike, spec: IDXDataset, file: IDXFile) -> Path | None:
    """Find ``file`` (raw or ``.gz``) in the folders searched for ``spec`` under ``root``."""
    for folder in _candidates(Path(root), spec):
        for name in (file.name, file.name + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _missing_message(root: Path, spec: IDXDataset, missing: list[IDXFile]) -> str:
    names = ", ".join(f.name + "[.gz]" for f in missing)
    where = "\n  ".join(str(p) for p in _candidates(root, spec))
    urls = "\n  ".join(spec.mirrors[0] + f.name + ".gz" for f in spec.files)
    hint = (
        "\nOn Debian/Ubuntu: `apt-get install dataset-fashion-mnist` puts them in "
        "/usr/share/datasets/fashion-mnist, which is searched."
        if spec is FASHION_MNIST
        else ""
    )
    return (
        f"{spec.title}: missing {names}.\nLooked in:\n  {where}\n"
        f"Put the four IDX files (raw or .gz) in {root.resolve()} (or pass --data-dir), "
        f"e.g. from:\n  {urls}\nor rerun with --download where the network allows it."
        f"{hint}"
    )


def _verify(path: Path, file: IDXFile) -> None:
    blob = path.read_bytes()
    if file.sha256_gz and hashlib.sha256(blob).hexdigest() == file.sha256_gz:
        return
    if file.sha256_raw:
        try:
            raw = gzip.decompress(blob) if blob[:2] == b"\x1f\x8b" else blob
        except (OSError, EOFError) as exc:
            raise IDXError(f"{path}: corrupt gzip data ({exc})") from exc
        if hashlib.sha256(raw).hexdigest() == file.sha256_raw:
            return
    if file.sha256_gz or file.sha256_raw:
        raise IDXError(f"{path}: SHA-256 does not match the published digest")


def download(spec: IDXDataset, root: str | os.PathLike, timeout: float = 30.0) -> None:
    """Download the files of ``spec`` that ``root`` lacks, checking SHA-256 digests.

    Each file goes to a temporary name and is renamed only after its digest (and IDX
    header) check out, so an interrupted download never leaves a bad file behind.

    Raises:
        DataNotFoundError: no mirror could deliver a file (e.g. no network); the message
            tells where to put the files by hand.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for file in spec.files:
        if (root / file.name).is_file() or (root / (file.name + ".gz")).is_file():
            continue
        errors = []
        for mirror in spec.mirrors:
            url = mirror + file.name + ".gz"
            fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                    out.write(r.read())
                _verify(Path(tmp), file)
                read_idx(tmp)
                os.replace(tmp, root / (file.name + ".gz"))
                break
            except (urllib.error.URLError, OSError, IDXError) as exc:
                errors.append(f"{url}: {exc}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise DataNotFoundError(
                "download failed:\n  "
                + "\n  ".join(errors)
                + "\n\n"
                + _missing_message(root, spec, [file])
            )


def load_idx_dataset(
    name: str, root: str | os.PathLike = "data", split: str = "train", download_ok: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of MNIST or Fashion-MNIST.

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        root: folder holding the IDX files (see the module docstring for the search).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000).
        download_ok: download missing files from the canonical mirrors first.

    Returns:
        ``(images, labels)``: ``uint8`` ``(N, 28, 28)`` and ``int64`` ``(N,)``.

    Raises:
        DataNotFoundError: files missing (the message says where to put which files).
        IDXError: a file is corrupt, truncated, or inconsistent with its partner.
    """
    if name not in IDX_DATASETS:
        raise ValueError(f"unknown IDX dataset {name!r}; choose from {sorted(IDX_DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    spec = IDX_DATASETS[name]
    root = Path(root)
    if download_ok and any(locate(root, spec, f) is None for f in spec.files):
        download(spec, root)
    files = (
        (spec.train_images, spec.train_labels)
        if split == "train"
        else (spec.test_images, spec.test_labels)
    )
    paths = [locate(root, spec, f) for f in files]
    missing = [f for f, p in zip(files, paths, strict=True) if p is None]
    if missing:
        raise DataNotFoundError(_missing_message(root, spec, missing))
    images = read_idx(paths[0], expect_ndim=3)
    labels = read_idx(paths[1], expect_ndim=1)
    if images.dtype != torch.uint8 or labels.dtype != torch.uint8:
        raise IDXError(f"{paths[0]} / {paths[1]}: expected unsigned-byte IDX data")
    if tuple(images.shape[1:]) != (28, 28):
        raise IDXError(f"{paths[0]}: images are {tuple(images.shape[1:])}, expected (28, 28)")
    if images.shape[0] != labels.shape[0]:
        raise IDXError(
            f"{paths[0]} has {images.shape[0]} images but {paths[1]} has {labels.shape[0]} labels"
        )
    if labels.numel() and int(labels.max()) >= len(spec.classes):
        raise IDXError(f"{paths[1]}: label {int(labels.max())} out of range")
    return images, labels.long()
