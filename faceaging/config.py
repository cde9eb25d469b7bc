"""The base config tree every part of faceaging reads; ``configs/*.py`` adjust it."""

from __future__ import annotations

import json
import os

import ml_collections

from faceaging import files


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.image_size = 128
    c.dtype = "bfloat16"  # compute dtype; parameters stay float32

    c.data = ml_collections.ConfigDict()
    c.data.name = "utk_face"
    c.data.data_dir = os.path.expanduser("~/tensorflow_datasets")
    c.data.manual_dir = os.path.expanduser("~/tensorflow_datasets/downloads/manual")
    c.data.schedule = "utk14"  # a name in faceaging.schedules or ranges like "0-19,20-39,40+"
    c.data.target_sampling = "uniform"  # 'uniform' or 'frequency' (as often as the group occurs)
    c.data.random_flip = True
    c.data.worker_count = -1  # grain worker processes; 0 decodes in-process; -1: 0 on CPU, else up to 8
    c.data.num_sample_images = 8  # validation faces in the sample grid

    c.model = ml_collections.ConfigDict()
    c.model.kernel_size = 3
    c.model.stem_channels = 64
    c.model.encoder_channels = (128, 256, 256, 256)
    c.model.encoder_factors = (2, 2, 2, 2)
    c.model.encoder_extra_blocks = 1
    c.model.modulator_blocks = 1
    c.model.style_dim = 256
    c.model.decoder_extra_blocks = 1
    c.model.disc_stem_channels = 64
    c.model.disc_channels = (128, 256, 256, 256, 256)
    c.model.share_generators = False
    c.model.residual_output = False  # decoder outputs a change to the input (see models.Generator)
    # Where that change is added: "tanh" (tanh(atanh(x) + change): saturated pixels, white or
    # black hair, barely move) or "linear" (x + change, clipped to [-1, 1]).
    c.model.residual_space = "tanh"
    c.model.spatial_age = False  # age code also joins the bottleneck at every position (models.SpatialAge)
    c.model.output_mask = False  # a learned per-pixel gate between the input and the change (models.Generator)
    # Largest shift of a learned smooth warp of the input (models.WarpHead), as a fraction of
    # the image's side; 0: no warp. Needs residual_output or output_mask (the warp moves the input).
    c.model.warp_max_shift = 0.0
    # The decoder also reads the input's pixels at full resolution (models.InputSkip), so the
    # change and the gate can follow edges finer than the bottleneck (hair, eyes).
    c.model.input_skip = False
    c.model.gate_bias = 0.0  # the gate's initial logit: 0 starts half open, -3 nearly closed (sigmoid 0.05)
    c.model.disc_head = "pool"  # 'pool' (global average) or 'flatten' (+ minibatch stddev; sees layout)
    # D also judges patches: one real/fake logit per age group at every position of the map
    # before its last downsampling (PatchGAN-style), beside the whole-image head.
    c.model.disc_patch_head = False

    c.loss = ml_collections.ConfigDict()
    c.loss.adversarial = 1.0
    c.loss.age = 1.0  # D's age-group classification of real images
    c.loss.age_generator = -1.0  # G's weight on D's age classifier for its fakes; < 0: loss.age
    c.loss.cycle = 10.0
    c.loss.identity = 1.0
    # Which encoder reads the fake for the identity term: 'restoring' (the cycle pass's encoder,
    # compared with the aging encoder's features of the input) or 'aging' (the same encoder on
    # both sides). 'cosine' compares feature directions per position (a shrinking scale cannot
    # lower it); 'l1' the raw features.
    c.loss.identity_encoder = "restoring"
    c.loss.identity_distance = "l1"
    c.loss.reconstruction = 10.0  # L1 of G(x, source group) to x; 0 skips that pass
    c.loss.preserve = 0.0  # L1 of G(x, target group) to x: change only what age needs
    c.loss.gate = 0.0  # mean opening of the output gate (model.output_mask): open it only where needed
    c.loss.gate_exponent = 1.0  # each pixel's opening ** this before the mean: < 1 shuts small openings
    # added to each opening before the exponent (losses.gate_opening): the cost's slope at a
    # shut gate is exponent * floor ** (exponent - 1); tiny, it traps a gate that shuts early
    c.loss.gate_floor = 1e-6
    # G's cross entropy of a frozen age-group classifier (faceaging/age_guide.py) on its fakes;
    # 0 leaves it out. Trained before the GAN (config.age_guide) when the workdir has none.
    c.loss.age_guide = 0.0
    # G's KL divergence between a frozen gender/race classifier's reading of the input and of the
    # aged image (faceaging/age_guide.py): aging must keep who the person is. 0 leaves it out.
    c.loss.attribute_guide = 0.0
    # G's cosine distance between that guide's activation maps of the input and of the aged image
    # (attribute_guide.feature_layers): what it sees where, hair and eyes included. 0 leaves it out.
    c.loss.attribute_features = 0.0
    # G's edge-aware variation of its change (aged image - input, the warped input with a warp):
    # neighbouring pixels the input shows alike (within ~change_smoothness_sigma, [-1, 1] units)
    # should change alike, so a region such as the hair is recoloured whole, not streaked.
    c.loss.change_smoothness = 0.0
    c.loss.change_smoothness_sigma = 0.1
    c.loss.patch_adversarial = 1.0  # weight of the patch judges' mean loss (model.disc_patch_head)
    c.loss.r1_gamma = 10.0
    c.loss.r1_every = 16  # lazy R1: applied (scaled up) every this many steps

    c.optim = ml_collections.ConfigDict()
    c.optim.g_learning_rate = 1e-4
    c.optim.d_learning_rate = 1e-4
    c.optim.b1 = 0.0
    c.optim.b2 = 0.99
    c.optim.ema_decay = 0.999
    # Both learning rates fall linearly to 0 from this fraction of train.steps to its end
    # (1.0: constant). The decay follows train.steps: raising it on resume moves the decay.
    c.optim.decay_from = 1.0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.num_devices = -1  # data-parallel devices; -1 uses every device
    c.mesh.fsdp = False  # split parameters and optimizer state over the devices (FSDP)

    c.estimator = ml_collections.ConfigDict()  # independent age estimator for evaluation
    c.estimator.channels = (32, 64, 128, 128)
    c.estimator.steps = 2000
    c.estimator.batch_size = 64
    c.estimator.learning_rate = 1e-3
    c.estimator.label_sigma = 3.0  # years: Gaussian smoothing of the age labels

    c.age_guide = ml_collections.ConfigDict()  # the frozen classifier of loss.age_guide
    c.age_guide.channels = (32, 64, 128)
    c.age_guide.steps = 1500
    c.age_guide.batch_size = 64
    c.age_guide.learning_rate = 1e-3

    c.attribute_guide = ml_collections.ConfigDict()  # the frozen classifier of loss.attribute_guide
    c.attribute_guide.channels = (32, 64, 128)
    c.attribute_guide.steps = 1500
    c.attribute_guide.batch_size = 64
    c.attribute_guide.learning_rate = 1e-3
    # which of its convolutions' activation maps loss.attribute_features compares (Python
    # indices: -1 is the last); the first map is mostly colour, which aging changes in the hair
    c.attribute_guide.feature_layers = (-2, -1)

    c.traits = ml_collections.ConfigDict()  # SynthFaces trait classifier for evaluation
    c.traits.num_renders = 12000  # fresh identities rendered to train it (SynthFaces is procedural)
    c.traits.channels = (32, 64, 128, 128)
    c.traits.strides = (2, 2, 2, 2)
    c.traits.steps = 4000
    c.traits.batch_size = 64
    c.traits.learning_rate = 1e-3

    c.eval = ml_collections.ConfigDict()
    # faceaging.evaluators modules run by --mode=eval, in report order (those that do not apply
    # to the dataset, e.g. synthfaces_truth on UTKFace, are left out silently)
    c.eval.evaluators = "age,cycle,identity,fid_kid,synthfaces_truth,geometry,traits,two_sample"
    c.eval.num_images = 128  # held-out images evaluated (datasets other than SynthFaces)
    # SynthFaces: evaluate on this many identities rendered for evaluation only, each at one age
    # of every group (0: on the held-out split's first num_images images instead)
    c.eval.fresh_identities = 0
    c.eval.two_sample_steps = 600  # training steps of the real-vs-aged classifier
    c.eval.two_sample_channels = (32, 64, 128)
    c.eval.batch_size = 64  # images per feature-network call
    c.eval.weights_dir = os.path.expanduser("~/.cache/faceaging/weights")  # where "" paths look
    # FID/KID: pytorch-fid's InceptionV3 converted to .npz (README); "" = weights_dir/fid_inception.npz
    c.eval.fid_weights = ""
    c.eval.fid_source_sha256_prefix = "6726825d"  # of pt_inception-2015-12-05-6726825d.pth
    c.eval.fid_image_size = 299
    c.eval.fid_num_real = 512  # real training images per target group
    c.eval.kid_subsets = 100
    c.eval.kid_subset_size = 1000
    # Identity: an ArcFace-style ONNX model; "" = weights_dir/face_embedding.onnx
    c.eval.identity_weights = ""
    c.eval.identity_weights_sha256 = ""  # pin the file; "" logs its digest instead
    c.eval.identity_image_size = 112  # used when the model's input size is dynamic
    c.eval.identity_crop = 1.0  # central fraction of the image given to the model
    c.eval.identity_mean = 127.5
    c.eval.identity_std = 127.5
    c.eval.identity_channels = "RGB"  # 'RGB' or 'BGR'

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32  # global, across all devices and processes
    c.train.steps = 100_000
    c.train.log_every = 100
    c.train.sample_every = 2_000
    c.train.checkpoint_every = 2_000
    c.train.keep_checkpoints = 3
    c.train.max_nonfinite_steps = 20  # stop with an error once more steps than this were skipped
    # Random transforms every image D reads passes through (faceaging/augment.py, DiffAugment):
    # a comma-separated subset of 'translation,cutout', each optionally sized as a fraction of the
    # side ('cutout:0.25'); '' reads the images as they are. At the
    # SynthFaces :full budget 'translation,cutout' broke aging (age accuracy 97% -> 76%: shifted
    # images hide the layout D judges; benchmarks/RESULTS.md).
    c.train.d_augment = ""
    return c


def tiny(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Shrinks ``c`` in place to a CPU-sized model and batch for tests and smoke runs."""
    c.image_size = 32
    c.dtype = "float32"
    c.model.update(dict(kernel_size=3, stem_channels=8, encoder_channels=(16, 32),
                        encoder_factors=(2, 2), encoder_extra_blocks=1, modulator_blocks=1,
                        style_dim=32, decoder_extra_blocks=0, disc_stem_channels=8,
                        disc_channels=(16, 32, 32)))
    c.loss.r1_every = 4
    c.optim.update(dict(g_learning_rate=5e-4, d_learning_rate=5e-4, ema_decay=0.99))
    c.data.num_sample_images = 4
    c.train.update(dict(batch_size=8, steps=20, log_every=5, sample_every=10, checkpoint_every=10))
    c.estimator.update(dict(channels=(8, 16), steps=20, batch_size=8))
    c.age_guide.update(dict(channels=(8, 16), steps=20, batch_size=8))
    c.attribute_guide.update(dict(channels=(8, 16), steps=20, batch_size=8))
    c.traits.update(dict(num_renders=64, channels=(8, 16), strides=(2, 2), steps=20, batch_size=8))
    c.eval.update(dict(num_images=8, batch_size=8, fid_image_size=75, fid_num_real=16,
                       kid_subsets=4, kid_subset_size=16, two_sample_steps=20,
                       two_sample_channels=(8, 16)))
    return c


def save(config: ml_collections.ConfigDict, path: str) -> None:
    """Writes ``config`` as JSON, atomically."""
    files.write_text(path, config.to_json(indent=2))


def flat_fields(tree: dict, prefix: str = "") -> dict:
    """{'train.batch_size': 32, ...}: a config's JSON dict with dotted keys."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flat_fields(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def from_dict(saved: dict) -> tuple[ml_collections.ConfigDict, list[str]]:
    """(config, fields filled from today's defaults) of a config saved as a JSON dict.

    Fields added to ``base_config`` after the run was trained are missing from it and take
    their defaults; their dotted names are returned so callers can say so.
    """
    config = base_config()
    defaults = to_dict(config)
    config.update(saved)
    return config, sorted(flat_fields(defaults).keys() - flat_fields(saved).keys())


def to_dict(config: ml_collections.ConfigDict) -> dict:
    """The config as the JSON dict ``save`` writes and ``from_dict`` reads."""
    return json.loads(config.to_json())


def read_dict(path: str) -> dict:
    """The JSON dict ``save`` wrote to ``path``, as saved (no fields filled)."""
    if not files.isfile(path):
        raise FileNotFoundError(f"{path} not found: its folder holds no faceaging training run")
    return json.loads(files.read_text(path))


def load(path: str) -> tuple[ml_collections.ConfigDict, list[str]]:
    """(config, fields filled from defaults) of a config JSON written by ``save``."""
    return from_dict(read_dict(path))
