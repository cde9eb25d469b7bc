"""faceaging: age-conditional face-aging GANs in JAX/Flax."""

__version__ = "0.1.0"
