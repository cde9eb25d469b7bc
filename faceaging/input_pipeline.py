"""Per-process grain input pipeline over a TFDS array_record source.

Maps ages to groups by the config's schedule (dropping ages no group covers); one
global shuffled order of the samples, of which each JAX process reads its rows of
every global batch (``GlobalBatches``); decodes and resizes, flips, draws a target
group different from the source group. Batches hold uint8 images and int32 labels;
``to_global`` turns a process-local batch into global ``jax.Array``s sharded over
the mesh's data axis.
"""

from __future__ import annotations

import io
import os

from absl import logging
import grain.python as grain
import jax
import ml_collections
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

from faceaging import schedules


# The dataset's age-independent labels each record carries as "attributes" (N, 2): the
# attribute guide (faceaging.age_guide) learns them; UTKFace's convention, which SynthFaces keeps.
ATTRIBUTES = ("gender", "race")
ATTRIBUTE_CLASSES = (2, 5)


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
                "source": self.groups[index], "file_name": record["file_name"],
                "attributes": np.array([record[name] for name in ATTRIBUTES], np.int32)}


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


def process_batch_size(global_batch_size: int, process_count: int) -> int:
    if global_batch_size % process_count:
        raise ValueError(f"config.train.batch_size={global_batch_size} must be divisible by the "
                         f"number of processes ({process_count})")
    return global_batch_size // process_count


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


ENDLESS = 2**40  # batches a training loader can yield: more than any run takes


class GlobalBatches(grain.RandomAccessDataSource):
    """Element k: this process's rows of the k-th global batch after sample position ``start``.

    The run's p-th training sample is record ``permutation(epoch)[p % N]``, epoch = p // N: one
    shuffled order of the N records per epoch, seeded by (seed, epoch). Global batch k holds
    samples start + k*G ... start + k*G + G-1, and process i of n takes its G/n consecutive rows
    from i*G/n. Flips and targets are drawn from a generator seeded by (seed, p). So what a step
    trains on depends on the seed, the data and the sample position only, never on how many
    processes or grain workers read it: a run resumes on another topology with the same batches.
    """

    def __init__(self, source: GroupedSource, transforms: tuple[Decode, FlipAndDrawTarget], *,
                 global_batch_size: int, seed: int, start: int = 0, process_index: int = 0,
                 process_count: int = 1):
        self._source, (self._decode, self._draw) = source, transforms
        self._global_batch_size, self._seed, self._start = global_batch_size, seed, start
        self._rows = process_batch_size(global_batch_size, process_count)
        self._first_row = process_index * self._rows
        self._permutations: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return ENDLESS

    def __repr__(self) -> str:
        return (f"GlobalBatches({self._source!r}, batch={self._global_batch_size}, "
                f"start={self._start}, rows={self._first_row}..{self._first_row + self._rows})")

    def positions(self, k: int) -> np.ndarray:
        """Sample positions of this process's rows of global batch ``k``."""
        first = self._start + k * self._global_batch_size + self._first_row
        return np.arange(first, first + self._rows)

    def record_index(self, position: int) -> int:
        """The source record of the run's sample ``position``."""
        epoch, offset = divmod(int(position), len(self._source))
        if epoch not in self._permutations:
            self._permutations = {epoch: np.random.default_rng([self._seed, 0, epoch]).permutation(
                len(self._source))}  # one epoch at a time: batches only move forward
        return int(self._permutations[epoch][offset])

    def sample(self, position: int) -> dict:
        element = self._decode.map(self._source[self.record_index(position)])
        return self._draw.random_map(element, np.random.default_rng([self._seed, 1, int(position)]))

    def __getitem__(self, k: int) -> dict:
        rows = [self.sample(p) for p in self.positions(k)]
        return {key: np.stack([row[key] for row in rows]) for key in rows[0]}


class TrainBatches:
    """An endless iterator over this process's share of the global training batches that knows
    its sample position (``state()``, saved in every checkpoint)."""

    def __init__(self, source: GroupedSource, loader: grain.DataLoader, global_batch_size: int,
                 start: int):
        self.records, self.global_batch_size, self.position = len(source), global_batch_size, start
        self._batches = iter(loader)

    def __iter__(self):
        return self

    def __next__(self) -> dict:
        batch = next(self._batches)
        self.position += self.global_batch_size
        return batch

    def state(self) -> dict:
        """The data position as a checkpoint stores it: samples consumed and the record count."""
        return {"position": self.position, "records": self.records}


def data_order_problem(saved: dict, num_records: int) -> str | None:
    """Why a saved data position does not fit ``num_records`` training records (None: it does)."""
    if not isinstance(saved.get("position"), int) or not isinstance(saved.get("records"), int):
        return f"the saved data position {saved} has no integer 'position' and 'records'"
    if saved["records"] != num_records:
        return (f"it was trained on records={saved['records']}, the dataset now has "
                f"records={num_records}")
    return None


def make_train_loader(config: ml_collections.ConfigDict, source: GroupedSource, num_groups: int,
                      batch_size: int | None = None, worker_count: int | None = None,
                      start: int = 0) -> TrainBatches:
    """An endless iterator of this process's rows of shuffled global batches of ``batch_size``
    images (default ``config.train.batch_size``) from sample position ``start`` (see
    ``GlobalBatches``), decoded by ``worker_count`` processes (default
    ``config.data.worker_count``)."""
    if len(source) == 0:
        raise ValueError(f"no training images of {config.data.name!r} fall into any group of "
                         f"schedule {config.data.schedule!r}")
    batch_size = batch_size or config.train.batch_size
    probs = target_probabilities(source.groups, num_groups, config.data.target_sampling)
    batches = GlobalBatches(
        source, (Decode(config.image_size), FlipAndDrawTarget(probs, config.data.random_flip)),
        global_batch_size=batch_size, seed=config.seed, start=start,
        process_index=jax.process_index(), process_count=jax.process_count())
    rows = batches.positions(0) - start
    logging.info("Process %d reads rows %d..%d of every global batch of %d, from sample %d.",
                 jax.process_index(), rows[0], rows[-1] + 1, batch_size, start)
    loader = grain.DataLoader(
        data_source=batches, sampler=grain.SequentialSampler(ENDLESS),
        worker_count=resolve_worker_count(
            config.data.worker_count if worker_count is None else worker_count))
    return TrainBatches(source, loader, batch_size, start)


def sample_batch(source: GroupedSource, count: int, image_size: int) -> dict:
    """The first ``count`` records of ``source`` (deterministic), decoded, for sample grids."""
    records = [source[i] for i in range(min(count, len(source)))]
    return {"image": np.stack([decode_image(r["image"], image_size) for r in records]),
            "source": np.array([r["source"] for r in records], np.int32),
            "attributes": np.stack([r["attributes"] for r in records]).reshape(-1, len(ATTRIBUTES))}


def to_global(batch: dict, sharding: jax.sharding.Sharding) -> dict:
    """Process-local numpy batch -> global jax.Arrays sharded on the data axis."""
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
            for k, v in batch.items()}
