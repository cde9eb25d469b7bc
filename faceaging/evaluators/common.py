"""What every evaluator sees (``Context``) and the interface each one implements (``Evaluator``).

``--mode=eval`` ages the evaluation faces once to every group and hands the result to the
evaluators named in ``config.eval.evaluators``, in that order. An evaluator measures each
(input, target group) cell (``per_image``: one value per input for a target group), and may add
metrics of a whole target group's aged set (``per_group``) and run-level entries (``summary``).
``evaluate`` averages the cells whose target differs from the input's group, with confidence
intervals over identities (``faceaging.cell_stats``). One that cannot run (weights or a network
missing) raises ``Skipped`` from its constructor and is listed in the report with the reason; one
that does not apply to the dataset says so in ``applies`` and is left out silently.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from faceaging import files, input_pipeline, run as run_lib
from faceaging.datasets import synthfaces


class Skipped(Exception):
    """An evaluator cannot run; ``key`` names it in the report's ``skipped`` section."""

    def __init__(self, key: str, reason: str):
        super().__init__(reason)
        self.key, self.reason = key, reason


@dataclasses.dataclass
class Context:
    run: run_lib.Run  # both generators' EMA weights
    eval_config: ml_collections.ConfigDict  # the eval section in force (the run's or a given one)
    builder: tfds.core.DatasetBuilder
    split: str  # where the faces come from: a held-out split, or "fresh" SynthFaces identities
    records: list[dict]  # their records (file_name, age, ...)
    images: np.ndarray  # (N, H, W, 3) uint8 inputs
    source_groups: np.ndarray  # (N,) their age groups
    units: np.ndarray  # (N,) the identity of each input (the unit confidence intervals resample)
    aged: np.ndarray  # (N, K, H, W, 3) uint8: each input aged to each of the K groups
    _cache: dict = dataclasses.field(default_factory=dict)

    @property
    def config(self) -> ml_collections.ConfigDict:
        return self.run.config

    @property
    def schedule(self):
        return self.run.schedule

    @property
    def synthetic(self) -> bool:
        return self.config.data.name == "synth_faces"

    def cached(self, key, compute: Callable[[], Any]):
        """``compute()`` once per context, shared between evaluators."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def training_images(self, per_group: int | None) -> list[np.ndarray]:
        """uint8 training images of every group, at most ``per_group`` each (None: all)."""
        return self.cached(("training_images", per_group), lambda: _training_images(
            self.builder, self.schedule, self.config.image_size, per_group))

    def identities(self) -> list[synthfaces.Identity]:
        """SynthFaces: each input's identity."""
        seed = self.config.data.synthfaces.seed
        return self.cached("identities", lambda: [
            synthfaces.make_identity(seed, synthfaces.identity_index(r["file_name"]))
            for r in self.records])

    def true_renders(self, group: int) -> np.ndarray:
        """SynthFaces: each input's identity rendered at ``group``'s typical age, in its own pose
        and light, stored and decoded as the dataset's images are."""
        def every_group():  # one batch of renders for all groups: worker processes start once
            ages = [self.schedule.representative_age(k) for k in range(self.schedule.num_groups)]
            jobs = [(i.index, age, int(r["age"])) for age in ages
                    for i, r in zip(self.identities(), self.records)]
            return render_decoded(self.config, jobs).reshape(len(ages), len(self.records), *self.images.shape[1:])

        return self.cached("true_renders", every_group)[group]

    def true_landmarks(self, group: int) -> np.ndarray:
        """SynthFaces: (N, LANDMARKS) landmark heights (fractions of the image height) of each
        input's identity at ``group``'s typical age in the input's pose."""
        seed, age = self.config.data.synthfaces.seed, self.schedule.representative_age(group)

        def compute():
            return np.stack([synthfaces.landmarks(i, age, seed, pose_age=int(r["age"]))[:, 1]
                             for i, r in zip(self.identities(), self.records)])

        return self.cached(("true_landmarks", group), compute)


class Evaluator:
    """One metric family. Subclasses set ``name`` (its entry in ``config.eval.evaluators``)."""

    name = ""

    @classmethod
    def applies(cls, ctx: Context) -> bool:
        """False leaves the evaluator out (e.g. ground truth exists only for SynthFaces)."""
        del ctx
        return True

    def per_image(self, group: int, aged: np.ndarray) -> dict[str, np.ndarray]:
        """(N,) values per metric for ``aged`` (N, H, W, 3), the inputs aged to ``group``; NaN
        where a cell has no value (e.g. a metric of women only)."""
        del group, aged
        return {}

    def per_group(self, group: int, aged: np.ndarray) -> dict[str, float | None]:
        """Metrics of a whole set: ``aged`` holds only the inputs from other groups."""
        del group, aged
        return {}

    def summary(self) -> dict:
        """Run-level report entries, asked for after every group was measured."""
        return {}


class SynthFacesEvaluator(Evaluator):
    """An evaluator that needs SynthFaces' ground truth; left out on other datasets."""

    @classmethod
    def applies(cls, ctx: Context) -> bool:
        return ctx.synthetic


def compiled_with(params, fn: Callable) -> Callable:
    """``images -> fn(params, images)``, compiled once with the weights as an argument: closed
    over, they would be baked into the program as constants, which makes XLA compile far slower
    (minutes for InceptionV3 on CPU) and the compilation cache key huge."""
    compiled = jax.jit(fn)
    return lambda images: compiled(params, images)


def optional_weights(configured: str, default_name: str, eval_config, load, key: str):
    """``load(path)`` of configured weights; ``Skipped(key)`` when the default file is absent.

    An explicitly configured path that does not exist is an error (``load`` raises); the default
    location (``eval_config.weights_dir``) is optional.
    """
    path = files.absolute(configured or files.join(eval_config.weights_dir, default_name))
    if not configured and not files.exists(path):
        raise Skipped(key, f"no weights at {path} (see README: Evaluating a run)")
    return load(path)


def _training_images(builder, schedule, image_size: int, per_group: int | None) -> list[np.ndarray]:
    source = input_pipeline.open_split(builder, "train", schedule)
    taken = [[] for _ in range(schedule.num_groups)]
    for i in range(len(source)):
        group = taken[source.groups[i]]
        if per_group is None or len(group) < per_group:
            group.append(input_pipeline.decode_image(source.record(i)["image"], image_size))
    empty = (0, image_size, image_size, 3)
    return [np.stack(t) if t else np.zeros(empty, np.uint8) for t in taken]


def render_decoded(config, jobs) -> np.ndarray:
    """SynthFaces renders of (identity index, age, pose age) ``jobs``, through JPEG and decoded at
    ``config.image_size`` exactly as training images are."""
    data = synthfaces.render_jpegs(config.data.synthfaces.seed, jobs)
    return np.stack([input_pipeline.decode_image(d, config.image_size) for d in data])


def log_skip(skipped: Skipped) -> None:
    logging.warning("Skipping %s: %s", skipped.key, skipped.reason)
