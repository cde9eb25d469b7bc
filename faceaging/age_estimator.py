"""The independent age estimator used by evaluation (never a training loss of the GAN).

A small CNN predicts a distribution over ages 0..MAX_AGE (DEX-style); its expected value is the
age estimate, mapped to a group by the run's schedule. Trained by ``--mode=train_estimator``
on the training split with Gaussian-smoothed age labels; saved under WORKDIR/age_estimator.
"""

from __future__ import annotations

import os

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp

from faceaging import datasets, input_pipeline, schedules, steps

MAX_AGE = 100


class ConvNet(nnx.Module):
    """Strided 3x3 convolutions, global average pool, one linear head: images -> logits."""

    def __init__(self, channels, outputs: int, *, rngs: nnx.Rngs):
        chans = [3, *channels]
        self.convs = nnx.List([nnx.Conv(i, o, (3, 3), strides=2, rngs=rngs) for i, o in zip(chans[:-1], chans[1:])])
        self.head = nnx.Linear(chans[-1], outputs, rngs=rngs)

    def __call__(self, images):
        h = images
        for conv in self.convs:
            h = jax.nn.gelu(conv(h))
        return self.head(h.mean(axis=(1, 2)))


def expected_age(logits):
    return jax.nn.softmax(logits) @ jnp.arange(MAX_AGE + 1, dtype=jnp.float32)


def soft_labels(ages, sigma: float):
    bins = jnp.arange(MAX_AGE + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * jnp.square((bins[None] - jnp.minimum(ages, MAX_AGE)[:, None]) / sigma))
    return weights / weights.sum(axis=1, keepdims=True)


def estimator_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "age_estimator")


def estimate(graph, params, images_uint8):
    """Estimated ages of uint8 images (jit-friendly)."""
    return expected_age(nnx.merge(graph, params)(steps.to_float(images_uint8, jnp.float32)))


def train_estimator(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the estimator on the training split, saves it, returns its validation metrics."""
    e = config.estimator
    schedule = schedules.get_schedule(config.data.schedule)
    builder = datasets.prepare(config)
    loader_config = config.copy_and_resolve_references()
    loader_config.train.batch_size = e.batch_size
    source = input_pipeline.open_split(builder, "train", schedule)
    iterator = iter(input_pipeline.make_train_loader(loader_config, source, schedule.num_groups))
    model = ConvNet(e.channels, MAX_AGE + 1, rngs=nnx.Rngs(config.seed))
    graph, params = nnx.split(model)
    optimizer = optax.adamw(e.learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, images, ages):
        def loss_fn(p):
            logits = nnx.merge(graph, p)(steps.to_float(images, jnp.float32))
            return optax.softmax_cross_entropy(logits, soft_labels(ages, e.label_sigma)).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    for step in range(1, e.steps + 1):
        batch = next(iterator)
        params, opt_state, loss = train_step(params, opt_state, batch["image"], batch["age"])
        if step % max(1, e.steps // 10) == 0:
            logging.info("age estimator step %d/%d: loss %.4f", step, e.steps, float(loss))
    save_params(estimator_dir(workdir), e.steps, params)
    metrics = validate(config, builder, schedule, graph, params)
    logging.info("age estimator on real validation images: %s", metrics)
    return metrics


def validate(config, builder, schedule, graph, params) -> dict:
    """MAE and group accuracy on real validation images (how far to trust the estimator)."""
    split = "validation" if "validation" in builder.info.splits else "train"
    source = input_pipeline.open_split(builder, split, schedule)
    batch = input_pipeline.sample_batch(source, config.eval.num_images, config.image_size)
    ages = np.array([source[i]["age"] for i in range(len(batch["image"]))])
    est = np.asarray(jax.jit(lambda p, x: estimate(graph, p, x))(params, batch["image"]))
    return {"estimator_mae_real": float(np.abs(est - ages).mean()),
            "estimator_accuracy_real": float((schedule.group_of(np.rint(est).astype(int)) == batch["source"]).mean()),
            "num_images": int(len(ages))}


def save_params(root: str, step: int, params) -> None:
    """Saves a network's parameters as an Orbax checkpoint ``root/step``."""
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.join(root, str(step)), params, force=True)
    checkpointer.wait_until_finished()


def load_params(root: str, make_model, what: str, mode: str):
    """(graph, params) of the latest checkpoint under ``root`` of the model ``make_model()`` builds."""
    saved = sorted(int(d) for d in os.listdir(root) if d.isdigit()) if os.path.isdir(root) else []
    if not saved:
        raise FileNotFoundError(f"no {what} in {root}: run --mode={mode} first")
    graph, abstract = nnx.split(nnx.eval_shape(make_model))
    return graph, ocp.StandardCheckpointer().restore(os.path.join(root, str(saved[-1])), abstract)


def load_estimator(config: ml_collections.ConfigDict, workdir: str):
    """(graph, params) of the latest estimator saved in ``workdir``."""
    return load_params(estimator_dir(workdir),
                       lambda: ConvNet(config.estimator.channels, MAX_AGE + 1, rngs=nnx.Rngs(0)),
                       "age estimator", "train_estimator")
