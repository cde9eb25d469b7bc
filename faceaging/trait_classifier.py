"""SynthFaces trait classifier: reads skin tone, hair style and eye colour from an image.

An identity check that needs no face network: evaluation asks it to read the same traits from
an aged image as from its input. Trained by ``--mode=train_traits`` on fresh SynthFaces renders
of identities outside every dataset, at random ages (SynthFaces is procedural, so labels come
free); reports its accuracy on the dataset's held-out split; saved under WORKDIR/trait_classifier.
"""

from __future__ import annotations

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from faceaging import datasets, input_pipeline, pixels, schedules, small_models
from faceaging.datasets import synthfaces
from faceaging.workdir import Workdir

TRAITS = {"skin": 5, "hair_style": 3, "eye_colour": 5}  # classes per trait
SPLITS = np.cumsum(list(TRAITS.values()))[:-1]
FIRST_OWN_IDENTITY = 10**6  # the classifier's own training identities start here


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


def rendered_training_set(config):
    """(uint8 images, (N, 3) labels) of ``traits.num_renders`` fresh identities at random ages.

    Identity indices start at FIRST_OWN_IDENTITY, beyond every dataset's, so no evaluated
    identity is ever seen in training.
    """
    seed, n = config.data.synthfaces.seed, config.traits.num_renders
    indices = FIRST_OWN_IDENTITY + np.arange(n)
    ages = np.random.default_rng([seed, FIRST_OWN_IDENTITY]).integers(synthfaces.AGES[0], synthfaces.AGES[1] + 1, n)
    logging.info("Rendering %d SynthFaces identities for the trait classifier", n)
    data = synthfaces.render_jpegs(seed, zip(indices, ages))
    images = np.stack([input_pipeline.decode_image(d, config.image_size) for d in data])
    return images, np.array([trait_labels(synthfaces.make_identity(seed, i)) for i in indices])


def predict_traits(graph, params, images_uint8):
    logits = nnx.merge(graph, params)(pixels.to_float(images_uint8, jnp.float32))
    return jnp.stack([jnp.argmax(part, axis=-1) for part in jnp.split(logits, SPLITS, axis=-1)], axis=-1)


def _make_model(config, seed: int = 0):
    t = config.traits
    return small_models.ConvNet(t.channels, sum(TRAITS.values()), t.strides, rngs=nnx.Rngs(seed))


def train_trait_classifier(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains on fresh renders, saves, returns per-trait accuracy on the held-out split."""
    if config.data.name != "synth_faces":
        raise ValueError("the trait classifier needs SynthFaces (config.data.name='synth_faces')")
    builder = datasets.prepare(config)
    images, labels = rendered_training_set(config)
    graph, params = nnx.split(_make_model(config, config.seed))
    rng = np.random.default_rng(config.seed)

    def draw():
        pick = rng.integers(0, len(images), config.traits.batch_size)
        x = images[pick][:, :, ::-1] if rng.random() < 0.5 else images[pick]  # flip: traits are symmetric
        return x, labels[pick]

    def loss_of_logits(logits, y):
        return sum(optax.softmax_cross_entropy_with_integer_labels(part, y[:, i]).mean()
                   for i, part in enumerate(jnp.split(logits, SPLITS, axis=-1)))

    t = config.traits
    params = small_models.fit(graph, params, t.learning_rate, loss_of_logits,
                              small_models.Batches(draw, t.steps), "trait classifier")
    small_models.save_params(Workdir(workdir).trait_classifier, t.steps, params)
    split = input_pipeline.held_out_split(builder)
    val_images, val_labels = labelled_split(config, builder, split)
    predicted = np.asarray(jax.jit(lambda p, x: predict_traits(graph, p, x))(params, val_images))
    metrics = {f"trait_accuracy_{name}": float((predicted[:, i] == val_labels[:, i]).mean())
               for i, name in enumerate(TRAITS)}
    logging.info("trait classifier on %s renders: %s", split, metrics)
    return metrics


def load_trait_classifier(config: ml_collections.ConfigDict, workdir: str):
    return small_models.load_params(Workdir(workdir).trait_classifier, lambda: _make_model(config),
                                    "trait classifier", "train_traits")
