"""The device mesh, built once, and the shardings used with it."""

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import numpy as np

DATA_AXIS = "data"


def make_mesh(num_devices: int = -1) -> Mesh:
    """A 1-D data-parallel mesh over the first ``num_devices`` devices (-1: all)."""
    devices = jax.devices()
    if num_devices != -1:
        if not 0 < num_devices <= len(devices):
            raise ValueError(f"config.mesh.num_devices={num_devices}: expected -1 or 1..{len(devices)}")
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (DATA_AXIS,))


def check_batch_size(batch_size: int, mesh: Mesh) -> None:
    """A global batch must split evenly over the mesh's data axis."""
    if batch_size % mesh.shape[DATA_AXIS]:
        raise ValueError(f"config.train.batch_size={batch_size} must be divisible by the number "
                         f"of devices in the mesh ({mesh.shape[DATA_AXIS]})")


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


FSDP_MIN_ELEMENTS = 1024  # smaller leaves (biases, norms) stay replicated: splitting costs more


def fully_sharded(shape: tuple, mesh: Mesh) -> NamedSharding:
    """FSDP: the largest axis of ``shape`` that the data axis divides split over it (each device
    holds 1/n of the leaf); replicated when no axis divides or the leaf is small."""
    n = mesh.shape[DATA_AXIS]
    axes = [a for a in range(len(shape)) if shape[a] % n == 0]
    if not axes or int(np.prod(shape)) < FSDP_MIN_ELEMENTS:
        return replicated(mesh)
    axis = max(axes, key=lambda a: shape[a])
    return NamedSharding(mesh, P(*[DATA_AXIS if a == axis else None for a in range(len(shape))]))


def data_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the data axis."""
    return NamedSharding(mesh, P(DATA_AXIS))
