"""Frozen classifiers that guide the generator: the age guide and the attribute guide.

D's auxiliary age classifier learns from real images only and moves with every step, so the
generator can satisfy it with cues no real face has (hair streaks, tints). The **age guide**
(``config.loss.age_guide`` > 0) is a separate small CNN trained once on the training split's
real images (group labels, cross entropy), then frozen: its loss on the fakes is a target that G
cannot move. It is not the evaluation age estimator (``age_estimator``: a different network,
objective, seed and checkpoint), so evaluation never grades the generator with the network
that trained it.

The **attribute guide** (``config.loss.attribute_guide`` > 0) is the same kind of network trained
on the dataset's age-independent labels (UTKFace's gender and race, which SynthFaces writes in
the same file names); G is charged for every change of what it reads (the KL divergence from its
reading of the input to its reading of the aged image), so aging cannot trade who the person is
for the age cue. With ``config.loss.attribute_features`` > 0 G is also charged for changing what
its convolutions see where (cosine distance of chosen activation maps, input against aged
image). It needs no labels during GAN training and is not the evaluation's trait classifier
(``trait_classifier``: other labels, renders and network).

Each is trained at the start of training when the workdir has none (``--mode=train_age_guide``
and ``--mode=train_attribute_guide`` train one alone), saved under WORKDIR/age_guide/STEP or
WORKDIR/attribute_guide/STEP and reused on resume.
"""

from __future__ import annotations

import dataclasses

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from faceaging import files, input_pipeline, losses, pixels, schedules, small_models
from faceaging.workdir import Workdir


@dataclasses.dataclass(frozen=True)
class Guide:
    """What one frozen guide learns: its config section (= its workdir folder), the batch field
    of its labels and how many classes each of its heads has."""
    section: str  # "age_guide": config.<section>, config.loss.<section>, Workdir.<section>
    label: str  # the batch field: "source" (N,) or "attributes" (N, heads)
    seed_offset: int  # its initialisation seed is config.seed + this

    @property
    def what(self) -> str:
        return self.section.replace("_", " ")

    @property
    def mode(self) -> str:
        return f"train_{self.section}"

    def wanted(self, config: ml_collections.ConfigDict) -> bool:
        """Whether a loss term of ``config`` reads this guide."""
        if self.label == "source":
            return config.loss.age_guide > 0
        return config.loss.attribute_guide > 0 or config.loss.attribute_features > 0

    def heads(self, num_groups: int) -> tuple[int, ...]:
        return (num_groups,) if self.label == "source" else input_pipeline.ATTRIBUTE_CLASSES


AGE = Guide("age_guide", "source", 7919)
ATTRIBUTES = Guide("attribute_guide", "attributes", 7927)


def _per_head(labels):
    """(N,) or (N, heads) labels -> (N, heads)."""
    return labels.reshape(labels.shape[0], -1)


def _loss_of_logits(heads):
    def loss(logits, labels):
        return sum(losses.classification(part, _per_head(labels)[:, i])
                   for i, part in enumerate(losses.split_heads(logits, heads)))
    return loss


def _make_model(config: ml_collections.ConfigDict, guide: Guide, num_groups: int, seed: int = 0):
    return small_models.ConvNet(config[guide.section].channels, sum(guide.heads(num_groups)),
                                rngs=nnx.Rngs(seed))


def train_guide(config: ml_collections.ConfigDict, workdir: str, guide: Guide = AGE,
                check_stop=None) -> dict:
    """Trains ``guide`` on the training split, saves it, returns its held-out accuracy per head
    (``check_stop``: see ``small_models.fit``; a stop saves nothing)."""
    g = config[guide.section]
    num_groups = schedules.get_schedule(config.data.schedule).num_groups
    heads = guide.heads(num_groups)
    builder, schedule, graph, params = small_models.fit_on_training_images(
        config, _make_model(config, guide, num_groups, config.seed + guide.seed_offset),
        guide.label, g.steps, g.batch_size, g.learning_rate, _loss_of_logits(heads), guide.what,
        check_stop)
    small_models.save_params(getattr(Workdir(workdir), guide.section), g.steps, params)
    held_out = input_pipeline.open_split(builder, input_pipeline.held_out_split(builder), schedule)
    batch = input_pipeline.sample_batch(held_out, config.eval.num_images, config.image_size)
    suffixes = [""] if guide is AGE else [f"_{name}" for name in input_pipeline.ATTRIBUTES]
    accuracies = head_accuracies(graph, params, heads, batch["image"], batch[guide.label])
    metrics = {f"{guide.section}_accuracy_held_out{suffix}": value
               for suffix, value in zip(suffixes, accuracies)}
    metrics["num_images"] = int(len(batch["source"]))
    logging.info("%s on held-out real images: %s", guide.what, metrics)
    return metrics


def head_accuracies(graph, params, heads, images_uint8, labels) -> list[float]:
    """Per head of a guide, the share of ``images_uint8`` it reads as their label for that head
    (``labels``: (N,) for one head, else (N, heads))."""
    logits = jax.jit(lambda p, x: nnx.merge(graph, p)(pixels.to_float(x, jnp.float32)))(
        params, images_uint8)
    labels = _per_head(np.asarray(labels))
    return [float(losses.accuracy(part, labels[:, i]))
            for i, part in enumerate(losses.split_heads(logits, heads))]


def load_guide(config: ml_collections.ConfigDict, workdir: str, num_groups: int,
               guide: Guide = AGE):
    """(graph, params) of the latest ``guide`` saved in ``workdir``."""
    return small_models.load_params(getattr(Workdir(workdir), guide.section),
                                    lambda: _make_model(config, guide, num_groups), guide.what,
                                    guide.mode)


def untrained(config: ml_collections.ConfigDict, num_groups: int, guide: Guide = AGE):
    """(graph, params) of a freshly initialised ``guide``: for benchmarks that time or trace the
    train step (its cost does not depend on the weights)."""
    return nnx.split(_make_model(config, guide, num_groups, config.seed + guide.seed_offset))


def load_or_train(config: ml_collections.ConfigDict, workdir: str, num_groups: int,
                  guide: Guide = AGE, check_stop=None):
    """The ``guide`` of ``workdir``, trained first if it has none (one process only: on several,
    each would train on its own rows of the batches and hold a different guide)."""
    folder = getattr(Workdir(workdir), guide.section)
    if not files.isdir(folder) or not files.listdir(folder):
        if jax.process_count() > 1:
            raise ValueError(f"config.loss.{guide.section} > 0 but {folder} holds no {guide.what}: "
                             f"train it first on one process with --mode={guide.mode}")
        logging.info("Training the %s (%d steps) before the GAN.", guide.what,
                     config[guide.section].steps)
        train_guide(config, workdir, guide, check_stop)
    return load_guide(config, workdir, num_groups, guide)


def for_step(config: ml_collections.ConfigDict, num_groups: int, workdir: str | None = None,
             check_stop=None):
    """``make_train_step``'s guide arguments: {'guide': (graph, params) or None,
    'attribute_guide': (graph, params, classes per head) or None}, each None when its loss
    weight is 0, loaded (trained first if missing) from ``workdir``, or untrained without one
    (benchmarks that time or trace the step: its cost does not depend on the weights).
    ``check_stop``: see ``small_models.fit`` (the training loop stops a guide's training with it)."""
    def get(guide):
        if not guide.wanted(config):
            return None
        if workdir is None:
            return untrained(config, num_groups, guide)
        return load_or_train(config, workdir, num_groups, guide, check_stop)
    attribute = get(ATTRIBUTES)
    return {"guide": get(AGE), "attribute_guide": None if attribute is None
            else (*attribute, ATTRIBUTES.heads(num_groups))}
