"""Per-image quality metrics on uint8 or [-1, 1] images: L1, PSNR and SSIM (pure jnp)."""

import jax
import jax.numpy as jnp

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03


def _unit(images):
    """uint8 -> [0, 1] float32."""
    return images.astype(jnp.float32) / 255.0


def l1(a, b):
    """Mean absolute difference per image, in 0-255 pixel units."""
    return jnp.abs(_unit(a) - _unit(b)).mean(axis=(1, 2, 3)) * 255.0


def psnr(a, b):
    mse = jnp.square(_unit(a) - _unit(b)).mean(axis=(1, 2, 3))
    return -10.0 * jnp.log10(jnp.maximum(mse, 1e-10))


def ssim(a, b):
    """Mean SSIM per image (uniform 7x7 window, per channel, averaged)."""
    x, y = _unit(a), _unit(b)
    window = jnp.ones((SSIM_WINDOW, SSIM_WINDOW, 1, 1), jnp.float32) / SSIM_WINDOW ** 2

    def blur(z):  # (N, H, W, C) -> local means, valid padding, channels independently
        n, h, w, c = z.shape
        flat = z.transpose(0, 3, 1, 2).reshape(n * c, h, w, 1)
        out = jax.lax.conv_general_dilated(flat, window, (1, 1), "VALID",
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return out.reshape(n, c, *out.shape[1:3]).transpose(0, 2, 3, 1)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(axis=(1, 2, 3))
