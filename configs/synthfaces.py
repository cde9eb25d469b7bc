"""SynthFaces: the embedded procedural dataset; trains in minutes on a 2-core CPU.

The dataset is rendered into ``config.data.manual_dir`` on first use. Six age groups
spanning 1-100 years; 64x64 images; a narrow model.
"""

import os

import ml_collections

from faceaging import config as base


def get_config(arg: str = ""):
    c = base.base_config()
    c.image_size = 64
    c.dtype = "float32"  # CPU: bf16 is emulated and slower
    c.data.name = "synth_faces"
    c.data.manual_dir = os.path.expanduser("~/tensorflow_datasets/downloads/manual/synth_faces")
    c.data.schedule = "0-9,10-19,20-34,35-49,50-69,70+"
    c.data.num_sample_images = 6
    c.data.synthfaces = ml_collections.ConfigDict()
    c.data.synthfaces.seed = 0
    c.data.synthfaces.num_identities = 300
    c.data.synthfaces.ages_per_identity = 10

    c.model.kernel_size = 3
    c.model.stem_channels = 16
    c.model.encoder_channels = (32, 64, 64)
    c.model.encoder_factors = (2, 2, 2)
    c.model.encoder_extra_blocks = 1
    c.model.modulator_blocks = 1
    c.model.style_dim = 64
    c.model.decoder_extra_blocks = 0
    c.model.disc_stem_channels = 16
    c.model.disc_channels = (32, 64, 64, 64)

    c.loss.r1_every = 8
    c.optim.g_learning_rate = 3e-4
    c.optim.d_learning_rate = 3e-4
    c.optim.ema_decay = 0.995

    c.train.batch_size = 16
    c.train.steps = 1500
    c.train.log_every = 100
    c.train.sample_every = 500
    c.train.checkpoint_every = 500
    if arg == "tiny":
        base.tiny(c)
        c.data.synthfaces.num_identities = 40
        c.data.synthfaces.ages_per_identity = 6
    elif arg:
        raise ValueError(f"configs/synthfaces.py takes '' or 'tiny', got {arg!r}")
    return c
