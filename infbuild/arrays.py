"""Reading the arrays users hand in (``samples:`` .npz files, ``infbuild run --input`` .npy files) with bounded
memory: a file is a regular file, each array's header (shape, dtype) is read and checked by the caller before a byte
of its data is allocated, the data must be exactly what the header declares (a zip member's declared size, a .npy
file's length), and object arrays are refused. Every problem is a ValueError with one line of text."""
from __future__ import annotations

import stat
import zipfile
from pathlib import Path
from typing import IO, Callable

import numpy as np

Expect = Callable[[str, tuple[int, ...], np.dtype], None]  # (array name, shape, dtype): raise ValueError to refuse


def _header(stream: IO[bytes], where: str) -> tuple[tuple[int, ...], np.dtype, bool, int]:
    """(shape, dtype, fortran order, data bytes) from a .npy header, without reading the data."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"unsupported .npy version {version}")
    except (ValueError, EOFError, OSError) as exc:
        raise ValueError(f"{where}: not a .npy array ({str(exc).splitlines()[0][:120] or 'truncated'})") from None
    if dtype.hasobject:
        raise ValueError(f"{where}: holds Python objects (refused: loading them could run code)")
    count = 1
    for size in shape:
        count *= int(size)
    return tuple(int(s) for s in shape), dtype, bool(fortran), count * dtype.itemsize


def _data(stream: IO[bytes], shape: tuple[int, ...], dtype: np.dtype, fortran: bool, nbytes: int, where: str) -> np.ndarray:
    raw = stream.read(nbytes)
    if len(raw) != nbytes:
        raise ValueError(f"{where}: truncated ({len(raw)} of {nbytes} bytes of data)")
    array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
    return array.copy()


def _regular(path: Path) -> int:
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path}: not a regular file")
    if st.st_size == 0:
        raise ValueError(f"{path}: empty file")
    return st.st_size


def read_npy(path: Path, expect: Expect, name: str) -> np.ndarray:
    """One .npy file, its header checked by ``expect`` and its length by the header before the data is read."""
    size = _regular(path)
    with open(path, "rb") as f:
        shape, dtype, fortran, nbytes = _header(f, str(path))
        expect(name, shape, dtype)
        if f.tell() + nbytes != size:
            raise ValueError(f"{path}: {size} bytes, but its header declares {f.tell() + nbytes} (truncated or padded)")
        return _data(f, shape, dtype, fortran, nbytes, str(path))


def read_npz(path: Path, expect: Expect) -> dict[str, np.ndarray]:
    """Every array of a .npz file (a zip of .npy members), each header checked by ``expect`` and each member's
    declared size by its header before anything is decompressed beyond the header."""
    _regular(path)
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ValueError(f"{path}: not a .npz file ({str(exc)[:120] or 'truncated'})") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        for info in archive.infolist():
            if info.is_dir():
                continue
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            where = f"{path}: {name}"
            try:
                with archive.open(info) as member:
                    shape, dtype, fortran, nbytes = _header(member, where)
                    expect(name, shape, dtype)
                    if info.file_size != member.tell() + nbytes:
                        raise ValueError(f"{where}: the archive declares {info.file_size} bytes, the header "
                                         f"{member.tell() + nbytes}")
                    arrays[name] = _data(member, shape, dtype, fortran, nbytes, where)
            except (zipfile.BadZipFile, EOFError, OSError, NotImplementedError) as exc:
                raise ValueError(f"{where}: damaged ({str(exc)[:120] or 'truncated'})") from None
    return arrays
