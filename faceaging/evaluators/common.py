"""What every evaluator sees (``Context``) and the interface each one implements (``Evaluator``).

``--mode=eval`` ages held-out faces once to every group and hands the result to the evaluators
named in ``config.eval.evaluators``, in that order. An evaluator contributes metrics to each
target group's row (``group_metrics``) and, optionally, run-level entries (``summary``). One
that cannot run (weights or a network missing) raises ``Skipped`` from its constructor and is
listed in the report with the reason; one that does not apply to the dataset says so in
``applies`` and is left out silently.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

from absl import logging
import jax
import ml_collections
import numpy as np
from PIL import Image
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
    split: str  # the held-out split the faces come from
    records: list[dict]  # their records (file_name, age, ...)
    images: np.ndarray  # (N, H, W, 3) uint8 inputs
    source_groups: np.ndarray  # (N,) their age groups
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

    def true_renders(self, group: int) -> np.ndarray:
        """SynthFaces: each input's identity rendered at ``group``'s typical age, in its own pose."""
        return self.cached(("true_renders", group), lambda: _true_renders(
            self.config, self.records, self.schedule.representative_age(group)))


class Evaluator:
    """One metric family. Subclasses set ``name`` (its entry in ``config.eval.evaluators``)."""

    name = ""

    @classmethod
    def applies(cls, ctx: Context) -> bool:
        """False leaves the evaluator out (e.g. ground truth exists only for SynthFaces)."""
        del ctx
        return True

    def group_metrics(self, group: int, aged: np.ndarray) -> dict[str, float | None]:
        """Metrics of ``aged`` (N, H, W, 3), the inputs aged to ``group``."""
        raise NotImplementedError

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


def _true_renders(config, records, age: int) -> np.ndarray:
    seed, size = config.data.synthfaces.seed, config.image_size
    return np.stack([np.asarray(Image.fromarray(synthfaces.render(
        synthfaces.make_identity(seed, synthfaces.identity_index(r["file_name"])), age, seed,
        pose_age=int(r["age"]))).resize((size, size), Image.BICUBIC)) for r in records])


def log_skip(skipped: Skipped) -> None:
    logging.warning("Skipping %s: %s", skipped.key, skipped.reason)
