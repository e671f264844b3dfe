"""CIFAR-10 from its official *binary* version; a checked download when the network allows.

The binary version (``cifar-10-binary.tar.gz``) holds ``data_batch_1.bin`` …
``data_batch_5.bin`` (training, 10,000 images each) and ``test_batch.bin`` (10,000), in
the folder ``cifar-10-batches-bin``. Each record is 3,073 bytes: the label (0–9), then
the 1,024 red, 1,024 green and 1,024 blue values of a 32×32 image, row by row. This
reader never touches the *python* version of the dataset: loading its pickles would run
whatever code they hold.

The files are looked for in ``root``, ``root/cifar-10-batches-bin``,
``root/cifar10`` and ``root/cifar10/cifar-10-batches-bin``. ``download_cifar10`` fetches
the archive, checks its MD5 against the one published on the dataset's page, and extracts
only the six expected regular files (by name; no path from the archive is trusted).
An archive already in ``root`` (fetched by hand) is checked and extracted the same way.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import torch

__all__ = [
    "CIFAR10_URL",
    "CIFAR10_MD5",
    "CIFAR10_ARCHIVE",
    "CIFAR10_FOLDER",
    "CIFAR10_TRAIN_FILES",
    "CIFAR10_TEST_FILE",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "RECORD_BYTES",
    "CIFARError",
    "CIFARNotFoundError",
    "read_cifar_batch",
    "write_cifar_batch",
    "locate_cifar10",
    "download_cifar10",
    "load_cifar10",
]

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
# Published on https://www.cs.toronto.edu/~kriz/cifar.html next to the download link.
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_ARCHIVE = "cifar-10-binary.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-bin"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch.bin"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
# Per-channel mean and standard deviation of the 50,000 training images, values in [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

IMAGE_SHAPE = (3, 32, 32)
RECORD_BYTES = 1 + 3 * 32 * 32


class CIFARError(ValueError):
    """A CIFAR-10 file is truncated, corrupt or fails its checksum; the message names it."""


class CIFARNotFoundError(FileNotFoundError):
    """CIFAR-10 files are missing; the message says which, where, and how to get them."""


def read_cifar_batch(path: str | os.PathLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one binary batch file.

    Returns:
        ``(images, labels)``: ``uint8 (N, 3, 32, 32)`` and ``int64 (N,)``.

    Raises:
        CIFARError: the file is empty, not a whole number of 3,073-byte records
            (truncated), or holds a label outside 0–9.
    """
    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise CIFARError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    if not blob:
        raise CIFARError(f"{path}: empty file")
    if len(blob) % RECORD_BYTES:
        raise CIFARError(
            f"{path}: truncated or not a CIFAR-10 binary batch ({len(blob)} bytes is not a "
            f"multiple of the {RECORD_BYTES}-byte record)"
        )
    records = torch.frombuffer(bytearray(blob), dtype=torch.uint8).view(-1, RECORD_BYTES)
    labels = records[:, 0].long()
    if int(labels.max()) >= len(CIFAR10_CLASSES):
        bad = int((labels >= len(CIFAR10_CLASSES)).nonzero()[0, 0])
        raise CIFARError(f"{path}: record {bad} has label {int(labels[bad])}, expected 0-9")
    images = records[:, 1:].reshape(-1, *IMAGE_SHAPE).clone()
    return images, labels


def write_cifar_batch(path: str | os.PathLike, images: torch.Tensor, labels: torch.Tensor) -> Path:
    """Write ``uint8 (N, 3, 32, 32)`` images and their labels as one binary batch file
    (the inverse of :func:`read_cifar_batch`; used by the tests)."""
    path = Path(path)
    if images.dtype != torch.uint8 or tuple(images.shape[1:]) != IMAGE_SHAPE:
        raise ValueError(
            f"images must be uint8 (N, 3, 32, 32), got {images.dtype} {tuple(images.shape)}"
        )
    records = torch.cat([labels.to(torch.uint8)[:, None], images.reshape(len(images), -1)], 1)
    path.write_bytes(records.contiguous().numpy().tobytes())
    return path


def _candidates(root: Path) -> list[Path]:
    return [root, root / CIFAR10_FOLDER, root / "cifar10", root / "cifar10" / CIFAR10_FOLDER]


def locate_cifar10(root: str | os.PathLike) -> Path | None:
    """The first folder under ``root`` (see the module docstring) holding all six files."""
    names = (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)
    for folder in _candidates(Path(root)):
        if all((folder / n).is_file() for n in names):
            return folder
    return None


def _missing_message(root: Path) -> str:
    where = ", ".join(str(p) for p in _candidates(root))
    return (
        f"CIFAR-10: the binary batches ({', '.join(CIFAR10_TRAIN_FILES)}, {CIFAR10_TEST_FILE}) "
        f"are not in any of: {where}. Download {CIFAR10_URL} (MD5 {CIFAR10_MD5}) into "
        f"{root.resolve()} and rerun (it is checked and extracted), or rerun with --download "
        "where the network allows it"
    )


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _extract(archive: Path, dest: Path, md5: str) -> None:
    """Check ``archive``'s MD5 and copy its six batch files into ``dest``."""
    if _md5(archive) != md5:
        raise CIFARError(f"{archive}: MD5 does not match the published {md5}")
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {f"{CIFAR10_FOLDER}/{n}": n for n in (*CIFAR10_TRAIN_FILES, CIFAR10_TEST_FILE)}
    found = set()
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for member in tar:
                name = wanted.get(member.name)
                if name is None or not member.isfile():
                    continue
                source = tar.extractfile(member)
                if source is None:
                    continue
                fd, tmp = tempfile.mkstemp(dir=dest, suffix=".part")
                try:
                    with os.fdopen(fd, "wb") as out:
                        out.write(source.read())
                    read_cifar_batch(tmp)
                    os.replace(tmp, dest / name)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
                found.add(name)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise CIFARError(f"{archive}: corrupt archive ({exc})") from exc
    missing = sorted(set(wanted.values()) - found)
    if missing:
        raise CIFARError(f"{archive}: does not hold {', '.join(missing)}")


def download_cifar10(
    root: str | os.PathLike, url: str = CIFAR10_URL, md5: str = CIFAR10_MD5, timeout: float = 60.0
) -> Path:
    """Make the six binary batches available under ``root/cifar-10-batches-bin``.

    Uses ``root/cifar-10-binary.tar.gz`` when it is there, else downloads it (to a
    temporary name, renamed only once complete); the archive's MD5 must match before
    anything is extracted.

    Returns:
        The folder holding the batches.

    Raises:
        CIFARNotFoundError: the download failed (e.g. no network); the message says how to
            place the files by hand.
        CIFARError: the archive fails its checksum or lacks a batch file.
    """
    root = Path(root)
    found = locate_cifar10(root)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    archive = root / CIFAR10_ARCHIVE
    if not archive.is_file():
        fd, tmp = tempfile.mkstemp(dir=root, suffix=".part")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as r:
                for chunk in iter(lambda: r.read(1 << 20), b""):
                    out.write(chunk)
            if _md5(Path(tmp)) != md5:
                raise CIFARError(f"{url}: downloaded file's MD5 does not match {md5}")
            os.replace(tmp, archive)
        except (urllib.error.URLError, OSError) as exc:
            raise CIFARNotFoundError(
                f"download of {url} failed ({exc}). " + _missing_message(root)
            ) from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    _extract(archive, root / CIFAR10_FOLDER, md5)
    return root / CIFAR10_FOLDER


def load_cifar10(
    root: str | os.PathLike = "data", split: str = "train", download_ok: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split of CIFAR-10 from the binary batches under ``root``.

    Args:
        root: folder searched for the batches (see the module docstring); an archive
            ``root/cifar-10-binary.tar.gz`` is checked and extracted when no batches are found.
        split: ``"train"`` (the five data batches, 50,000 images) or ``"test"`` (10,000).
        download_ok: download the archive when neither batches nor archive are there.

    Returns:
        ``(images, labels)``: ``uint8 (N, 3, 32, 32)`` and ``int64 (N,)``.

    Raises:
        CIFARNotFoundError: the files are missing (the message says where to put what).
        CIFARError: a file is truncated or corrupt, or the archive fails its checksum.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    root = Path(root)
    folder = locate_cifar10(root)
    if folder is None and (download_ok or (root / CIFAR10_ARCHIVE).is_file()):
        folder = download_cifar10(root)
    if folder is None:
        raise CIFARNotFoundError(_missing_message(root))
    names = CIFAR10_TRAIN_FILES if split == "train" else (CIFAR10_TEST_FILE,)
    parts = [read_cifar_batch(folder / n) for n in names]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
