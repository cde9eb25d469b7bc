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
    rng = np.random.default_rng(config.seed)

    def draw():
        pick = rng.integers(0, len(images), config.estimator.batch_size)
        x = images[pick][:, :, ::-1] if rng.random() < 0.5 else images[pick]  # flip: traits are symmetric
        return x, labels[pick]

    def loss_of_logits(logits, y):
        return sum(optax.softmax_cross_entropy_with_integer_labels(part, y[:, i]).mean()
                   for i, part in enumerate(jnp.split(logits, SPLITS, axis=-1)))

    params = age_estimator.fit(graph, params, config.estimator.learning_rate, loss_of_logits,
                               age_estimator.Batches(draw, config.estimator.steps), "trait classifier")
    age_estimator.save_params(classifier_dir(workdir), config.estimator.steps, params)
    split = input_pipeline.held_out_split(builder)
    val_images, val_labels = labelled_split(config, builder, split)
    predicted = np.asarray(jax.jit(lambda p, x: predict_traits(graph, p, x))(params, val_images))
    metrics = {f"trait_accuracy_{name}": float((predicted[:, i] == val_labels[:, i]).mean())
               for i, name in enumerate(TRAITS)}
    logging.info("trait classifier on %s renders: %s", split, metrics)
    return metrics


def load_trait_classifier(config: ml_collections.ConfigDict, workdir: str):
    return age_estimator.load_params(classifier_dir(workdir), lambda: _make_model(config),
                                     "trait classifier", "train_traits")
