"""A frozen age-group classifier that guides the generator (``config.loss.age_guide`` > 0).

D's auxiliary age classifier learns from real images only and moves with every step, so the
generator can satisfy it with cues no real face has (hair streaks, tints). The guide is a
separate small CNN trained once on the training split's real images (group labels, cross
entropy), then frozen: its loss on the fakes is a target that G cannot move. It is not the
evaluation age estimator (``age_estimator``: a different network, objective, seed and
checkpoint), so evaluation never grades the generator with the network that trained it.

Trained at the start of training when the workdir has none (``--mode=train_age_guide`` trains
it alone), saved under WORKDIR/age_guide/STEP and reused on resume.
"""

from __future__ import annotations

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from faceaging import files, input_pipeline, losses, pixels, schedules, small_models
from faceaging.workdir import Workdir

SEED_OFFSET = 7919  # the guide's initialisation seed is config.seed + this


def _make_model(config: ml_collections.ConfigDict, num_groups: int, seed: int = 0):
    return small_models.ConvNet(config.age_guide.channels, num_groups, rngs=nnx.Rngs(seed))


def train_guide(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains the guide on the training split, saves it, returns its held-out metrics."""
    g = config.age_guide
    num_groups = schedules.get_schedule(config.data.schedule).num_groups
    builder, schedule, graph, params = small_models.fit_on_training_images(
        config, _make_model(config, num_groups, config.seed + SEED_OFFSET), "source", g.steps,
        g.batch_size, g.learning_rate, losses.classification, "age guide")
    small_models.save_params(Workdir(workdir).age_guide, g.steps, params)
    held_out = input_pipeline.open_split(builder, input_pipeline.held_out_split(builder), schedule)
    batch = input_pipeline.sample_batch(held_out, config.eval.num_images, config.image_size)
    metrics = {"age_guide_accuracy_held_out": accuracy(graph, params, batch["image"], batch["source"]),
               "num_images": int(len(batch["source"]))}
    logging.info("age guide on held-out real images: %s", metrics)
    return metrics


def accuracy(graph, params, images_uint8, groups) -> float:
    """Share of ``images_uint8`` the guide puts in their ``groups``."""
    logits = jax.jit(lambda p, x: nnx.merge(graph, p)(pixels.to_float(x, jnp.float32)))(params, images_uint8)
    return float((np.asarray(logits).argmax(-1) == np.asarray(groups)).mean())


def load_guide(config: ml_collections.ConfigDict, workdir: str, num_groups: int):
    """(graph, params) of the latest guide saved in ``workdir``."""
    return small_models.load_params(Workdir(workdir).age_guide,
                                    lambda: _make_model(config, num_groups), "age guide",
                                    "train_age_guide")


def untrained(config: ml_collections.ConfigDict, num_groups: int):
    """(graph, params) of a freshly initialised guide, or None when ``config.loss.age_guide`` is
    0: for benchmarks that time or trace the train step (its cost does not depend on the weights)."""
    if config.loss.age_guide <= 0:
        return None
    return nnx.split(_make_model(config, num_groups, config.seed + SEED_OFFSET))


def load_or_train(config: ml_collections.ConfigDict, workdir: str, num_groups: int):
    """The guide of ``workdir``, trained first if it has none (one process only: on several,
    each would train on its own rows of the batches and hold a different guide)."""
    if not files.isdir(Workdir(workdir).age_guide) or not files.listdir(Workdir(workdir).age_guide):
        if jax.process_count() > 1:
            raise ValueError(f"config.loss.age_guide > 0 but {Workdir(workdir).age_guide} holds no "
                             "age guide: train it first on one process with --mode=train_age_guide")
        logging.info("Training the age guide (%d steps) before the GAN.", config.age_guide.steps)
        train_guide(config, workdir)
    return load_guide(config, workdir, num_groups)
