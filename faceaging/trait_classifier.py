"""SynthFaces trait classifier and landmark reader: reads skin tone, hair style and eye colour,
and where the crown, eye line, mouth and chin are, from an image.

Checks that need no face network: evaluation asks it to read the same traits from an aged image
as from its input, and the geometry of the target age (a child's low eye line and short face)
from an aged image. Trained by ``--mode=train_traits`` on fresh SynthFaces renders of identities
outside every dataset, at random ages (SynthFaces is procedural, so labels come free); reports
its accuracy on the dataset's held-out split; saved under WORKDIR/trait_classifier.
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
NUM_CLASSES = sum(TRAITS.values())
SPLITS = np.cumsum(list(TRAITS.values()))[:-1]
# Landmark outputs: the y of each synthfaces.LANDMARKS point, as a fraction of the image height.
NUM_LANDMARKS = len(synthfaces.LANDMARKS)
LANDMARK_LOSS_SCALE = 10.0  # L1 in tenths of the image: the same order as the trait losses
FIRST_OWN_IDENTITY = 10**6  # the classifier's own training identities start here


def trait_labels(identity: synthfaces.Identity) -> list[int]:
    return [identity.race, identity.hair_style, identity.eye_colour]


def landmark_heights(seed: int, index: int, age: int, pose_age: int | None = None) -> np.ndarray:
    """(NUM_LANDMARKS,) the y of each landmark of that render, as a fraction of the image height."""
    return synthfaces.landmarks(synthfaces.make_identity(seed, index), age, seed, pose_age)[:, 1]


def labelled_split(config, builder, split: str):
    """(uint8 images, (N, 3) trait labels, (N, NUM_LANDMARKS) landmark heights) of a SynthFaces
    split, decoded at image_size."""
    source = input_pipeline.open_split(builder, split, schedules.get_schedule(config.data.schedule))
    seed = config.data.synthfaces.seed
    records = [source.record(i) for i in range(len(source))]
    images = np.stack([input_pipeline.decode_image(r["image"], config.image_size) for r in records])
    indices = [synthfaces.identity_index(r["file_name"]) for r in records]
    labels = np.array([trait_labels(synthfaces.make_identity(seed, i)) for i in indices])
    heights = np.array([landmark_heights(seed, i, int(r["age"])) for i, r in zip(indices, records)])
    return images, labels, heights


def rendered_training_set(config):
    """(uint8 images, (N, 3) labels, (N, NUM_LANDMARKS) landmark heights) of
    ``traits.num_renders`` fresh identities at random ages.

    Identity indices start at FIRST_OWN_IDENTITY, beyond every dataset's, so no evaluated
    identity is ever seen in training.
    """
    seed, n = config.data.synthfaces.seed, config.traits.num_renders
    indices = FIRST_OWN_IDENTITY + np.arange(n)
    ages = np.random.default_rng([seed, FIRST_OWN_IDENTITY]).integers(synthfaces.AGES[0], synthfaces.AGES[1] + 1, n)
    logging.info("Rendering %d SynthFaces identities for the trait classifier", n)
    data = synthfaces.render_jpegs(seed, zip(indices, ages))
    images = np.stack([input_pipeline.decode_image(d, config.image_size) for d in data])
    labels = np.array([trait_labels(synthfaces.make_identity(seed, i)) for i in indices])
    heights = np.array([landmark_heights(seed, i, a) for i, a in zip(indices, ages)])
    return images, labels, heights


def _outputs(graph, params, images_uint8):
    return nnx.merge(graph, params)(pixels.to_float(images_uint8, jnp.float32))


def predict_traits(graph, params, images_uint8):
    """(N, 3) the trait classes read from each image."""
    logits = _outputs(graph, params, images_uint8)[:, :NUM_CLASSES]
    return jnp.stack([jnp.argmax(part, axis=-1) for part in jnp.split(logits, SPLITS, axis=-1)], axis=-1)


def read_landmarks(graph, params, images_uint8):
    """(N, NUM_LANDMARKS) the landmark heights read from each image, as fractions of its height."""
    return _outputs(graph, params, images_uint8)[:, NUM_CLASSES:]


def _make_model(config, seed: int = 0):
    t = config.traits
    return small_models.ConvNet(t.channels, NUM_CLASSES + NUM_LANDMARKS, t.strides,
                                rngs=nnx.Rngs(seed))


def train_trait_classifier(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """Trains on fresh renders, saves, returns per-trait accuracy on the held-out split."""
    if config.data.name != "synth_faces":
        raise ValueError("the trait classifier needs SynthFaces (config.data.name='synth_faces')")
    builder = datasets.prepare(config)
    images, labels, heights = rendered_training_set(config)
    targets = np.concatenate([labels, heights], axis=1).astype(np.float32)
    graph, params = nnx.split(_make_model(config, config.seed))
    rng = np.random.default_rng(config.seed)

    def draw():  # flipped half the time: traits and landmark heights are left-right symmetric
        pick = rng.integers(0, len(images), config.traits.batch_size)
        x = images[pick][:, :, ::-1] if rng.random() < 0.5 else images[pick]
        return x, targets[pick]

    def loss_of_logits(outputs, y):
        classes, read = outputs[:, :NUM_CLASSES], outputs[:, NUM_CLASSES:]
        traits = sum(optax.softmax_cross_entropy_with_integer_labels(part, y[:, i].astype(jnp.int32)).mean()
                     for i, part in enumerate(jnp.split(classes, SPLITS, axis=-1)))
        return traits + LANDMARK_LOSS_SCALE * jnp.abs(read - y[:, len(TRAITS):]).mean()

    t = config.traits
    params = small_models.fit(graph, params, t.learning_rate, loss_of_logits,
                              small_models.Batches(draw, t.steps), "trait classifier")
    small_models.save_params(Workdir(workdir).trait_classifier, t.steps, params)
    split = input_pipeline.held_out_split(builder)
    val_images, val_labels, val_heights = labelled_split(config, builder, split)
    predicted = np.asarray(jax.jit(lambda p, x: predict_traits(graph, p, x))(params, val_images))
    read = np.asarray(jax.jit(lambda p, x: read_landmarks(graph, p, x))(params, val_images))
    metrics = {f"trait_accuracy_{name}": float((predicted[:, i] == val_labels[:, i]).mean())
               for i, name in enumerate(TRAITS)}
    metrics["landmark_error_pixels"] = float(np.abs(read - val_heights).mean() * config.image_size)
    logging.info("trait classifier on %s renders: %s", split, metrics)
    return metrics


def load_trait_classifier(config: ml_collections.ConfigDict, workdir: str):
    """(graph, params) of the workdir's trait classifier; one that predates the landmark outputs
    is refused with the command that trains a new one."""
    root = Workdir(workdir).trait_classifier
    try:
        return small_models.load_params(root, lambda: _make_model(config), "trait classifier",
                                        "train_traits")
    except ValueError as e:
        if "shape" not in str(e).lower():
            raise
        raise FileNotFoundError(
            f"the trait classifier in {root} has no landmark outputs (trained by an older "
            "faceaging): run --mode=train_traits again") from None
