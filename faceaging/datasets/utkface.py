"""UTKFace as a TFDS ``GeneratorBasedBuilder`` (array_record, manual download).

UTKFace cannot be downloaded by code: users place ``UTKFace.tar.gz`` or the
extracted ``UTKFace/`` folder in the manual dir. File names are
``age_gender_race_datetime.jpg.chip.jpg``; malformed names and out-of-range
labels are skipped and logged. The split is a hash of the ``datetime`` field of
the name, so it does not depend on file order, and datasets that reuse that
field per identity (SynthFaces) keep each identity inside one split.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import tarfile
from typing import Iterator

from absl import logging
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

ARCHIVE_NAME = "UTKFace.tar.gz"
FOLDER_NAME = "UTKFace"
NAME_SUFFIX = ".jpg.chip.jpg"
AGE_RANGE = (0, 116)
GENDER_NAMES = ("male", "female")
RACE_NAMES = ("white", "black", "asian", "indian", "other")
NUM_GENDERS = len(GENDER_NAMES)
NUM_RACES = len(RACE_NAMES)
VALIDATION_PERCENT = 5
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_NAME_RE = re.compile(r"^(\d+)_(\d+)_(\d+)_(\d+)" + re.escape(NAME_SUFFIX) + "$")


class DataNotFoundError(FileNotFoundError):
    """UTKFace is not in the manual dir."""


def missing_data_message(manual_dir: str) -> str:
    return (f"UTKFace was not found in {manual_dir!r}. Download it yourself (see README, "
            f"'Putting UTKFace in place') and put either {ARCHIVE_NAME!r} or the extracted "
            f"{FOLDER_NAME + '/'!r} folder of *{NAME_SUFFIX} files there, or point "
            "--config.data.manual_dir at the folder that holds them.")


@dataclasses.dataclass(frozen=True)
class FaceLabels:
    age: int
    gender: int
    race: int
    split_key: str


def parse_name(file_name: str) -> FaceLabels | None:
    """Labels from a UTKFace file name, or None if the name is malformed or out of range."""
    match = _NAME_RE.match(os.path.basename(file_name))
    if match is None:
        return None
    age, gender, race = (int(v) for v in match.groups()[:3])
    if not (AGE_RANGE[0] <= age <= AGE_RANGE[1] and gender < NUM_GENDERS and race < NUM_RACES):
        return None
    return FaceLabels(age, gender, race, split_key=match.group(4))


def split_of(labels: FaceLabels) -> str:
    digest = hashlib.sha256(labels.split_key.encode()).digest()
    return "validation" if int.from_bytes(digest[:8], "big") % 100 < VALIDATION_PERCENT else "train"


def find_source(manual_dir: str) -> str:
    """Returns the archive or folder holding the images, or raises DataNotFoundError."""
    candidates = [os.path.join(manual_dir, FOLDER_NAME), os.path.join(manual_dir, ARCHIVE_NAME)]
    for path in candidates:
        if os.path.isdir(path) or os.path.isfile(path):
            return path
    if os.path.isdir(manual_dir) and any(n.endswith(NAME_SUFFIX) for n in os.listdir(manual_dir)):
        return manual_dir
    raise DataNotFoundError(missing_data_message(manual_dir))


def find_labelled(manual_dir: str) -> tuple[str, list[FaceLabels]]:
    """(source, labels of its well-named images), or DataNotFoundError when there are none."""
    source = find_source(manual_dir)
    labelled = [labels for labels in map(parse_name, list_names(source)) if labels is not None]
    if not labelled:
        raise DataNotFoundError(f"{source!r} holds no well-named *{NAME_SUFFIX} images. "
                                + missing_data_message(manual_dir))
    return source, labelled


def list_names(source: str) -> list[str]:
    """Base names of every image in a folder (recursive) or tar archive, without reading them."""
    if os.path.isdir(source):
        return [n for _, _, names in os.walk(source) for n in names if n.lower().endswith(IMAGE_SUFFIXES)]
    with tarfile.open(source, "r:*") as archive:
        return [os.path.basename(m.name) for m in archive
                if m.isfile() and m.name.lower().endswith(IMAGE_SUFFIXES)]


def iter_files(source: str) -> Iterator[tuple[str, bytes]]:
    """Yields (file name, bytes) of every image in a folder (recursive) or tar archive."""
    if os.path.isdir(source):
        for root, _, names in sorted(os.walk(source)):
            for name in sorted(names):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    with open(os.path.join(root, name), "rb") as f:
                        yield name, f.read()
        return
    with tarfile.open(source, "r:*") as archive:
        for member in archive:
            if member.isfile() and member.name.lower().endswith(IMAGE_SUFFIXES):
                yield os.path.basename(member.name), archive.extractfile(member).read()


def decode_problem(data: bytes) -> str | None:
    """Why ``data`` is not a usable RGB image (truncated, empty, not an image...), or None."""
    if not data:
        return "empty file"
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            if image.width < 1 or image.height < 1:
                return f"image of size {image.width}x{image.height}"
            image.convert("RGB")
    except Exception as e:  # pylint: disable=broad-except  (PIL raises many kinds)
        return f"{type(e).__name__}: {e}"
    return None


@dataclasses.dataclass
class Scan:
    """What a build will use: the decodable, well-named files of each split, and what it skips."""

    usable: dict[str, set[str]] = dataclasses.field(default_factory=dict)
    misnamed: list[str] = dataclasses.field(default_factory=list)
    undecodable: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # "name: reason"

    def log(self, dataset: str) -> None:
        if self.misnamed:
            logging.warning(
                "%s: skipped %d file(s) with malformed names or out-of-range labels (expected "
                "age_gender_race_datetime%s with age %d-%d, gender < %d, race < %d): %s", dataset,
                len(self.misnamed), NAME_SUFFIX, *AGE_RANGE, NUM_GENDERS, NUM_RACES,
                ", ".join(self.misnamed))
        for split, lines in sorted(self.undecodable.items()):
            logging.warning("%s %s: skipped %d file(s) that are not decodable images: %s",
                            dataset, split, len(lines), "; ".join(lines))

    def metadata(self) -> dict:
        return {"misnamed": len(self.misnamed), "undecodable": self.undecodable}


def scan(source: str) -> Scan:
    """Reads and decodes every image of ``source`` once, sorting it into a split or a skip list."""
    found = Scan()
    for name, data in iter_files(source):
        labels = parse_name(name)
        if labels is None:
            found.misnamed.append(name)
            continue
        split = split_of(labels)
        problem = decode_problem(data)
        if problem is None:
            found.usable.setdefault(split, set()).add(name)
        else:
            found.undecodable.setdefault(split, []).append(f"{name}: {problem}")
    return found


class UTKFace(tfds.core.GeneratorBasedBuilder):
    """UTKFace aligned-and-cropped faces with age, gender and race labels."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "Initial release.",
                     "1.1.0": "Files that do not decode as images are left out (and listed)."}
    MANUAL_DOWNLOAD_INSTRUCTIONS = f"""
    Download UTKFace's aligned & cropped faces yourself and place either
    `{ARCHIVE_NAME}` or the extracted `{FOLDER_NAME}/` folder in the manual dir
    (`--config.data.manual_dir`).
    """

    def __init__(self, **kwargs):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(shape=(None, None, 3), encoding_format="jpeg"),
                "age": tfds.features.Scalar(dtype=np.int32),
                "gender": tfds.features.ClassLabel(names=list(GENDER_NAMES)),
                "race": tfds.features.ClassLabel(names=list(RACE_NAMES)),
                "file_name": tfds.features.Text(),
            }),
            supervised_keys=("image", "age"),
            homepage="https://susanqq.github.io/UTKFace/",
            metadata=tfds.core.MetadataDict(),  # skipped_files: {split: {...}} (see SkippedFiles)
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        source, _ = find_labelled(os.fspath(dl_manager.manual_dir))
        found = scan(source)
        found.log(self.name)
        self.info.metadata["skipped_files"] = found.metadata()
        if not found.usable:
            raise DataNotFoundError(f"{source!r} holds no decodable images: "
                                    + "; ".join(sum(found.undecodable.values(), [])))
        # only splits with images (a tiny set may lack one)
        return {split: self._generate_examples(source, names)
                for split, names in sorted(found.usable.items())}

    def _generate_examples(self, source: str, names: set[str]):
        for name, data in iter_files(source):
            if name in names:
                labels = parse_name(name)
                yield name, {"image": io.BytesIO(data), "age": labels.age,
                             "gender": labels.gender, "race": labels.race, "file_name": name}


def prepare(data_dir: str, manual_dir: str) -> UTKFace:
    """Builds UTKFace into ``data_dir`` once (a no-op when already built) and returns the builder.

    Refuses (DataNotFoundError, nothing written) a ``manual_dir`` without well-named images."""
    find_labelled(manual_dir)
    builder = UTKFace(data_dir=data_dir)
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
