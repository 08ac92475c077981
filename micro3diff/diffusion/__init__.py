"""Diffusion: the noise schedule (``schedule``), the 2D U-Net (``unet``), how the sampler runs it (``network``),
multi-plane sampling (``settings``, ``sampler``, ``volume_fraction``, ``anchors``) and plain 2D sampling
(``sample2d``)."""
