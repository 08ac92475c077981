"""Noise schedules and the coefficients of every affine sampler update (DESIGN.md 1.1-1.2).

All numbers are float64; kernels receive plain Python floats. Timesteps are 0-based model indices:
model timestep ``t = 0`` is the paper's ``t = 1`` (the last, noise-free step).

Schedules (``ScheduleConfig.kind``): "linear" (the paper's betas 1e-4..1e-2, alphabar_T = 0.0063), "cosine"
(Nichol & Dhariwal) and "linear_zsnr": the linear betas rescaled so that sqrt(alphabar) falls linearly to
exactly 0 at T (Lin et al. 2024, "Common diffusion noise schedules and sample steps are flawed", Alg. 1). With
zero terminal SNR x_T ~ N(0, I) exactly, so Algorithm 1's start is the true q(x_T); eps is then not
identifiable at T, so such a schedule needs the v-prediction network (``prediction = "v"``,
v = sqrt(alphabar) eps - sqrt(1-alphabar) x_0, Salimans & Ho 2022).

The network predicts p = eps or v; then x0-hat = a_x x - a_p p and eps-hat = b_x x - b_p p (``Predictor``).
Every update of the sampler is ``out = c_x * x - c_eps * p + c_z * z`` (``Affine``):
- denoise (DDPM, eq. 9 with sigma_t^2 = beta_t): the posterior mean A x0-hat + B x with
  A = sqrt(alphabar') beta / (1-alphabar), B = sqrt(alpha) (1-alphabar') / (1-alphabar); for eps this is
  c_x = 1/sqrt(alpha), c_eps = beta/(sqrt(alpha) sqrt(1-alphabar)); c_z = sqrt(beta) (0 at the last step);
- DDIM(eta): sqrt(alphabar') x0-hat + sqrt(1-alphabar'-sigma^2) eps-hat + sigma z,
  sigma = eta sqrt((1-alphabar')/(1-alphabar)) sqrt(1-alphabar/alphabar')   (alphabar' = previous step's);
  eta = 1 is DDPM with the posterior variance beta-tilde instead of beta;
- denoise then renoise (harmonize, paper eq. 21, x_t = sqrt(1-beta) x_{t-1} + sqrt(beta) z) composes to one map:
  c_x sqrt(alpha), c_eps sqrt(alpha), sqrt(alpha c_z^2 + beta), drawn with one normal.
A respaced schedule uses beta'_i = 1 - alphabar_{tau_i} / alphabar_{tau_{i-1}} everywhere (never the original beta).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..errors import UserError


@dataclass(frozen=True)
class ScheduleConfig:
    """Training noise schedule and what the network predicts (see the module docstring).

    ``kind``: "linear" (betas beta_start..beta_end), "linear_zsnr" (the same rescaled to zero terminal SNR)
    or "cosine"; ``prediction``: "eps" or "v". Checkpoints without ``prediction`` are eps models.
    """

    kind: str = "linear"
    T: int = 1000
    beta_start: float = 1e-4
    beta_end: float = 1e-2
    prediction: str = "eps"

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise UserError(f"schedule kind must be one of {', '.join(SCHEDULE_KINDS)}, got {self.kind!r}")
        if self.prediction not in ("eps", "v"):
            raise UserError(f"prediction must be eps or v, got {self.prediction!r}")
        if self.kind == "linear_zsnr" and self.prediction != "v":
            raise UserError("a zero-terminal-SNR schedule (linear_zsnr) needs prediction v: eps is not "
                            "identifiable at alphabar_T = 0")
        if not 2 <= self.T <= 100000:
            raise UserError(f"schedule T must be in 2..100000, got {self.T}")
        if self.kind != "cosine" and not (0 < self.beta_start <= self.beta_end < 1):
            raise UserError(f"need 0 < beta_start <= beta_end < 1, got {self.beta_start} and {self.beta_end}")


SCHEDULE_KINDS = ("linear", "linear_zsnr", "cosine")
# The training default: zero terminal SNR with v-prediction (measured in benchmarks/results/quality.md);
# ``PAPER_SCHEDULE`` is the paper's (3.4: linear 1e-4..1e-2, eps-prediction).
DEFAULT_SCHEDULE = ScheduleConfig(kind="linear_zsnr", prediction="v")
PAPER_SCHEDULE = ScheduleConfig()


@dataclass(frozen=True)
class Predictor:
    """x0-hat = a_x x - a_p p and eps-hat = b_x x - b_p p from the network output p at one noise level."""

    a_x: float
    a_p: float
    b_x: float
    b_p: float

    @classmethod
    def at(cls, alphabar: float, prediction: str) -> "Predictor":
        s, r = math.sqrt(alphabar), math.sqrt(1 - alphabar)
        if prediction == "v":  # x0 = s x - r v, eps = r x + s v
            return cls(s, r, r, -s)
        return cls(1 / s, r / s, 0.0, -1.0)  # x0 = (x - r eps) / s, eps = p


@dataclass(frozen=True)
class Affine:
    """One sampler update ``out = c_x * x - c_eps * eps + c_z * z``."""

    c_x: float
    c_eps: float
    c_z: float


@dataclass(frozen=True)
class Step:
    """One reverse step of a (possibly respaced) schedule, noisy to clean.

    ``t``: model timestep fed to the network; ``denoise``: the update to x_{t-1}; ``harmonize``: denoise
    followed by renoise back to level t (used between the n_h denoiser calls of one step); ``predictor``:
    x0-hat and eps-hat from the network output at level t.
    """

    t: int
    alphabar: float
    alphabar_prev: float
    beta: float
    denoise: Affine
    harmonize: Affine
    predictor: Predictor


class NoiseSchedule:
    """Betas, alphas and alphabars (float64, shape (T,)) of a training schedule, and its respacings."""

    def __init__(self, config: ScheduleConfig = ScheduleConfig()):
        self.config = config
        T = config.T
        if config.kind in ("linear", "linear_zsnr"):
            self.betas = torch.linspace(config.beta_start, config.beta_end, T, dtype=torch.float64)
            if config.kind == "linear_zsnr":  # Lin et al. 2024, Alg. 1: sqrt(alphabar) shifted and scaled
                sab = torch.cumprod(1.0 - self.betas, 0).sqrt()
                sab = (sab - sab[-1]) * sab[0] / (sab[0] - sab[-1])
                ab = sab**2
                self.betas = 1.0 - torch.cat([ab[:1], ab[1:] / ab[:-1]])
        else:
            s = 0.008
            f = torch.cos((torch.arange(T + 1, dtype=torch.float64) / T + s) / (1 + s) * math.pi / 2) ** 2
            self.betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        self.alphas = 1.0 - self.betas
        self.alphabar = torch.cumprod(self.alphas, 0)
        if config.kind == "linear_zsnr":
            self.alphabar[-1] = 0.0  # exact, not cumprod's rounding

    @property
    def prediction(self) -> str:
        return self.config.prediction

    @property
    def T(self) -> int:
        return self.config.T

    def timesteps(self, n_steps: int | None = None) -> list[int]:
        """Increasing model timesteps tau_1 < ... < tau_S in 0..T-1, evenly spaced, always 0 and T-1 when S > 1."""
        S = self.T if n_steps is None else int(n_steps)
        if not 1 <= S <= self.T:
            raise UserError(f"steps must be between 1 and T={self.T}, got {S}")
        if S == 1:
            return [self.T - 1]
        return sorted({round(i * (self.T - 1) / (S - 1)) for i in range(S)})

    def steps(self, n_steps: int | None = None, *, method: str = "ddpm", eta: float = 0.0) -> list[Step]:
        """The reverse steps, noisy to clean, for ``n_steps`` respaced steps (None: all T).

        ``method``: "ddpm" (ancestral, sigma^2 = beta') or "ddim" (with ``eta``; eta = 1 is DDPM-like).
        """
        if method not in ("ddpm", "ddim"):
            raise UserError(f"sampling method must be ddpm or ddim, got {method!r}")
        taus = self.timesteps(n_steps)
        out = []
        v = self.prediction == "v"
        for i, t in enumerate(taus):
            ab = float(self.alphabar[t])
            ab_prev = float(self.alphabar[taus[i - 1]]) if i > 0 else 1.0
            beta = 1.0 - ab / ab_prev
            alpha = 1.0 - beta
            last = i == 0
            pr = Predictor.at(ab, self.prediction)
            if method == "ddpm":
                sigma = 0.0 if last else math.sqrt(beta)
                if v:  # posterior mean A x0-hat + B x
                    A, B = math.sqrt(ab_prev) * beta / (1 - ab), math.sqrt(alpha) * (1 - ab_prev) / (1 - ab)
                    den = Affine(A * pr.a_x + B, A * pr.a_p, sigma)
                else:
                    den = Affine(1 / math.sqrt(alpha), beta / (math.sqrt(alpha) * math.sqrt(1 - ab)), sigma)
            else:
                sigma = 0.0 if last else eta * math.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
                k = math.sqrt(max(1 - ab_prev - sigma**2, 0.0))
                if v:
                    den = Affine(math.sqrt(ab_prev) * pr.a_x + k * pr.b_x, math.sqrt(ab_prev) * pr.a_p + k * pr.b_p, sigma)
                else:
                    c_eps = math.sqrt(ab_prev * (1 - ab) / ab) - k
                    den = Affine(math.sqrt(ab_prev / ab), c_eps, sigma)
            harm = Affine(den.c_x * math.sqrt(alpha), den.c_eps * math.sqrt(alpha), math.sqrt(alpha * den.c_z**2 + beta))
            out.append(Step(t, ab, ab_prev, beta, den, harm, pr))
        return out[::-1]

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward diffusion x_t = sqrt(alphabar_t) x0 + sqrt(1 - alphabar_t) noise and the network's target
        (noise, or v = sqrt(alphabar_t) noise - sqrt(1 - alphabar_t) x0). x0, noise: (B, C, H, W); t: (B,)."""
        ab = self.alphabar.to(x0.device)[t].to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
        s, r = ab.sqrt(), (1 - ab).sqrt()
        target = s * noise - r * x0 if self.prediction == "v" else noise
        return s * x0 + r * noise, target

    @staticmethod
    def prior(z: torch.Tensor, alphabar: float, mean: Sequence[float] | None = None,
              var: Sequence[float] | None = None, channel_dim: int = 2) -> torch.Tensor:
        """The starting sample x_T from standard normals ``z`` (any layout, channels on ``channel_dim``).

        ``mean``/``var`` None: x_T = z, i.e. N(0, I) (Algorithm 1). Given the training data's per-channel
        mean m and variance v of x_0: x_T = sqrt(ab) m + sqrt(ab v + 1 - ab) z, the Gaussian approximation
        of q(x_T) at ``alphabar`` = ab_T. With this schedule ab_T = 0.0063 leaves enough of the data mean in
        x_T that a trained model reads it; starting from N(0, I) biases the phase fractions of the samples.
        """
        if mean is None:
            return z
        shape = [1] * z.dim()
        shape[channel_dim] = -1
        m = torch.tensor(list(mean), dtype=z.dtype, device=z.device).view(shape)
        v = torch.tensor(list(var) if var is not None else [0.0] * len(mean), dtype=z.dtype, device=z.device).view(shape)
        return math.sqrt(alphabar) * m + (alphabar * v + 1 - alphabar).sqrt() * z

    def to_dict(self) -> dict:
        return dataclasses.asdict(self.config)
