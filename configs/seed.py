"""The original project's layer plan, for side-by-side comparison.

200x200 input, 4x4 convolutions, 64-128-256-512 widths, 14 groups, the encoder's
5x pooling to a 5x5x512 identity map, two extra 512 blocks in the encoder and
decoder, a six-block residual discriminator. Its defects are fixed (see README).
"""

from faceaging import config as base


def get_config(arg: str = ""):
    c = base.base_config()
    c.image_size = 200
    c.data.schedule = "utk14"
    c.model.update(dict(kernel_size=4, stem_channels=64, encoder_channels=(128, 256, 512, 512),
                        encoder_factors=(2, 2, 2, 5), encoder_extra_blocks=2, modulator_blocks=1,
                        style_dim=512, decoder_extra_blocks=2, disc_stem_channels=64,
                        disc_channels=(128, 256, 512, 512, 512, 512),
                        share_generators=True))  # the original used one set of weights twice
    if arg == "tiny":
        base.tiny(c)
    elif arg:
        raise ValueError(f"configs/seed.py takes '' or 'tiny', got {arg!r}")
    return c
