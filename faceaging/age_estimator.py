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

from faceaging import datasets, input_pipeline, pixels, schedules

MAX_AGE = 100


class ConvNet(nnx.Module):
    """3x3 convolutions (stride 2 unless ``strides`` says), global average pool, linear head."""

    def __init__(self, channels, outputs: int, strides=None, *, rngs: nnx.Rngs):
        chans = [3, *channels]
        strides = strides or (2,) * len(channels)
        self.convs = nnx.List([nnx.Conv(i, o, (3, 3), strides=s, rngs=rngs)
                               for i, o, s in zip(chans[:-1], chans[1:], strides)])
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
    return expected_age(nnx.merge(graph, params)(pixels.to_float(images_uint8, jnp.float32)))


def groups_of(schedule: schedules.AgeSchedule, estimated_ages) -> np.ndarray:
    """Age groups of estimated (real-valued) ages."""
    return schedule.group_of(np.rint(np.asarray(estimated_ages)).astype(int))


def fit(graph, params, learning_rate: float, loss_of_logits, batches, what: str):
    """Trains ``params`` with AdamW on (uint8 images, labels) ``batches``; returns the params.

    ``loss_of_logits(logits, labels)`` is the scalar loss; progress is logged ten times.
    """
    optimizer = optax.adamw(learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, images, labels):
        def loss_fn(p):
            return loss_of_logits(nnx.merge(graph, p)(pixels.to_float(images, jnp.float32)), labels)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    total = len(batches)
    for step, (images, labels) in enumerate(batches, 1):
        params, opt_state, loss = train_step(params, opt_state, images, labels)
        if step % max(1, total // 10) == 0:
            logging.info("%s step %d/%d: loss %.4f", what, step, total, float(loss))
    return params


class Batches:
    """``steps`` batches drawn from ``draw()``, with a length for progress logging."""

    def __init__(self, draw, steps: int):
        self.draw, self.steps = draw, steps

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        return (self.draw() for _ in range(self.steps))


def train_estimator(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the estimator on the training split, saves it, returns its validation metrics."""
    e = config.estimator
    schedule = schedules.get_schedule(config.data.schedule)
    builder = datasets.prepare(config)
    loader_config = config.copy_and_resolve_references()
    loader_config.train.batch_size = e.batch_size
    source = input_pipeline.open_split(builder, "train", schedule)
    iterator = iter(input_pipeline.make_train_loader(loader_config, source, schedule.num_groups))
    graph, params = nnx.split(ConvNet(e.channels, MAX_AGE + 1, rngs=nnx.Rngs(config.seed)))

    def draw():
        batch = next(iterator)
        return batch["image"], batch["age"]

    params = fit(graph, params, e.learning_rate,
                 lambda logits, ages: optax.softmax_cross_entropy(logits, soft_labels(ages, e.label_sigma)).mean(),
                 Batches(draw, e.steps), "age estimator")
    save_params(estimator_dir(workdir), e.steps, params)
    metrics = validate(config, builder, schedule, graph, params)
    logging.info("age estimator on real validation images: %s", metrics)
    return metrics


def validate(config, builder, schedule, graph, params) -> dict:
    """MAE and group accuracy on real validation images (how far to trust the estimator)."""
    source = input_pipeline.open_split(builder, input_pipeline.held_out_split(builder), schedule)
    batch = input_pipeline.sample_batch(source, config.eval.num_images, config.image_size)
    ages = np.array([source[i]["age"] for i in range(len(batch["image"]))])
    return score_real(schedule, graph, params, batch["image"], ages, batch["source"])


def score_real(schedule, graph, params, images, ages, groups) -> dict:
    """Estimator MAE and group accuracy on real uint8 ``images`` with true ``ages``/``groups``."""
    est = np.asarray(jax.jit(lambda p, x: estimate(graph, p, x))(params, images))
    return {"estimator_mae_real": float(np.abs(est - ages).mean()),
            "estimator_accuracy_real": float((groups_of(schedule, est) == groups).mean()),
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
