"""How the sampler runs its network, the reference way or the fast way.

``Network`` is the one object the sampler loop calls for eps. With ``SamplerOptions()`` (all off) it is the
reference: ``slice_eps`` (fp32, eager, ``max_batch`` slices per forward), a device sync after every
forward and the host clock for the network's share. ``SamplerOptions.fast(device)`` turns on, on CUDA
(``channels_last`` and ``fused_unet`` on the CPU):

- ``autocast_bf16``: the U-Net under bf16 autocast; its Conv2d/Linear weights are held in bf16 for the run
  (what autocast would cast them to on every call, so the numbers are autocast's, without the per-call weight
  casts); GroupNorm stays fp32 (autocast's policy). eps comes out bf16; the state x and every update stay
  fp32 (the fused step reads bf16 eps and computes in fp32).
- ``channels_last``: 4D weights and the model's input in channels_last memory format (cuDNN's / oneDNN's NHWC
  kernels).
- ``fused_unet`` (CPU): the U-Net's inference fusions (``unet.set_fused``): each GroupNorm (+ time scale /
  shift) + SiLU as one compiled op, ``micro3diff::group_norm_silu`` (two passes over the activations where
  eager PyTorch makes four), and the 3x3 convolutions of the residual blocks and of the decoder's upsampling
  (read in place from the low-resolution input) by Winograd F(4x4, 3x3), ``micro3diff::conv3x3`` (1/4 of the
  multiply-adds).
- ``cuda_graph``: the whole eps computation (all ``max_batch`` chunks) for one (plane model, x shape) is
  captured once in a CUDA graph with static buffers and replayed: x is copied into the static input (no copy
  when x already is it: cubic volumes are updated in place, so after the first call x is the static input),
  the timestep is written into a static (B,) tensor with ``fill_`` (a device kernel, no host sync).
- ``sync_timing``: sync after every forward and time it on the host clock (the reference's instrumentation).
  Off in the fast path: forwards are timed with CUDA events, read without waiting except at the end.

The fused update stays outside the graph, eager: its coefficients and Philox (seed, offset) are plain host
numbers handed to one kernel launch per volume (no sync; ops.fused_step_* take them as scalars). The graph
holds only the network, whose inputs (x, t) live in device buffers, so replay needs no per-step re-capture.

Models are changed in place for the run (weights' dtype and memory format) and restored exactly (the original
parameter tensors are put back) when the ``network`` context ends.
"""
from __future__ import annotations

import contextlib
import dataclasses
import time
from collections import deque
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn

from ..errors import UserError
from .unet import set_fused

@dataclass(frozen=True)
class SamplerOptions:
    """How the sampler runs its network. The default (all False, ``sync_timing``) is the reference loop."""

    autocast_bf16: bool = False
    channels_last: bool = False
    cuda_graph: bool = False
    fused_unet: bool = False
    sync_timing: bool = True

    @classmethod
    def fast(cls, device: torch.device | str) -> "SamplerOptions":
        """The fast path for ``device``: on CUDA bf16, channels_last and a CUDA graph; on the CPU channels_last
        (oneDNN's NHWC convolutions) and the U-Net's inference fusions (fp32 both: the same volume up to float
        rounding; benchmarks/results/cpu_speed.json); no per-forward sync."""
        cuda = torch.device(device).type == "cuda" and torch.cuda.is_available()
        cpu = torch.device(device).type == "cpu"
        return cls(autocast_bf16=cuda, channels_last=True, cuda_graph=cuda, fused_unet=cpu, sync_timing=False)

    def check(self, device: torch.device) -> None:
        """UserError if a feature is asked for on a device it does not run on."""
        if (self.autocast_bf16 or self.cuda_graph) and not (device.type == "cuda" and torch.cuda.is_available()):
            raise UserError(f"autocast_bf16 and cuda_graph need a CUDA device, got {device}")
        if self.fused_unet and device.type != "cpu":
            raise UserError(f"fused_unet (micro3diff::group_norm_silu, conv3x3) has CPU kernels only, got {device}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def slice_eps(model: nn.Module, x: torch.Tensor, t: int | torch.Tensor, max_batch: int) -> torch.Tensor:
    """eps of every slice of x (V, D, C, H, W): the model on (V*D, C, H, W), ``max_batch`` slices per forward.

    ``t``: the model timestep, or a (V*D,) long tensor of it (CUDA graphs keep it in a device buffer).
    """
    xb = x.view(-1, *x.shape[2:])
    tb = t if isinstance(t, torch.Tensor) else torch.full((xb.shape[0],), t, dtype=torch.long, device=x.device)
    with torch.no_grad():
        if xb.shape[0] <= max_batch:
            return model(xb, tb).reshape(x.shape)
        chunks = [model(xb[i:i + max_batch], tb[i:i + max_batch]) for i in range(0, xb.shape[0], max_batch)]
        return torch.cat(chunks).reshape(x.shape)


@contextlib.contextmanager
def _prepared_weights(models: list[nn.Module], options: SamplerOptions) -> Iterator[None]:
    """bf16 Conv2d/Linear weights and/or channels_last 4D weights and/or the U-Net's inference fusions for the
    block; the originals put back after."""
    saved: list[tuple[nn.Parameter, torch.Tensor]] = []
    try:
        for m in models:
            set_fused(m, options.fused_unet)
            for mod in m.modules():
                if not isinstance(mod, (nn.Conv2d, nn.Linear)):
                    continue
                for p in mod.parameters(recurse=False):
                    data = p.data
                    if options.autocast_bf16 and data.is_floating_point():
                        data = data.to(torch.bfloat16)
                    if options.channels_last and data.dim() == 4:
                        data = data.contiguous(memory_format=torch.channels_last)
                    if data is not p.data:
                        saved.append((p, p.data))
                        p.data = data
        yield
    finally:
        for p, data in saved:
            p.data = data
        for m in models:
            set_fused(m, False)


class Network:
    """eps of every slice of x (V, D, C, H, W) by the plane's model, and the seconds spent in it."""

    def __init__(self, models: dict[str, nn.Module], options: SamplerOptions, max_batch: int,
                 device: torch.device):
        self.models, self.options, self.max_batch, self.device = models, options, max_batch, device
        self.cuda = device.type == "cuda"
        self._graphs: dict[tuple, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self._pool = None
        self._events: deque = deque()
        self._seconds = 0.0
        self.forwards = 0

    # -- the forward --------------------------------------------------------------------------------

    def _forward(self, model: nn.Module, x: torch.Tensor, t: int | torch.Tensor) -> torch.Tensor:
        """The reference eps (``slice_eps``) with the options' autocast / channels_last around it."""
        if self.options.channels_last:
            inner = model
            model = lambda xb, tb: inner(xb.contiguous(memory_format=torch.channels_last), tb)  # noqa: E731
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.options.autocast_bf16, cache_enabled=False):
            return slice_eps(model, x, t, self.max_batch)

    def _graphed(self, plane: str, x: torch.Tensor, t: int) -> torch.Tensor:
        model = self.models[plane]
        key = (id(model), tuple(x.shape))
        if key not in self._graphs:
            static_x = x  # cubic volumes are updated in place: x stays the static input, no copy per call
            static_t = torch.full((x.shape[0] * x.shape[1],), t, dtype=torch.long, device=x.device)
            side = torch.cuda.Stream(x.device)
            side.wait_stream(torch.cuda.current_stream(x.device))
            benchmark = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True  # choose conv algorithms once, in the warm-up
            try:
                with torch.cuda.stream(side):
                    for _ in range(2):  # warm-up off the capture (cuDNN/cuBLAS handles)
                        self._forward(model, static_x, static_t)
                torch.cuda.current_stream(x.device).wait_stream(side)
                if self._pool is None:
                    self._pool = torch.cuda.graph_pool_handle()
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, pool=self._pool):
                    static_eps = self._forward(model, static_x, static_t)
            finally:
                torch.backends.cudnn.benchmark = benchmark
            self._graphs[key] = (graph, static_x, static_t, static_eps)
        graph, static_x, static_t, static_eps = self._graphs[key]
        if x.data_ptr() != static_x.data_ptr():
            static_x.copy_(x)
        static_t.fill_(t)
        graph.replay()
        return static_eps  # overwritten by the next replay: used by the update before that

    def __call__(self, plane: str, x: torch.Tensor, t: int) -> torch.Tensor:
        """eps for x (V, D, C, H, W) at model timestep t; float32, or bfloat16 under ``autocast_bf16``."""
        self.forwards += 1
        if self.options.sync_timing or not self.cuda:
            t0 = time.perf_counter()
            eps = self._graphed(plane, x, t) if self.options.cuda_graph else self._forward(self.models[plane], x, t)
            if self.cuda:
                torch.cuda.synchronize(self.device)
            self._seconds += time.perf_counter() - t0
            return eps
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        eps = self._graphed(plane, x, t) if self.options.cuda_graph else self._forward(self.models[plane], x, t)
        end.record()
        self._events.append((start, end))
        return eps

    # -- timing -------------------------------------------------------------------------------------

    def seconds(self, wait: bool = False) -> float:
        """Seconds in the network so far: all forwards (``wait``: waits for the device), else those finished."""
        while self._events and (wait or self._events[0][1].query()):
            start, end = self._events.popleft()
            end.synchronize()
            self._seconds += start.elapsed_time(end) / 1e3
        return self._seconds

    def sync(self) -> None:
        """Wait for the device (the reference syncs before every StepRecord; the fast path only at the end)."""
        if self.cuda:
            torch.cuda.synchronize(self.device)


@contextlib.contextmanager
def network(models: dict[str, nn.Module], options: SamplerOptions | None, max_batch: int,
            device: torch.device) -> Iterator[Network]:
    """A ``Network`` for the block, with the models' weights prepared for ``options`` and restored after."""
    options = options or SamplerOptions()
    options.check(device)
    unique = list({id(m): m for m in models.values()}.values())
    with _prepared_weights(unique, options):
        net = Network(models, options, max_batch, device)
        try:
            yield net
        finally:
            net._graphs.clear()
