"""Per-image quality metrics on uint8 images: L1 in pixel levels, and PSNR and SSIM from dm_pix
(SSIM with the Gaussian 11x11, sigma 1.5 window papers report)."""

import dm_pix
import jax.numpy as jnp

MAX_PSNR = 100.0


def _unit(images):
    """uint8 -> [0, 1] float32."""
    return jnp.asarray(images).astype(jnp.float32) / 255.0


def l1(a, b):
    """Mean absolute difference per image, in 0-255 pixel units."""
    return jnp.abs(_unit(a) - _unit(b)).mean(axis=(1, 2, 3)) * 255.0


def psnr(a, b):
    """PSNR per image in dB (peak 255), at most MAX_PSNR (identical images), so means stay finite."""
    return jnp.minimum(dm_pix.psnr(_unit(a), _unit(b)), MAX_PSNR)


def ssim(a, b):
    """Mean SSIM per image over its pixels and channels (dm_pix: Gaussian 11x11 window)."""
    return dm_pix.ssim(_unit(a), _unit(b))
