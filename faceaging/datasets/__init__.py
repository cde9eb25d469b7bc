"""Datasets as TFDS builders, prepared from files the user placed (nothing is downloaded)."""

import os

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from faceaging import files
from faceaging.datasets import synthfaces, utkface


def prepare(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """Builds ``config.data.name`` once into ``config.data.data_dir`` and returns its builder.

    Raises ``utkface.DataNotFoundError`` (before writing anything) when the source
    files are not in ``config.data.manual_dir``. With several processes, process 0 builds first
    and the others then load its build (a shared ``data_dir``, e.g. a bucket) or build their own
    (a host-local ``data_dir``): never two writers of one folder at once.
    """
    if jax.process_count() == 1:
        return _prepare(config)
    builder, error = None, None
    if jax.process_index() == 0:
        try:
            builder = _prepare(config)
        except Exception as e:  # pylint: disable=broad-except  (every process must hear of it)
            error = e
    built = bool(multihost_utils.broadcast_one_to_all(np.array(error is None)))
    if error is not None:
        raise error
    if not built:
        raise RuntimeError(f"process 0 could not prepare {config.data.name!r} in "
                           f"{config.data.data_dir} (its log says why)")
    return builder if builder is not None else _prepare(config)


BUILDERS = {"utk_face": utkface.UTKFace, "synth_faces": synthfaces.SynthFaces}


def _prepare(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    data = config.data
    if data.name not in BUILDERS:
        raise ValueError(f"config.data.name={data.name!r}: expected 'utk_face' or 'synth_faces'")
    if not files.is_remote(data.data_dir) and not files.is_remote(data.manual_dir):
        return _build(data)
    return _build_through_local_mirrors(data)


def _build(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    if data.name == "utk_face":
        return utkface.prepare(data.data_dir, data.manual_dir)
    return synthfaces.prepare(data)


def _build_through_local_mirrors(data: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """A bucket's dataset, used through a local copy: array_record, the format the datasets are
    stored in, reads and writes local files only. The bucket's prepared dataset (if any) is
    copied down, built locally if missing, and what the bucket lacks copied up (by process 0,
    ``dataset_info.json`` last: its presence tells TFDS the build is complete). A bucket
    ``manual_dir`` is copied down only (SynthFaces renders locally)."""
    local = data.copy_and_resolve_references()
    dataset_folder = BUILDERS[data.name].name
    if files.is_remote(data.manual_dir):
        local.manual_dir = files.local_mirror(data.manual_dir)
        if data.name == "utk_face":
            copied = files.copy_missing(data.manual_dir, local.manual_dir)
            logging.info("Copied %d file(s) of %s to %s", len(copied), data.manual_dir, local.manual_dir)
    if files.is_remote(data.data_dir):
        local.data_dir = files.local_mirror(data.data_dir)
        remote = files.join(data.data_dir, dataset_folder)
        copied = files.copy_missing(remote, os.path.join(local.data_dir, dataset_folder))
        logging.info("Copied %d file(s) of %s to %s", len(copied), remote, local.data_dir)
    builder = _build(local)
    if files.is_remote(data.data_dir) and jax.process_index() == 0:
        copied = files.copy_missing(os.path.join(local.data_dir, dataset_folder), remote,
                                    last=("dataset_info.json",))
        if copied:
            logging.info("Copied %d file(s) of the built dataset to %s", len(copied), remote)
    return builder
