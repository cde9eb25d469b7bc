"""SynthFaces trait classifier: reads skin tone, hair style and eye colour from an image.

An identity check that needs no face network: evaluation asks it to read the same traits from
an aged image as from its input. Trained by ``--mode=train_traits`` on SynthFaces training
renders (labels from each file's identity); saved under WORKDIR/trait_classifier.
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

from faceaging import age_estimator, datasets, input_pipeline, schedules, steps
from faceaging.datasets import synthfaces

TRAITS = {"skin": 5, "hair_style": 3, "eye_colour": 5}  # classes per trait
SPLITS = np.cumsum(list(TRAITS.values()))[:-1]


def classifier_dir(workdir: str) -> str:
    return os.path.join(os.path.abspath(workdir), "trait_classifier")


def trait_labels(identity: synthfaces.Identity) -> list[int]:
    return [identity.race, identity.hair_style, identity.eye_colour]


def labelled_split(config, builder, split: str):
    """(uint8 images, (N, 3) trait labels) of a SynthFaces split, decoded at image_size."""
    source = input_pipeline.open_split(builder, split, schedules.get_schedule(config.data.schedule))
    seed = config.data.synthfaces.seed
    records = [source.record(i) for i in range(len(source))]
    images = np.stack([input_pipeline.decode_image(r["image"], config.image_size) for r in records])
    labels = np.array([trait_labels(synthfaces.make_identity(seed, synthfaces.identity_index(r["file_name"]))) for r in records])
    return images, labels


def predict_traits(graph, params, images_uint8):
    logits = nnx.merge(graph, params)(steps.to_float(images_uint8, jnp.float32))
    return jnp.stack([jnp.argmax(part, axis=-1) for part in jnp.split(logits, SPLITS, axis=-1)], axis=-1)


def _make_model(config, seed: int = 0):
    return age_estimator.ConvNet(config.estimator.channels, sum(TRAITS.values()), rngs=nnx.Rngs(seed))


def train_trait_classifier(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains on the training renders, saves, returns per-trait accuracy on held-out renders."""
    if config.data.name != "synth_faces":
        raise ValueError("the trait classifier needs SynthFaces (config.data.name='synth_faces')")
    builder = datasets.prepare(config)
    images, labels = labelled_split(config, builder, "train")
    graph, params = nnx.split(_make_model(config, config.seed))
    optimizer = optax.adamw(config.estimator.learning_rate)
    opt_state = optimizer.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        def loss_fn(p):
            parts = jnp.split(nnx.merge(graph, p)(steps.to_float(x, jnp.float32)), SPLITS, axis=-1)
            return sum(optax.softmax_cross_entropy_with_integer_labels(part, y[:, i]).mean()
                       for i, part in enumerate(parts))
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(config.seed)
    batch, total = config.estimator.batch_size, config.estimator.steps
    for step in range(1, total + 1):
        pick = rng.integers(0, len(images), batch)
        x = images[pick][:, :, ::-1] if rng.random() < 0.5 else images[pick]  # flip: traits are symmetric
        params, opt_state, loss = train_step(params, opt_state, x, labels[pick])
        if step % max(1, total // 10) == 0:
            logging.info("trait classifier step %d/%d: loss %.4f", step, total, float(loss))
    age_estimator.save_params(classifier_dir(workdir), total, params)
    split = "validation" if "validation" in builder.info.splits else "train"
    val_images, val_labels = labelled_split(config, builder, split)
    predicted = np.asarray(jax.jit(lambda p, x: predict_traits(graph, p, x))(params, val_images))
    metrics = {f"trait_accuracy_{name}": float((predicted[:, i] == val_labels[:, i]).mean())
               for i, name in enumerate(TRAITS)}
    logging.info("trait classifier on %s renders: %s", split, metrics)
    return metrics


def load_trait_classifier(config: ml_collections.ConfigDict, workdir: str):
    return age_estimator.load_params(classifier_dir(workdir), lambda: _make_model(config),
                                     "trait classifier", "train_traits")
