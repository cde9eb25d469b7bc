"""Per-process grain input pipeline over a TFDS array_record source.

Each JAX process reads its own shard, decodes and resizes, flips, maps ages to
groups by the config's schedule (dropping ages no group covers), draws a target
group different from the source group, and batches. Batches hold uint8 images
and int32 labels; ``to_global`` turns a process-local batch into global
``jax.Array``s sharded over the mesh's data axis.
"""

from __future__ import annotations

import io
import os

import grain.python as grain
import jax
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from faceaging import schedules


class GroupedSource(grain.RandomAccessDataSource):
    """A TFDS source restricted to records whose age the schedule covers, with their groups."""

    def __init__(self, source, schedule: schedules.AgeSchedule):
        self._source = source
        ages = np.array([source[i]["age"] for i in range(len(source))], dtype=np.int64)
        groups = schedule.group_of(ages) if len(ages) else np.zeros(0, np.int32)
        self._indices = np.flatnonzero(groups >= 0)
        self.groups = groups[self._indices].astype(np.int32)
        self.num_dropped = len(ages) - len(self._indices)

    def __len__(self) -> int:
        return len(self._indices)

    def __repr__(self) -> str:  # stable: grain stores it in the iterator state
        return f"GroupedSource(records={len(self._indices)}, dropped={self.num_dropped})"

    def record(self, index: int) -> dict:
        """The underlying TFDS record (image bytes, labels, file name)."""
        return self._source[int(self._indices[index])]

    def __getitem__(self, index: int) -> dict:
        record = self.record(index)
        return {"image": record["image"], "age": np.int32(record["age"]),
                "source": self.groups[index], "file_name": record["file_name"]}


def open_split(builder: tfds.core.DatasetBuilder, split: str,
               schedule: schedules.AgeSchedule) -> GroupedSource | None:
    """The split's records that ``schedule`` covers, or None if the dataset has no such split."""
    if split not in builder.info.splits:
        return None
    source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    return GroupedSource(source, schedule)


def held_out_split(builder: tfds.core.DatasetBuilder) -> str:
    """'validation' where the dataset has it, else 'train' (tiny sets may lack validation files)."""
    return "validation" if "validation" in builder.info.splits else "train"


def decode_image(data: bytes, image_size: int) -> np.ndarray:
    """JPEG/PNG bytes -> (image_size, image_size, 3) uint8 RGB."""
    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.BICUBIC)
        return np.asarray(image, dtype=np.uint8)


def target_probabilities(groups: np.ndarray, num_groups: int, mode: str) -> np.ndarray:
    """How likely each group is drawn as a target (before excluding the source group)."""
    if mode == "uniform":
        return np.full(num_groups, 1.0 / num_groups)
    if mode == "frequency":
        counts = np.bincount(groups, minlength=num_groups).astype(np.float64)
        return counts / counts.sum()
    raise ValueError(f"config.data.target_sampling={mode!r}: expected 'uniform' or 'frequency'")


class ImageDecodeError(ValueError):
    """A record's image bytes do not decode; the message names its file."""


class Decode(grain.MapTransform):
    """Decodes and resizes the image; drops the file name (kept until here for error messages)."""

    def __init__(self, image_size: int):
        self.image_size = image_size

    def map(self, element: dict) -> dict:
        element = dict(element)
        name = element.pop("file_name")
        try:
            image = decode_image(element["image"], self.image_size)
        except Exception as e:  # pylint: disable=broad-except  (PIL raises many kinds)
            name = name.decode() if isinstance(name, bytes) else name
            raise ImageDecodeError(f"cannot decode the training image {name} ({type(e).__name__}: "
                                   f"{e}): rebuild the dataset without it") from e
        return {**element, "image": image}


class FlipAndDrawTarget(grain.RandomMapTransform):
    """Random horizontal flip; a target group drawn with ``probs``, never the source group."""

    def __init__(self, probs: np.ndarray, random_flip: bool):
        self.probs = probs
        self.random_flip = random_flip

    def random_map(self, element: dict, rng: np.random.Generator) -> dict:
        image = element["image"]
        if self.random_flip and rng.random() < 0.5:
            image = image[:, ::-1]
        probs = self.probs.copy()
        probs[element["source"]] = 0.0
        if probs.sum() == 0:  # the source is the only group with data: any other group
            probs = np.ones_like(probs)
            probs[element["source"]] = 0.0
        target = rng.choice(len(probs), p=probs / probs.sum())
        return {**element, "image": np.ascontiguousarray(image), "target": np.int32(target)}


def process_batch_size(global_batch_size: int) -> int:
    if global_batch_size % jax.process_count():
        raise ValueError(f"config.train.batch_size={global_batch_size} must be divisible by the "
                         f"number of processes ({jax.process_count()})")
    return global_batch_size // jax.process_count()


MAX_AUTO_WORKERS = 8


def resolve_worker_count(requested: int) -> int:
    """grain worker processes for ``config.data.worker_count``: itself when >= 0; for -1 (auto),
    none on CPU-only hosts (workers cost start-up and the CPU is busy training) and one per
    spare core, at most 8, beside accelerators (``benchmarks/input_speed.py``: 200px decoding
    runs at ~600 img/s in-process and ~3,500 img/s with 8 workers on a 16-core GPU host)."""
    if requested >= 0:
        return requested
    if requested != -1:
        raise ValueError(f"config.data.worker_count={requested}: expected -1 (auto) or >= 0")
    if jax.default_backend() == "cpu":
        return 0
    return max(0, min(MAX_AUTO_WORKERS, (os.cpu_count() or 1) - 1))


def make_train_loader(config: ml_collections.ConfigDict, source: GroupedSource, num_groups: int,
                      batch_size: int | None = None, worker_count: int | None = None) -> grain.DataLoader:
    """An endless, shuffled, per-process loader of training batches of ``batch_size`` images
    globally (default ``config.train.batch_size``), decoded by ``worker_count`` processes
    (default ``config.data.worker_count``)."""
    if len(source) == 0:
        raise ValueError(f"no training images of {config.data.name!r} fall into any group of "
                         f"schedule {config.data.schedule!r}")
    probs = target_probabilities(source.groups, num_groups, config.data.target_sampling)
    sampler = grain.IndexSampler(
        num_records=len(source), shard_options=grain.ShardByJaxProcess(drop_remainder=True),
        shuffle=True, num_epochs=None, seed=config.seed)
    return grain.DataLoader(
        data_source=source, sampler=sampler,
        operations=[Decode(config.image_size), FlipAndDrawTarget(probs, config.data.random_flip),
                    grain.Batch(process_batch_size(batch_size or config.train.batch_size),
                                drop_remainder=True)],
        worker_count=resolve_worker_count(
            config.data.worker_count if worker_count is None else worker_count))


def sample_batch(source: GroupedSource, count: int, image_size: int) -> dict:
    """The first ``count`` records of ``source`` (deterministic), decoded, for sample grids."""
    records = [source[i] for i in range(min(count, len(source)))]
    return {"image": np.stack([decode_image(r["image"], image_size) for r in records]),
            "source": np.array([r["source"] for r in records], np.int32)}


def to_global(batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """Process-local numpy batch -> global jax.Arrays sharded on the data axis."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}
