"""Volumes as VTK XML ImageData (``.vti``) for ParaView and other VTK tools, without a VTK dependency.

Axis order: our arrays are (D, H, W) in C order, so W varies fastest. VTK's x varies fastest, so
x = W, y = H, z = D, and the bytes go out unchanged. ``spacing`` and ``origin`` are given in our order
(d, h, w) and reversed for VTK. The data are one array (default name "phase") in ``AppendedData``, raw
binary, little-endian, UInt64 headers, zlib-compressed in blocks by default, each voxel a VTK cell.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Sequence
from xml.sax.saxutils import quoteattr

import numpy as np

from .errors import UserError
from .io import atomic_path

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
    """Read a ``.vti`` of the kind ``write_vti`` writes (one appended raw array, optional zlib).

    Returns (volume (D, H, W), spacing (d, h, w), origin (d, h, w)). Raises UserError for anything else.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
        start = data.index(b"<AppendedData")
        root = ET.fromstring(data[:start] + b"</VTKFile>")
        marker = data.index(b"_", start) + 1
        image = root.find("ImageData")
        array = image.find("Piece/CellData/DataArray")
        cells = array is not None
        if not cells:
            array = image.find("Piece/PointData/DataArray")
        extent = [int(v) for v in image.get("WholeExtent").split()]
        dtype = np.dtype({v: k for k, v in _VTK_TYPES.items()}[array.get("type")]).newbyteorder("<")
        header = np.dtype("<u8" if root.get("header_type") == "UInt64" else "<u4")
        body = data[marker + int(array.get("offset")) :]
        if root.get("compressor") is None:
            n = int(np.frombuffer(body, header, 1)[0])
            raw = body[header.itemsize : header.itemsize + n]
        elif root.get("compressor") == "vtkZLibDataCompressor":
            n_blocks = int(np.frombuffer(body, header, 1)[0])
            sizes = np.frombuffer(body, header, 3 + n_blocks)[3:].astype(np.int64)
            ends = header.itemsize * (3 + n_blocks) + np.cumsum(sizes)
            raw = b"".join(zlib.decompress(body[e - s : e]) for s, e in zip(sizes, ends))
        else:
            raise UserError(f"{path}: unsupported compressor {root.get('compressor')}")
        spacing = tuple(float(v) for v in reversed(image.get("Spacing").split()))
        origin = tuple(float(v) for v in reversed(image.get("Origin").split()))
    except UserError:
        raise
    except Exception as exc:  # a foreign or damaged file fails in many ways
        raise UserError(f"cannot read {path} as .vti: {type(exc).__name__}: {exc}") from None
    w, h, d = (extent[1] - extent[0], extent[3] - extent[2], extent[5] - extent[4])
    shape = (d, h, w) if cells else (d + 1, h + 1, w + 1)
    if len(raw) != dtype.itemsize * int(np.prod(shape)):
        raise UserError(f"{path}: {len(raw)} data bytes do not fit extent {extent}")
    return np.frombuffer(raw, dtype).reshape(shape).astype(dtype.newbyteorder("=")), spacing, origin
