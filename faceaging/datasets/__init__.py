"""Datasets as TFDS builders, prepared from files the user placed (nothing is downloaded)."""

import os

from absl import logging
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
        return prepare_synthfaces(config)
    raise ValueError(f"config.data.name={config.data.name!r}: expected 'utk_face' or 'synth_faces'")


def prepare_synthfaces(config: ml_collections.ConfigDict) -> tfds.core.DatasetBuilder:
    """Renders SynthFaces into the manual dir on first use, then builds it like UTKFace."""
    manual_dir = config.data.manual_dir
    if not os.path.isdir(os.path.join(manual_dir, synthfaces.FOLDER_NAME)):
        s = config.data.synthfaces
        logging.info("Rendering SynthFaces (%d identities x %d ages) into %s", s.num_identities,
                     s.ages_per_identity, manual_dir)
        synthfaces.generate(manual_dir, s.num_identities, s.ages_per_identity, seed=s.seed)
    elif (found := synthfaces.rendered_version(manual_dir)) != synthfaces.RENDERER_VERSION:
        raise ValueError(
            f"{manual_dir} holds SynthFaces from renderer version "
            f"{found or '1'}, but this faceaging renders version "
            f"{synthfaces.RENDERER_VERSION}: move that folder away or set --config.data.manual_dir "
            "to a new folder, and it is rendered again (nothing is overwritten)")
    builder = synthfaces.SynthFaces(data_dir=config.data.data_dir)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=manual_dir))
    return builder
