"""Multi-plane harmonized sampling (paper Algorithm 1, DESIGN.md 1.2): 3D volumes from a 2D eps-model.

Layout: ``x`` is (V, D, C, H, W), volume axes D = x, H = y, W = z; the model's batch is the free reshape
(V*D, C, H, W): the slices along the leading spatial axis, the yz plane first. One rotation
R: (d, h, w) -> (h, w, d) moves to xz, then xy, then yz again.

Each step (noisy to clean) makes n_h denoiser calls: between two calls the ``harmonize`` update (denoise,
eq. 17, then renoise, eq. 21, composed into one affine map), after the last call the ``denoise`` update
fused with R. Algorithm 1 line 9 reads "if t_h < n_h and t < 1": a typo for t > 1. At the last step
(t = 1, sigma = 0) there is no renoise, so its n_h calls would all see the same input; it makes one.

Noise and reproducibility: volume v of a call has seed ``seed + v``; its x_T comes from torch's CPU
generator seeded with it and the z of update k (k = 0, 1, ... over all denoiser calls) from the kernels'
Philox stream (seed + v, offset = k). A volume is therefore a function of (models, schedule, settings,
shape, its seed) alone: the same whatever the batch of volumes, the slice chunking ``max_batch``, the rank
it ran on, compiled or reference ops, CPU or CUDA, up to float rounding (which the network's batch-size-
and device-dependent kernels also add, and which a long chain can amplify).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping

import torch
from torch import nn

from .. import ops
from ..axes import PLANES
from ..errors import UserError
from ..phases import to_phases
from .network import network
from .schedule import Affine, NoiseSchedule
from .settings import SamplerPreset, SamplerSettings
from .unet import set_periodic
from .volume_fraction import check_targets, steer

# permute (V, D', C, H', W') after r % 3 rotations back to (V, C, D, H, W)
_CANONICAL = ((0, 2, 1, 3, 4), (0, 2, 4, 1, 3), (0, 2, 3, 4, 1))
_R = (0, 3, 2, 4, 1)  # R as a permute of (V, D', C, H', W')


@dataclass(frozen=True)
class StepRecord:
    """After step ``index`` (0-based, noisy to clean) of ``n_steps``, at model timestep ``t``, of a run with
    ``settings`` on volumes with ``seeds``.

    ``plane``: the plane of the step's last denoiser call. ``x``: (V, C, D, H, W) view of the current
    sample (not a copy: clone it to keep it). ``nfe``, ``seconds``, ``seconds_network``: totals so far
    (without ``sync_timing``, as in the fast path, only the last record waits for the device: earlier ones
    count host time and the forwards already finished).
    """

    index: int
    n_steps: int
    t: int
    plane: str
    x: torch.Tensor
    nfe: int
    seconds: float
    seconds_network: float
    settings: SamplerPreset
    seeds: tuple[int, ...]


@dataclass(frozen=True)
class SampleResult:
    """``volume``: (V, C, D, H, W) float32 x_0; ``seeds``: one per volume; timings in seconds (wall, in the network)."""

    volume: torch.Tensor
    seeds: tuple[int, ...]
    settings: SamplerPreset
    nfe: int
    seconds: float
    seconds_network: float

    @property
    def phases(self) -> torch.Tensor:
        """(V, D, H, W) uint8 phase labels (see ``to_phases``)."""
        return to_phases(self.volume)

    @property
    def seconds_other(self) -> float:
        return self.seconds - self.seconds_network


def _config_attr(model: nn.Module, name: str, default: int) -> int:
    """``model.config.<name>`` (UNet) or ``model.<name>``, else ``default``."""
    return getattr(getattr(model, "config", model), name, default)


def _plane_models(model: nn.Module | Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    if isinstance(model, Mapping):
        if sorted(model) != sorted(PLANES):
            raise UserError(f"per-plane models need exactly the planes {', '.join(PLANES)}, got {', '.join(model)}")
        return dict(model)
    return dict.fromkeys(PLANES, model)


@contextlib.contextmanager
def _padding(models: dict[str, nn.Module], periodic: bool) -> Iterator[None]:
    """Circular (``periodic``) or zero padding in every model for the block; restores each conv's mode after."""
    unique = list({id(m): m for m in models.values()}.values())
    saved = [(c, c.padding_mode) for m in unique for c in m.modules() if isinstance(c, nn.Conv2d)]
    for m in unique:
        set_periodic(m, periodic)
    try:
        yield
    finally:
        for conv, mode in saved:
            conv.padding_mode = mode


def _update(x: torch.Tensor, eps: torch.Tensor, a: Affine, rotate: bool, seeds: list[int], offset: int) -> torch.Tensor:
    """``R(c_x x - c_eps eps + c_z z)`` (R only if ``rotate``), each volume with its own Philox stream.

    In place unless R changes the shape (non-cubic volumes), then one new (V, H, C, W, D) tensor.
    """
    if not rotate:
        for v, s in enumerate(seeds):
            ops.fused_step_(x[v:v + 1], eps[v:v + 1], a.c_x, a.c_eps, a.c_z, seed=s, offset=offset)
        return x
    outs = [ops.fused_step_rotate(x[v:v + 1], eps[v:v + 1], a.c_x, a.c_eps, a.c_z, seed=s, offset=offset)
            for v, s in enumerate(seeds)]
    in_place = outs[0].data_ptr() == x.data_ptr()
    return x if in_place else outs[0] if len(outs) == 1 else torch.cat(outs)


def iter_sample_volume(model: nn.Module | Mapping[str, nn.Module], schedule: NoiseSchedule,
                       shape: tuple[int, int, int], n_volumes: int = 1,
                       settings: SamplerSettings = SamplerSettings()) -> Iterator[StepRecord]:
    """Run Algorithm 1 on ``n_volumes`` volumes of ``shape`` (D, H, W), yielding a StepRecord after every step.

    ``model``: eps-model ``(B, C, h, w), (B,) -> (B, C, h, w)`` on the settings' device (default: its own), or a
    dict {"yz", "xz", "xy"} of them (anisotropic materials). ``settings``: see ``SamplerSettings``; the models'
    padding is restored when the generator ends.
    """
    cfg, st = settings.preset, settings
    models = _plane_models(model)
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(f"shape must be three positive sides (D, H, W), got {tuple(shape)}")
    div = max(_config_attr(m, "divisor", 1) for m in models.values())
    if any(s % div for s in shape):
        raise UserError(f"every side of the volume must be a multiple of {div} for this U-Net, got {tuple(shape)}")
    channels = {_config_attr(m, "channels", 1) for m in models.values()}
    if len(channels) != 1:
        raise UserError(f"per-plane models disagree on channels: {sorted(channels)}")
    if n_volumes < 1 or st.seed < 0 or (st.max_batch is not None and st.max_batch < 1):
        raise UserError(f"need n_volumes >= 1, seed >= 0, max_batch >= 1; got {n_volumes}, {st.seed}, {st.max_batch}")
    device = torch.device(st.device or next(models["yz"].parameters(), torch.empty(0)).device)
    reverse = schedule.steps(cfg.steps, method=cfg.method, eta=cfg.eta)
    D, H, W = (int(s) for s in shape)
    C = channels.pop()
    targets = None if st.volume_fraction is None else check_targets(st.volume_fraction, C)
    seeds = [st.seed + v for v in range(n_volumes)]
    anchors = st.anchors
    if anchors is not None and tuple(anchors.mask.shape) != (D, H, W):
        raise UserError(f"anchors are for a {tuple(anchors.mask.shape)} volume, not {(D, H, W)}")
    anchor_noise = [torch.Generator().manual_seed(s + (1 << 40)) for s in seeds]  # apart from x_T's streams
    max_batch = st.max_batch or n_volumes * max(D, H, W)

    start, paused, nfe, turns, offset = time.perf_counter(), 0.0, 0, 0, 0
    z = torch.stack([torch.randn((D, C, H, W), generator=torch.Generator().manual_seed(s)) for s in seeds])
    x = schedule.prior(z, reverse[0].alphabar, *(st.prior or (None, None))).to(device)
    if anchors is not None and anchors.skip == PLANES[0]:
        x, turns = x.permute(_R).contiguous(), 1
    with _padding(models, st.periodic), network(models, st.options, max_batch, device) as net:
        for i, step in enumerate(reverse):
            final = i == len(reverse) - 1
            calls = 1 if final else cfg.n_harmonize  # Alg. 1 line 9 ("t > 1"): no renoise at t = 1
            for h in range(calls):
                plane = PLANES[turns % 3]
                if anchors is not None:
                    anchors.impose(x.permute(_CANONICAL[turns % 3]), step.alphabar, anchor_noise)
                eps = net(plane, x, step.t)  # timed inside (synced, or CUDA events in the fast path)
                if targets is not None:
                    var = st.x0_moments[plane].at(step.t, "var") if st.x0_moments else None
                    eps = steer(x, eps, step.predictor, targets, var)
                last = h == calls - 1
                turn = st.rotate and (last or st.rotate_between_harmonize)
                # eq. 17 (+ eq. 21 renoise, composed) as one affine map; R to the next plane after the step
                x = _update(x, eps, step.denoise if last else step.harmonize, turn, seeds, offset)
                offset, turns, nfe = offset + 1, turns + turn, nfe + 1  # a Philox stream per update
                if turn and anchors is not None and PLANES[turns % 3] == anchors.skip:
                    x, turns = x.permute(_R).contiguous(), turns + 1  # R once more: skip the anchors' plane
            if final and anchors is not None:
                anchors.impose(x.permute(_CANONICAL[turns % 3]), 1.0, anchor_noise)  # exact in x_0
            if net.options.sync_timing or final:
                net.sync()
            t_yield = time.perf_counter()
            yield StepRecord(i, len(reverse), step.t, plane, x.permute(_CANONICAL[turns % 3]), nfe,
                             t_yield - start - paused, net.seconds(wait=final), cfg, tuple(seeds))
            paused += time.perf_counter() - t_yield


def sample_volume(model: nn.Module | Mapping[str, nn.Module], schedule: NoiseSchedule,
                  shape: tuple[int, int, int], n_volumes: int = 1, settings: SamplerSettings | None = None, *,
                  callback: Callable[[StepRecord], None] | None = None, **changes) -> SampleResult:
    """Sample ``n_volumes`` volumes of ``shape`` (D, H, W) with ``settings``, or ``SamplerSettings.make(**changes)``.

    ``callback(record)`` runs after every step (progress bars; an exception it raises stops the run).
    Returns the (V, C, D, H, W) volumes, their seeds and timings; ``.phases`` gives (V, D, H, W) uint8.
    """
    if settings is not None and changes:
        raise TypeError(f"give settings or the keyword arguments {', '.join(changes)}, not both")
    records = iter_sample_volume(model, schedule, shape, n_volumes, settings or SamplerSettings.make(**changes))
    with contextlib.closing(records):  # restores the models' padding even when the callback raises
        for rec in records:
            if callback is not None:
                callback(rec)
    return SampleResult(rec.x.contiguous(), rec.seeds, rec.settings, rec.nfe, rec.seconds, rec.seconds_network)
