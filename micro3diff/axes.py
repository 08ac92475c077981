"""The one rule for volume axes and plane names, used by the sampler, training, metrics, anchors and the CLI.

A volume is a (D, H, W) array. Axis letters: x = D (array axis 0), y = H (1), z = W (2). A plane is named by
the two axes it spans: "yz" = slices at fixed x (D), "xz" = at fixed y (H), "xy" = at fixed z (W); PLANES[k]
is the plane whose slices lie across array axis k, and the sampler visits them in this order. Viewers name
the axes of the same array differently: Fiji's slice index and ParaView's z are D, ParaView's x is W.

The sampler stores a volume so that the current plane's slices are the leading axis; one rotation
R: (d, h, w) -> (h, w, d) moves yz -> xz -> xy. So the model of plane PLANES[k] sees the volume permuted by
R^k: yz images (H, W), xz images (W, D) (transposed with respect to ``volume[:, h, :]``), xy images (D, H).
``plane_slices`` cuts a volume the same way (training per-plane models without augmentation).
"""
from __future__ import annotations

from typing import Any

from .errors import UserError

PLANES = ("yz", "xz", "xy")  # slices at fixed D, H, W
AXES = ("x", "y", "z")  # array axes D, H, W


def plane_slices(volume: Any, axis: int) -> Any:
    """(D, H, W) -> (N, h, w) slices along ``axis`` oriented as the sampler presents that plane to the model.

    A cyclic shift of the axes (axis 0, 1, 2: images (H, W), (W, D), (D, H)), not ``np.moveaxis`` (which
    would transpose the xz images and matter for per-plane models trained without augmentation). A view.
    """
    return volume.transpose(axis, (axis + 1) % 3, (axis + 2) % 3)


def plane_stack(volume: Any, plane: str) -> Any:
    """(D, H, W) -> (N, h, w) contiguous numpy stack of the slices plane ``plane``'s model sees in the sampler."""
    import numpy as np

    if plane not in PLANES:
        raise UserError(f"plane must be one of {', '.join(PLANES)}, got {plane!r}")
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise UserError(f"plane_stack needs a 3D volume (D, H, W), got shape {volume.shape}")
    return np.ascontiguousarray(plane_slices(volume, PLANES.index(plane)))


def orthogonal_planes(volumes: Any) -> dict[str, Any]:
    """Slices of volumes (B, D, H, W) (tensor) for 2D metrics: yz (B, D, H, W), xz (B, H, D, W), xy (B, W, D, H)."""
    return {"yz": volumes, "xz": volumes.permute(0, 2, 1, 3), "xy": volumes.permute(0, 3, 1, 2)}
