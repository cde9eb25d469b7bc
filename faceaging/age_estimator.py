"""The independent age estimator used by evaluation (never a training loss of the GAN).

A small CNN predicts a distribution over ages 0..MAX_AGE (DEX-style); its expected value is the
age estimate, mapped to a group by the run's schedule. Trained by ``--mode=train_estimator``
on the training split with Gaussian-smoothed age labels; saved under WORKDIR/age_estimator.
"""

from __future__ import annotations

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from faceaging import input_pipeline, pixels, schedules, small_models
from faceaging.workdir import Workdir

MAX_AGE = 100


def expected_age(logits):
    return jax.nn.softmax(logits) @ jnp.arange(MAX_AGE + 1, dtype=jnp.float32)


def soft_labels(ages, sigma: float):
    bins = jnp.arange(MAX_AGE + 1, dtype=jnp.float32)
    weights = jnp.exp(-0.5 * jnp.square((bins[None] - jnp.minimum(ages, MAX_AGE)[:, None]) / sigma))
    return weights / weights.sum(axis=1, keepdims=True)


def estimate(graph, params, images_uint8):
    """Estimated ages of uint8 images (jit-friendly)."""
    return expected_age(nnx.merge(graph, params)(pixels.to_float(images_uint8, jnp.float32)))


def groups_of(schedule: schedules.AgeSchedule, estimated_ages) -> np.ndarray:
    """Age groups of estimated (real-valued) ages."""
    return schedule.group_of(np.rint(np.asarray(estimated_ages)).astype(int))


def train_estimator(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the estimator on the training split, saves it, returns its validation metrics."""
    e = config.estimator
    builder, schedule, graph, params = small_models.fit_on_training_images(
        config, small_models.ConvNet(e.channels, MAX_AGE + 1, rngs=nnx.Rngs(config.seed)), "age",
        e.steps, e.batch_size, e.learning_rate,
        lambda logits, ages: optax.softmax_cross_entropy(logits, soft_labels(ages, e.label_sigma)).mean(),
        "age estimator")
    small_models.save_params(Workdir(workdir).age_estimator, e.steps, params)
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


def load_estimator(config: ml_collections.ConfigDict, workdir: str):
    """(graph, params) of the latest estimator saved in ``workdir``."""
    return small_models.load_params(
        Workdir(workdir).age_estimator,
        lambda: small_models.ConvNet(config.estimator.channels, MAX_AGE + 1, rngs=nnx.Rngs(0)),
        "age estimator", "train_estimator")
