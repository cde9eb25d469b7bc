"""Pixel scaling between uint8 images and the models' [-1, 1] floats."""

import jax.numpy as jnp


def to_float(images_uint8, dtype):
    """uint8 [0, 255] -> ``dtype`` in [-1, 1]."""
    return (images_uint8.astype(jnp.float32) / 127.5 - 1.0).astype(dtype)


def to_uint8(images):
    """[-1, 1] floats -> uint8 [0, 255], rounded and clipped."""
    return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)
