"""Aging batches of uint8 faces with a generator, on every device of a mesh.

The one place the aging function is compiled: training's sample grids, prediction, evaluation
and ``--mode=all`` all go through ``Ager``.
"""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
from jax.sharding import Mesh
import numpy as np

from faceaging import batching, mesh as mesh_lib, steps


class Ager:
    """``ager(params, images, codes) -> (N, K, H, W, 3) uint8``: each image aged to each code.

    Images are split over the mesh's data axis (the batch is padded to a multiple of the device
    count and cut back); parameters and codes are replicated; the result is replicated, so every
    process can read it.
    """

    def __init__(self, generator: nnx.GraphDef, dtype, mesh: Mesh):
        self.mesh = mesh
        self._replicated = mesh_lib.replicated(mesh)
        self._data = mesh_lib.data_sharded(mesh)
        self.age_all = jax.jit(steps.make_age_all_groups(generator, jnp.dtype(dtype)),
                               in_shardings=(self._replicated, self._data, self._replicated),
                               out_shardings=self._replicated)

    def place_params(self, params):
        """Parameters replicated on the mesh, to pass to every call."""
        return jax.device_put(params, self._replicated)

    def place_images(self, images: np.ndarray) -> jax.Array:
        """Host uint8 images (the same on every process) -> a padded batch split over the mesh."""
        padded = batching.pad_rows(np.asarray(images), self.mesh.size)
        return jax.make_array_from_callback(padded.shape, self._data, lambda index: padded[index])

    def __call__(self, params, images: np.ndarray, codes) -> np.ndarray:
        aged = self.age_all(self.place_params(params), self.place_images(images),
                            jnp.asarray(codes, jnp.float32))
        return np.asarray(aged)[:len(images)]
