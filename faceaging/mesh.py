"""The device mesh, built once from the config, and the shardings used with it."""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import ml_collections
import numpy as np

DATA_AXIS = "data"


def make_mesh(config: ml_collections.ConfigDict) -> Mesh:
    """A 1-D data-parallel mesh over ``config.mesh.num_devices`` devices (-1: all)."""
    devices = jax.devices()
    n = config.mesh.num_devices
    if n != -1:
        if not 0 < n <= len(devices):
            raise ValueError(f"config.mesh.num_devices={n}: expected -1 or 1..{len(devices)}")
        devices = devices[:n]
    if config.train.batch_size % len(devices):
        raise ValueError(f"config.train.batch_size={config.train.batch_size} must be divisible by "
                         f"the number of devices in the mesh ({len(devices)})")
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))
