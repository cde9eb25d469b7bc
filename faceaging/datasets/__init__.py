"""Datasets as TFDS builders, prepared from files the user placed (nothing is downloaded)."""

import ml_collections
import tensorflow_datasets as tfds

from faceaging.datasets import synthfaces, utkface


def prepare(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """Builds ``config.data.name`` once into ``config.data.data_dir`` and returns its builder.

    Raises ``utkface.DataNotFoundError`` (before writing anything) when the source
    files are not in ``config.data.manual_dir``.
    """
    if config.data.name == "utk_face":
        return utkface.prepare(config.data.data_dir, config.data.manual_dir)
    if config.data.name == "synth_faces":
        return synthfaces.prepare(config.data)
    raise ValueError(f"config.data.name={config.data.name!r}: expected 'utk_face' or 'synth_faces'")
