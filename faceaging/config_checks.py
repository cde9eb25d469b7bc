"""Checking a training config before any work, and comparing it with a checkpoint's on resume.

``problems(config, ...)`` lists every value or relation a run cannot train with, one line per
problem naming the field, its value and what is expected; ``train`` raises ``ConfigError`` with
them before building datasets, compiling or writing anything. ``resume_changes(saved, current)``
sorts what differs between the config a checkpoint was saved with and today's into changes that
cannot work (shapes, the meaning of the age groups), changes that must be asked for
(``--allow_config_changes``) and changes that are always fine (how long, how often, where).
"""

from __future__ import annotations

import math
from typing import Callable

import ml_collections

from faceaging import augment, config as config_lib, schedules

DTYPES = ("float32", "bfloat16", "float16")
DATASETS = ("utk_face", "synth_faces")
TARGET_SAMPLING = ("uniform", "frequency")
IDENTITY_ENCODERS = ("restoring", "aging")  # loss.identity_encoder (faceaging.steps.g_loss)
IDENTITY_DISTANCES = ("l1", "cosine")  # loss.identity_distance
RESIDUAL_SPACES = ("tanh", "linear")  # model.residual_space (faceaging.models.Generator)

# Fields whose change makes a checkpoint unusable: parameter shapes or what each group means.
INCOMPATIBLE = ("image_size", "model.", "data.name", "data.schedule")
# Fields a resumed run may change freely: how long, how often, where, and evaluation settings.
FREE = ("train.steps", "train.log_every", "train.sample_every", "train.checkpoint_every",
        "train.keep_checkpoints", "train.max_nonfinite_steps", "data.data_dir", "data.manual_dir",
        "data.worker_count", "data.num_sample_images", "mesh.", "eval.", "estimator.",
        "traits.")


class ConfigError(ValueError):
    """The config cannot train; ``problems`` holds one line per field."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _check(found: list[str], field: str, value, ok: Callable[[object], bool], expected: str):
    try:
        good = ok(value)
    except (TypeError, ValueError):
        good = False
    if not good:
        found.append(f"config.{field}={value!r}: expected {expected}")


def _fields(config: ml_collections.ConfigDict, prefix: str, names) -> list[tuple[str, object]]:
    section = config
    for part in prefix.split(".") if prefix else ():
        section = section[part]
    return [(f"{prefix}.{n}" if prefix else n, section[n]) for n in names]


def problems(config: ml_collections.ConfigDict, device_count: int, process_count: int = 1) -> list[str]:
    """Every problem of ``config`` as a training config on ``device_count`` devices in
    ``process_count`` processes; empty when it can train."""
    found: list[str] = []
    check = lambda field, value, ok, expected: _check(found, field, value, ok, expected)
    positive = "a positive integer"

    check("seed", config.seed, lambda v: isinstance(v, int), "an integer")
    check("image_size", config.image_size, _positive_int, positive)
    check("dtype", config.dtype, lambda v: v in DTYPES, f"one of {', '.join(DTYPES)}")

    data = config.data
    check("data.name", data.name, lambda v: v in DATASETS, f"one of {', '.join(DATASETS)}")
    try:
        schedules.get_schedule(data.schedule)
    except (ValueError, TypeError, KeyError) as e:
        found.append(f"config.data.schedule={data.schedule!r}: {e}")
    check("data.target_sampling", data.target_sampling, lambda v: v in TARGET_SAMPLING,
          f"one of {', '.join(TARGET_SAMPLING)}")
    check("data.worker_count", data.worker_count, lambda v: isinstance(v, int) and v >= -1,
          "-1 (auto) or an integer >= 0")
    check("data.num_sample_images", data.num_sample_images, _positive_int, positive)

    model = config.model
    for field, value in _fields(config, "model", ("kernel_size", "stem_channels", "style_dim",
                                                  "disc_stem_channels")):
        check(field, value, _positive_int, positive)
    check("model.kernel_size", model.kernel_size, lambda v: v % 2 == 1, "an odd kernel size")
    for field, value in _fields(config, "model", ("encoder_extra_blocks", "modulator_blocks",
                                                  "decoder_extra_blocks")):
        check(field, value, lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    for field, value in _fields(config, "model", ("encoder_channels", "encoder_factors",
                                                  "disc_channels")):
        check(field, value, lambda v: len(v) >= 1 and all(_positive_int(c) for c in v),
              "a non-empty tuple of positive integers")
    if not any(p.startswith(("config.image_size", "config.model.")) for p in found):
        found += geometry_problems(config.image_size, model)

    for field, value in _fields(config, "loss", ("adversarial", "age", "cycle", "identity",
                                                 "reconstruction", "preserve", "gate",
                                                 "age_guide", "attribute_guide", "attribute_features",
                                                 "change_smoothness",
                                                 "patch_adversarial",
                                                 "r1_gamma")):
        check(field, value, lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0")
    check("loss.r1_every", config.loss.r1_every, _positive_int, positive)
    check("loss.identity_encoder", config.loss.identity_encoder,
          lambda v: v in IDENTITY_ENCODERS, f"one of {', '.join(IDENTITY_ENCODERS)}")
    check("loss.identity_distance", config.loss.identity_distance,
          lambda v: v in IDENTITY_DISTANCES, f"one of {', '.join(IDENTITY_DISTANCES)}")
    check("model.residual_space", model.residual_space, lambda v: v in RESIDUAL_SPACES,
          f"one of {', '.join(RESIDUAL_SPACES)}")
    check("model.gate_bias", model.gate_bias, math.isfinite, "a finite number")
    for field, value in _fields(config, "loss", ("gate_exponent", "gate_floor",
                                                 "change_smoothness_sigma")):
        check(field, value, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
    check("model.warp_max_shift", model.warp_max_shift, lambda v: 0 <= v < 1,
          "a fraction of the image side in [0, 1) (0: no warp)")
    if not (model.residual_output or model.output_mask):  # the output would not use the input
        check("model.warp_max_shift", model.warp_max_shift, lambda v: v == 0,
              "0 unless config.model.residual_output or config.model.output_mask is on")
    layers = len(config.attribute_guide.channels)
    check("attribute_guide.feature_layers", config.attribute_guide.feature_layers,
          lambda v: len(v) >= 1 and all(isinstance(i, int) and -layers <= i < layers for i in v),
          f"a non-empty tuple of indices into attribute_guide.channels (-{layers} to {layers - 1})")
    if not model.output_mask:
        check("loss.gate", config.loss.gate, lambda v: v == 0,
              "0 without an output gate (set config.model.output_mask=True)")

    for field, value in _fields(config, "optim", ("g_learning_rate", "d_learning_rate")):
        check(field, value, lambda v: math.isfinite(v) and v > 0, "a finite number > 0")
    for field, value in _fields(config, "optim", ("b1", "b2", "ema_decay")):
        check(field, value, lambda v: 0 <= v < 1, "a number in [0, 1)")
    check("optim.decay_from", config.optim.decay_from, lambda v: 0 <= v <= 1,
          "a fraction of train.steps in [0, 1] (1: constant learning rates)")

    train = config.train
    for field, value in _fields(config, "train", ("batch_size", "steps", "log_every",
                                                  "sample_every", "checkpoint_every",
                                                  "keep_checkpoints")):
        check(field, value, _positive_int, positive)
    check("train.max_nonfinite_steps", train.max_nonfinite_steps,
          lambda v: isinstance(v, int) and v >= 0, "an integer >= 0")
    check("train.d_augment", train.d_augment,
          lambda v: isinstance(v, str) and augment.parse(v) is not None, augment.EXPECTED)

    requested = config.mesh.num_devices
    check("mesh.num_devices", requested, lambda v: v == -1 or 1 <= v <= device_count,
          f"-1 (every device) or 1 to {device_count} (the devices present)")
    devices = device_count if requested == -1 else requested
    if _positive_int(train.batch_size) and _positive_int(devices) and devices <= device_count:
        check("train.batch_size", train.batch_size, lambda v: v % devices == 0,
              f"a multiple of the {devices} data-parallel device(s)")
        check("train.batch_size", train.batch_size, lambda v: v % process_count == 0,
              f"a multiple of the {process_count} process(es)")
    return list(dict.fromkeys(found))  # one line per problem, even if two checks saw it


def geometry_problems(image_size: int, model: ml_collections.ConfigDict) -> list[str]:
    """Problems of ``image_size`` with the model's down/upsampling plan (well-typed fields)."""
    found = []
    if len(model.encoder_factors) != len(model.encoder_channels):
        found.append(f"config.model.encoder_factors={tuple(model.encoder_factors)!r}: expected one "
                     f"factor per model.encoder_channels entry ({len(model.encoder_channels)})")
    else:
        reduction = math.prod(model.encoder_factors)
        _check(found, "image_size", image_size, lambda v: v % reduction == 0,
               f"a multiple of {reduction} (the product of model.encoder_factors)")
    smallest = 2 ** len(model.disc_channels)
    _check(found, "image_size", image_size, lambda v: v >= smallest,
           f"at least {smallest} for {len(model.disc_channels)} discriminator poolings "
           "(model.disc_channels)")
    return found


def check(config: ml_collections.ConfigDict, device_count: int, process_count: int = 1) -> None:
    """Raises ``ConfigError`` listing every problem of ``config`` (see ``problems``)."""
    found = problems(config, device_count, process_count)
    if found:
        raise ConfigError(found)


def as_flat_dict(config) -> dict:
    """{'train.batch_size': 32, ...}: a config (or its JSON dict) with dotted keys, JSON values."""
    return config_lib.flat_fields(config_lib.to_dict(config)
                                  if isinstance(config, ml_collections.ConfigDict) else config)


def _matches(field: str, patterns) -> bool:
    return any(field == p or (p.endswith(".") and field.startswith(p)) for p in patterns)


def resume_changes(saved: dict, current) -> dict[str, list[str]]:
    """What differs between the config a checkpoint was saved with (its JSON dict) and
    ``current``, as ``{'incompatible': [...], 'needs_permission': [...], 'free': [...]}`` of lines
    ``field: saved -> current``. A field added since the checkpoint was saved counts at its
    default (the run trained without the feature: turning it on is a change); fields removed
    since are ignored."""
    filled_config, filled = config_lib.from_dict(saved)
    old, new = as_flat_dict(filled_config), as_flat_dict(current)
    changes = {"incompatible": [], "needs_permission": [], "free": []}
    for field in sorted(old.keys() & new.keys()):
        if old[field] == new[field]:
            continue
        line = f"{field}: {old[field]!r} -> {new[field]!r}"
        if field in filled:
            line += " (the checkpoint predates the field: its default assumed)"
        if _matches(field, INCOMPATIBLE):
            changes["incompatible"].append(line)
        elif _matches(field, FREE):
            changes["free"].append(line)
        else:
            changes["needs_permission"].append(line)
    return changes
