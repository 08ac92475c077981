"""Volumes as VTK XML ImageData (``.vti``) for ParaView and other VTK tools; VTK (``pip install vtk``) is optional.

Axis order: our arrays are (D, H, W) in C order, so W varies fastest. VTK's x varies fastest, so
x = W, y = H, z = D, and the bytes go out unchanged. ``spacing`` and ``origin`` are given in our order
(d, h, w) and reversed for VTK. The data are one array (default name "phase") in ``AppendedData``, raw
binary, little-endian, UInt64 headers, zlib-compressed in blocks by default, each voxel a VTK cell.
"""
from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from ..errors import UserError
from .files import atomic_path

_VTK_TYPES = {
    np.dtype(t): name
    for t, name in [
        (np.int8, "Int8"), (np.uint8, "UInt8"), (np.int16, "Int16"), (np.uint16, "UInt16"),
        (np.int32, "Int32"), (np.uint32, "UInt32"), (np.int64, "Int64"), (np.uint64, "UInt64"),
        (np.float32, "Float32"), (np.float64, "Float64"),
    ]
}
_BLOCK = 1 << 20  # uncompressed bytes per zlib block


def _triple(name: str, value: float | Sequence[float]) -> tuple[float, float, float]:
    v = np.asarray(value, dtype=float)
    v = np.full(3, v) if v.ndim == 0 else v
    if v.shape != (3,) or not np.isfinite(v).all():
        raise UserError(f"{name} must be one number or three (d, h, w), got {value!r}")
    return tuple(float(x) for x in v)


def write_vti(
    path: str | os.PathLike,
    volume: np.ndarray,
    spacing: float | Sequence[float] = 1.0,
    origin: float | Sequence[float] = 0.0,
    name: str = "phase",
    cells: bool = True,
    compress: bool = True,
) -> None:
    """Write ``volume`` (D, H, W) or one image (H, W) as ``.vti``, atomically.

    volume: bool / integer / float array (bool is written as UInt8). spacing, origin: scalars or (d, h, w).
    cells=True: each voxel is a cell (extent 0..W, ParaView shows voxels as cubes; ``origin`` is the corner
    of the first voxel); False: each voxel is a point (extent 0..W-1; ``origin`` is the first voxel centre).
    """
    arr = np.asarray(volume)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.size == 0:
        raise UserError(f"write_vti needs a non-empty 2D or 3D array, got shape {arr.shape}")
    if arr.dtype not in _VTK_TYPES:
        raise UserError(f"write_vti: unsupported dtype {arr.dtype}")
    raw = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
    if compress:
        blocks = [zlib.compress(raw[i : i + _BLOCK]) for i in range(0, len(raw), _BLOCK)]
        # header: number of blocks, block size, size of the last block if partial (else 0), compressed sizes
        header = [len(blocks), _BLOCK, len(raw) % _BLOCK] + [len(b) for b in blocks]
        payload = np.asarray(header, "<u8").tobytes() + b"".join(blocks)
    else:
        payload = np.asarray([len(raw)], "<u8").tobytes() + raw
    d, h, w = arr.shape
    last = 0 if cells else 1
    extent = f"0 {w - last} 0 {h - last} 0 {d - last}"
    sd, sh, sw = _triple("spacing", spacing)
    od, oh, ow = _triple("origin", origin)
    kind = "CellData" if cells else "PointData"
    compressor = ' compressor="vtkZLibDataCompressor"' if compress else ""
    head = (
        '<?xml version="1.0"?>\n'
        f'<VTKFile type="ImageData" version="1.0" byte_order="LittleEndian" header_type="UInt64"{compressor}>\n'
        f'  <ImageData WholeExtent="{extent}" Origin="{ow!r} {oh!r} {od!r}" Spacing="{sw!r} {sh!r} {sd!r}"'
        ' Direction="1 0 0 0 1 0 0 0 1">\n'
        f'    <Piece Extent="{extent}">\n'
        f"      <{kind} Scalars={quoteattr(name)}>\n"
        f'        <DataArray type="{_VTK_TYPES[arr.dtype]}" Name={quoteattr(name)} format="appended" offset="0"/>\n'
        f"      </{kind}>\n"
        "    </Piece>\n"
        "  </ImageData>\n"
        '  <AppendedData encoding="raw">\n   _'
    )
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(head.encode())
        fh.write(payload)
        fh.write(b"\n  </AppendedData>\n</VTKFile>\n")


def read_vti(path: str | os.PathLike) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """Read a ``.vti``: through VTK's own reader when the ``vtk`` package is installed (any file VTK writes), else
    the built-in reader (what ``write_vti`` writes; anything else: one line saying to ``pip install vtk``).

    Returns (volume (D, H, W), spacing (d, h, w), origin (d, h, w)). Raises UserError if unreadable.
    """
    path = Path(path)
    try:
        from vtkmodules.vtkIOXML import vtkXMLImageDataReader
    except ImportError:
        return _read_builtin(path)
    return _read_with_vtk(path, vtkXMLImageDataReader())


def _read_with_vtk(path: Path, reader) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """The first one-component array of an ImageData file (cell data first, else point data) via VTK."""
    from vtkmodules.util.numpy_support import vtk_to_numpy
    from vtkmodules.vtkCommonCore import vtkObject

    if not reader.CanReadFile(str(path)):
        raise UserError(f"cannot read {path} as .vti: VTK's reader does not recognise it as VTK ImageData")
    shown = vtkObject.GetGlobalWarningDisplay()
    vtkObject.GlobalWarningDisplayOff()  # a damaged file gives the one line below, not VTK's log
    try:
        reader.SetFileName(str(path))
        reader.Update()
    finally:
        vtkObject.SetGlobalWarningDisplay(shown)
    image = reader.GetOutput()
    nx, ny, nz = image.GetDimensions()
    for data, shape in ((image.GetCellData(), (max(nz - 1, 1), max(ny - 1, 1), max(nx - 1, 1))),
                        (image.GetPointData(), (nz, ny, nx))):
        array = data.GetScalars() if data.GetScalars() is not None else data.GetArray(0)
        if array is not None and array.GetNumberOfComponents() == 1 and array.GetNumberOfTuples() == np.prod(shape):
            volume = np.array(vtk_to_numpy(array)).reshape(shape)
            return volume, tuple(reversed(image.GetSpacing())), tuple(reversed(image.GetOrigin()))
    raise UserError(f"cannot read {path} as .vti: VTK's reader found no one-component image array in it")


class _Unsupported(Exception):
    """A valid .vti in an encoding the built-in reader does not read."""


def _read_builtin(path: Path) -> tuple[np.ndarray, tuple[float, ...], tuple[float, ...]]:
    """The reader without VTK: one appended raw array, optional zlib (what ``write_vti`` writes)."""
    try:
        data = path.read_bytes()
        start = data.find(b"<AppendedData")
        root = ET.fromstring(data if start < 0 else data[:start] + b"</VTKFile>")
        image = root.find("ImageData")
        array = image.find("Piece/CellData/DataArray")
        cells = array is not None
        if not cells:
            array = image.find("Piece/PointData/DataArray")
        if array.get("format") != "appended":
            raise _Unsupported(f"{array.get('format')} data arrays")
        encoding = re.match(rb'<AppendedData\s+encoding="(\w+)"', data[start:])
        if not encoding or encoding[1] != b"raw":
            raise _Unsupported(f"{encoding[1].decode() if encoding else 'unknown'}-encoded appended data")
        extent = [int(v) for v in image.get("WholeExtent").split()]
        dtype = np.dtype({v: k for k, v in _VTK_TYPES.items()}[array.get("type")]).newbyteorder("<")
        header = np.dtype("<u8" if root.get("header_type") == "UInt64" else "<u4")
        body = data[data.index(b"_", start) + 1 + int(array.get("offset")):]
        if root.get("compressor") is None:
            n = int(np.frombuffer(body, header, 1)[0])
            raw = body[header.itemsize : header.itemsize + n]
        elif root.get("compressor") == "vtkZLibDataCompressor":
            n_blocks = int(np.frombuffer(body, header, 1)[0])
            sizes = np.frombuffer(body, header, 3 + n_blocks)[3:].astype(np.int64)
            ends = header.itemsize * (3 + n_blocks) + np.cumsum(sizes)
            raw = b"".join(zlib.decompress(body[e - s : e]) for s, e in zip(sizes, ends))
        else:
            raise _Unsupported(f"{root.get('compressor')} compression")
        spacing = tuple(float(v) for v in reversed(image.get("Spacing").split()))
        origin = tuple(float(v) for v in reversed(image.get("Origin").split()))
    except Exception as exc:  # a foreign or damaged file fails in many ways
        reason = str(exc) if isinstance(exc, _Unsupported) else f"{type(exc).__name__}: {exc}"
        raise UserError(f"cannot read {path} with the built-in .vti reader ({reason}); pip install vtk to read "
                        f"every .vti that VTK writes") from None
    w, h, d = (extent[1] - extent[0], extent[3] - extent[2], extent[5] - extent[4])
    shape = (d, h, w) if cells else (d + 1, h + 1, w + 1)
    if len(raw) != dtype.itemsize * int(np.prod(shape)):
        raise UserError(f"{path}: {len(raw)} data bytes do not fit extent {extent}")
    return np.frombuffer(raw, dtype).reshape(shape).astype(dtype.newbyteorder("=")), spacing, origin
