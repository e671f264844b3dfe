"""Read and write IDX files (the MNIST format), raw or gzip-compressed, with strict checks."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path

import torch

__all__ = ["IDXError", "read_idx", "write_idx"]

# IDX type code -> (torch dtype, big-endian numpy-style itemsize)
_TYPES: dict[int, tuple[torch.dtype, int]] = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}
_CODES = {dtype: code for code, (dtype, _) in _TYPES.items()}


class IDXError(ValueError):
    """An IDX file is corrupt, truncated or not what was expected; the message names it."""


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise IDXError(f"{path}: cannot read ({exc})") from exc
    if path.suffix == ".gz" or raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise IDXError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    return raw


def read_idx(path: str | os.PathLike, expect_ndim: int | None = None) -> torch.Tensor:
    """Read an IDX file into a tensor.

    Args:
        path: an IDX file, raw or gzip-compressed (``.gz`` or gzip magic bytes).
        expect_ndim: if given, the number of dimensions the file must have.

    Returns:
        A tensor with the file's shape and dtype (``uint8`` for MNIST).

    Raises:
        IDXError: bad magic number, unknown type code, wrong number of dimensions, or a
            size that does not match the header (truncated or trailing data). The message
            names the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise IDXError(f"{path}: too short to be an IDX file ({len(data)} bytes)")
    zero, code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or code not in _TYPES or ndim == 0:
        raise IDXError(
            f"{path}: bad IDX magic number 0x{data[:4].hex()} "
            "(expected 0x0000 then a type code in 08/09/0B/0C/0D/0E and a dimension count)"
        )
    if expect_ndim is not None and ndim != expect_ndim:
        raise IDXError(f"{path}: has {ndim} dimensions, expected {expect_ndim}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXError(f"{path}: truncated header ({len(data)} bytes, need {header})")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype, itemsize = _TYPES[code]
    expected = header + math.prod(shape) * itemsize
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "has trailing data"
        raise IDXError(f"{path}: {what}: {len(data)} bytes, header {tuple(shape)} needs {expected}")
    payload = bytearray(data[header:])
    tensor = (
        torch.frombuffer(payload, dtype=torch.uint8)
        if payload
        else torch.empty(0, dtype=torch.uint8)
    )
    if itemsize > 1:
        # IDX is big-endian: reverse the bytes of each item, then reinterpret.
        tensor = tensor.view(-1, itemsize).flip(1).reshape(-1)
    return tensor.view(dtype).reshape(shape).clone()


def write_idx(path: str | os.PathLike, tensor: torch.Tensor, compress: bool | None = None) -> Path:
    """Write ``tensor`` as an IDX file (gzip-compressed if ``compress`` or the name ends in .gz).

    Args:
        path: destination.
        tensor: any tensor of a dtype IDX supports (uint8, int8, int16, int32, float32,
            float64).
        compress: force gzip on or off; by default from the suffix.

    Returns:
        The path written.
    """
    path = Path(path)
    if tensor.dtype not in _CODES:
        raise ValueError(f"IDX cannot store dtype {tensor.dtype}")
    code = _CODES[tensor.dtype]
    itemsize = _TYPES[code][1]
    flat = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8)
    if itemsize > 1:
        flat = flat.view(-1, itemsize).flip(1).reshape(-1)
    header = struct.pack(">HBB", 0, code, tensor.dim()) + struct.pack(
        f">{tensor.dim()}I", *tensor.shape
    )
    blob = header + flat.numpy().tobytes()
    if compress or (compress is None and path.suffix == ".gz"):
        blob = gzip.compress(blob)
    path.write_bytes(blob)
    return path
