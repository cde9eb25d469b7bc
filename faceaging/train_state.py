"""Train state: parameters, optimizer states, EMA and counters as one pytree.

The modules' graph definitions are static (kept in ``Graphs``); only their
parameters live in the state. The state is created already sharded.
"""

from __future__ import annotations

from typing import NamedTuple

import flax
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from faceaging import mesh as mesh_lib, models


@flax.struct.dataclass
class TrainState:
    step: jax.Array
    g_params: dict  # {'aging': State, 'restoring': State}; 'restoring' absent when shared
    d_params: nnx.State
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    ema_params: dict  # EMA of g_params, used for samples and prediction
    nonfinite_steps: jax.Array  # updates skipped because a loss or gradient was not finite


class Graphs(NamedTuple):
    generator: nnx.GraphDef
    discriminator: nnx.GraphDef


class Optimizers(NamedTuple):
    generator: optax.GradientTransformation
    discriminator: optax.GradientTransformation


def make_optimizers(config: ml_collections.ConfigDict) -> Optimizers:
    """Adam at the configured rates; ``learning_rate_factor`` scales both rates per step."""
    o = config.optim
    return Optimizers(optax.adam(o.g_learning_rate, b1=o.b1, b2=o.b2),
                      optax.adam(o.d_learning_rate, b1=o.b1, b2=o.b2))


def learning_rate_factor(step, total_steps: int, decay_from: float):
    """The factor on both learning rates at ``step``: 1 until ``decay_from * total_steps``,
    then falling linearly to 0 at ``total_steps`` (and 0 after it); ``decay_from=1`` keeps
    the rates constant.

    Adam's update is linear in its learning rate, so the train step multiplies the updates by
    this factor instead of giving optax a schedule: the optimizer state is the same with and
    without the decay, and a checkpoint resumes under either.
    """
    start = decay_from * total_steps
    if start >= total_steps:
        return jnp.ones((), jnp.float32)
    left = (total_steps - jnp.asarray(step, jnp.float32)) / (total_steps - start)
    return jnp.clip(left, 0.0, 1.0)


def restoring_params(g_params: dict):
    """Parameters of the second (restoring) generator: the first's when weights are shared."""
    return g_params.get("restoring", g_params["aging"])


def _init(config: ml_collections.ConfigDict, num_groups: int, optimizers: Optimizers):
    generators, disc = models.build_models(config, num_groups, nnx.Rngs(config.seed))
    g_graph, _ = nnx.split(generators["aging"])
    g_params = {name: nnx.split(g)[1] for name, g in generators.items()}
    d_graph, d_params = nnx.split(disc)
    state = TrainState(
        step=jnp.zeros((), jnp.int32), g_params=g_params, d_params=d_params,
        g_opt_state=optimizers.generator.init(g_params),
        d_opt_state=optimizers.discriminator.init(d_params),
        ema_params=jax.tree.map(jnp.copy, g_params), nonfinite_steps=jnp.zeros((), jnp.int32))
    return state, Graphs(g_graph, d_graph)


def abstract_state(config, num_groups, optimizers) -> tuple[TrainState, Graphs]:
    """Shapes and dtypes of the state (nothing allocated) and the static graph definitions."""
    graphs = []

    def init_state():
        state, g = _init(config, num_groups, optimizers)
        graphs.append(g)
        return state

    return jax.eval_shape(init_state), graphs[0]


def state_shardings(abstract: TrainState, sharding: jax.sharding.Sharding):
    """Every leaf of the state gets ``sharding`` (the models are small: replicate)."""
    return jax.tree.map(lambda _: sharding, abstract)


def mesh_shardings(abstract: TrainState, mesh: jax.sharding.Mesh, fsdp: bool):
    """The state's shardings for training on ``mesh``: replicated, or with ``fsdp`` (config
    ``mesh.fsdp``) parameters, EMA and optimizer moments split over the devices
    (``mesh_lib.fully_sharded``); the batch is data-parallel either way."""
    if not fsdp:
        return state_shardings(abstract, mesh_lib.replicated(mesh))
    return jax.tree.map(lambda leaf: mesh_lib.fully_sharded(leaf.shape, mesh), abstract)


def bytes_per_device(abstract: TrainState, shardings) -> int:
    """Bytes of the state each device holds under ``shardings``."""
    return sum(int(np.prod(s.shard_shape(a.shape))) * a.dtype.itemsize
               for a, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings)))


def create_train_state(config, num_groups, optimizers, shardings) -> TrainState:
    """Initialises the state directly into its sharded layout (``shardings``: a state-shaped tree).

    Waits until it is built: on CPU devices, a train step dispatched while the initialiser's
    collectives still run can deadlock XLA's rendezvous (devices split between the two programs'
    collectives, then the process aborts after the rendezvous timeout)."""
    state = jax.jit(lambda: _init(config, num_groups, optimizers)[0], out_shardings=shardings)()
    return jax.block_until_ready(state)
