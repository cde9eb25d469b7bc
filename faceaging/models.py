"""Generator (encoder, age modulator, decoder) and discriminator as Flax NNX modules.

Images are NHWC in [-1, 1]. Age conditions are float vectors over the age groups
(one-hot for a group; convex mixtures interpolate between groups). Every module
computes in ``dtype`` and keeps float32 parameters; normalisation runs in float32.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections

from faceaging import config_checks, conv as conv_lib

LEAK = 0.2
NORM_EPS = 1e-5
DISC_HEADS = ("pool", "flatten")
RESIDUAL_CLIP = 0.995  # |x| bound before atanh, so saturated pixels stay finite
# nnx.Conv with a faster weight gradient on CPU (faceaging.conv); same parameters and results.
Conv = functools.partial(nnx.Conv, conv_general_dilated=conv_lib.conv_general_dilated)


def _act(x):
    return jax.nn.leaky_relu(x, LEAK)


def instance_norm(x, eps: float = NORM_EPS):
    """Normalises each channel of each image over its spatial dims (in float32)."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(axis=(1, 2), keepdims=True)
    var = x32.var(axis=(1, 2), keepdims=True)
    return (x32 - mean) * jax.lax.rsqrt(var + eps)


def resample(x, mode: str | None, factor: int):
    """Nearest-neighbour upsampling, or average pooling that drops a remainder row/column."""
    if mode == "up":
        return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)
    if mode == "down":
        b, h, w, c = x.shape
        h, w = h // factor, w // factor
        x = x[:, :h * factor, :w * factor]
        pooled = x.astype(jnp.float32).reshape(b, h, factor, w, factor, c)
        return pooled.mean(axis=(2, 4)).astype(x.dtype)
    return x


class AffineInstanceNorm(nnx.Module):
    """Instance norm with a learned per-channel scale and shift."""

    def __init__(self, channels: int, *, rngs: nnx.Rngs):
        del rngs
        self.scale = nnx.Param(jnp.ones((channels,), jnp.float32))
        self.bias = nnx.Param(jnp.zeros((channels,), jnp.float32))

    def __call__(self, x, cond=None):
        del cond
        return (instance_norm(x) * self.scale[...] + self.bias[...]).astype(x.dtype)


class ConditionalNorm(nnx.Module):
    """Instance norm whose scale and shift are predicted from a condition vector.

    With the style vector as condition this is AdaIN; with the age code it is the
    age modulator's conditional normalisation. The projection starts at zero, so
    the layer starts as plain instance norm (scale 1, shift 0).
    """

    def __init__(self, channels: int, cond_dim: int, *, rngs: nnx.Rngs):
        self.proj = nnx.Linear(cond_dim, 2 * channels, kernel_init=nnx.initializers.zeros, rngs=rngs)

    def __call__(self, x, cond):
        scale, shift = jnp.split(self.proj(cond.astype(jnp.float32)), 2, axis=-1)
        out = instance_norm(x) * (1.0 + scale[:, None, None, :]) + shift[:, None, None, :]
        return out.astype(x.dtype)


def _make_norm(kind: str, channels: int, cond_dim: int, rngs: nnx.Rngs):
    if kind == "instance":
        return AffineInstanceNorm(channels, rngs=rngs)
    if kind == "conditional":
        return ConditionalNorm(channels, cond_dim, rngs=rngs)
    if kind == "none":
        return None
    raise ValueError(f"unknown norm {kind!r}: expected 'instance', 'conditional' or 'none'")


class ResBlock(nnx.Module):
    """Pre-activation residual block: norm -> act -> conv, twice, plus a skip path.

    Upsampling happens before the convolutions and downsampling after them, so
    every output pixel is produced by a full-resolution 3x3/4x4 convolution.
    """

    def __init__(self, in_ch: int, out_ch: int, *, kernel_size: int, norm: str = "none",
                 cond_dim: int = 0, resample_mode: str | None = None, factor: int = 1,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        conv = lambda i, o, k: Conv(i, o, (k, k), dtype=dtype, rngs=rngs)
        self.norm1 = _make_norm(norm, in_ch, cond_dim, rngs)
        self.conv1 = conv(in_ch, out_ch, kernel_size)
        self.norm2 = _make_norm(norm, out_ch, cond_dim, rngs)
        self.conv2 = conv(out_ch, out_ch, kernel_size)
        self.skip = conv(in_ch, out_ch, 1) if in_ch != out_ch else None
        self.resample_mode = resample_mode
        self.factor = factor

    def __call__(self, x, cond=None):
        h = x if self.norm1 is None else self.norm1(x, cond)
        skip = x
        if self.resample_mode == "up":
            h, skip = resample(h, "up", self.factor), resample(skip, "up", self.factor)
        h = self.conv1(_act(h))
        h = h if self.norm2 is None else self.norm2(h, cond)
        h = self.conv2(_act(h))
        if self.skip is not None:
            skip = self.skip(skip)
        out = (h + skip.astype(h.dtype)) * (1 / math.sqrt(2))
        return resample(out, "down", self.factor) if self.resample_mode == "down" else out


class Encoder(nnx.Module):
    """Image -> spatial identity features (no age input)."""

    def __init__(self, cfg: ml_collections.ConfigDict, *, dtype, rngs: nnx.Rngs):
        k = cfg.kernel_size
        self.stem = Conv(3, cfg.stem_channels, (k, k), dtype=dtype, rngs=rngs)
        chans = [cfg.stem_channels, *cfg.encoder_channels]
        self.blocks = nnx.List(
            [ResBlock(i, o, kernel_size=k, norm="instance", resample_mode="down", factor=f,
                      dtype=dtype, rngs=rngs)
             for i, o, f in zip(chans[:-1], chans[1:], cfg.encoder_factors)]
            + [ResBlock(chans[-1], chans[-1], kernel_size=k, dtype=dtype, rngs=rngs)
               for _ in range(cfg.encoder_extra_blocks)])

    def __call__(self, x):
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return h


class AgeModulator(nnx.Module):
    """(identity features, age code) -> age-aware style vector.

    Residual blocks with conditional normalisation on the age code see the
    identity features, so the style depends on who is being aged (as in RAGAN).
    """

    def __init__(self, cfg: ml_collections.ConfigDict, num_groups: int, *, dtype, rngs: nnx.Rngs):
        ch = cfg.encoder_channels[-1]
        self.blocks = nnx.List(
            [ResBlock(ch, ch, kernel_size=cfg.kernel_size, norm="conditional", cond_dim=num_groups,
                      dtype=dtype, rngs=rngs) for _ in range(cfg.modulator_blocks)])
        self.fc1 = nnx.Linear(ch, cfg.style_dim, rngs=rngs)
        self.fc2 = nnx.Linear(cfg.style_dim, cfg.style_dim, rngs=rngs)

    def __call__(self, identity, age_code):
        h = identity
        for block in self.blocks:
            h = block(h, age_code)
        pooled = _act(h).astype(jnp.float32).mean(axis=(1, 2))
        return self.fc2(_act(self.fc1(pooled)))


def with_age_map(features, age_code):
    """``features`` (N, H, W, C) with the age code appended at every position."""
    b, h, w, _ = features.shape
    age_map = jnp.broadcast_to(age_code[:, None, None, :].astype(features.dtype),
                               (b, h, w, age_code.shape[-1]))
    return jnp.concatenate([features, age_map], axis=-1)


class SpatialAge(nnx.Module):
    """Age at every position of the bottleneck: ``identity + conv3x3([identity, age map])``.

    The global style (AdaIN) can only rescale channels everywhere at once; this lets the change
    depend on where it is and on the local features (a chin, an eye line), so parts can move.
    The convolution starts at zero, so the block starts as the identity.
    """

    def __init__(self, channels: int, num_groups: int, kernel_size: int, *, dtype, rngs: nnx.Rngs):
        self.conv = Conv(channels + num_groups, channels, (kernel_size, kernel_size),
                         kernel_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs)

    def __call__(self, identity, age_code):
        return identity + self.conv(with_age_map(identity, age_code))


def warp(images, flow):
    """``images`` resampled at each pixel plus ``flow`` (N, H, W, 2: rows, columns, in pixels),
    bilinearly, reading the nearest edge pixel beyond the border; differentiable in both."""
    n, h, w, c = images.shape
    rows, cols = jnp.meshgrid(jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
                              indexing="ij")
    y = jnp.clip(rows + flow[..., 0], 0, h - 1)
    x = jnp.clip(cols + flow[..., 1], 0, w - 1)
    y0, x0 = jnp.floor(y), jnp.floor(x)
    wy, wx = (y - y0)[..., None], (x - x0)[..., None]
    y0, x0 = y0.astype(jnp.int32), x0.astype(jnp.int32)
    y1, x1 = jnp.minimum(y0 + 1, h - 1), jnp.minimum(x0 + 1, w - 1)
    flat = images.astype(jnp.float32).reshape(n, h * w, c)
    at = lambda yi, xi: jnp.take_along_axis(flat, (yi * w + xi).reshape(n, h * w, 1), axis=1
                                            ).reshape(n, h, w, c)
    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


class WarpHead(nnx.Module):
    """(bottleneck features, age code) -> a smooth flow field at the image's size, in pixels.

    A convolution over the features and the age map gives a flow at the bottleneck's resolution,
    bounded by ``max_shift`` of the image's side (tanh), upsampled bilinearly: each bottleneck
    position moves a whole patch, so parts (an eye line, a chin) move together instead of being
    repainted. The convolution starts at zero, so the warp starts as the identity.
    """

    def __init__(self, channels: int, num_groups: int, kernel_size: int, max_shift: float, *,
                 dtype, rngs: nnx.Rngs):
        self.conv = Conv(channels + num_groups, 2, (kernel_size, kernel_size),
                         kernel_init=nnx.initializers.zeros, dtype=dtype, rngs=rngs)
        self.max_shift = max_shift

    def __call__(self, features, age_code, height: int, width: int):
        flow = jnp.tanh(self.conv(with_age_map(features, age_code)).astype(jnp.float32))
        flow = flow * (self.max_shift * jnp.array([height, width], jnp.float32))
        return jax.image.resize(flow, (features.shape[0], height, width, 2), method="linear")


class InputSkip(nnx.Module):
    """The input's pixels at full resolution -> features added to the decoder's last map.

    The decoder otherwise sees the face only through the bottleneck (a quarter of the side or
    less), so its change and gate cannot follow anything finer than one bottleneck cell (a hair
    strand's edge, an iris). Two 3x3 convolutions; the second starts at zero, so the generator
    starts as it would without this path.
    """

    def __init__(self, channels: int, kernel_size: int, *, dtype, rngs: nnx.Rngs):
        k = (kernel_size, kernel_size)
        self.conv1 = Conv(3, channels, k, dtype=dtype, rngs=rngs)
        self.conv2 = Conv(channels, channels, k, kernel_init=nnx.initializers.zeros, dtype=dtype,
                          rngs=rngs)

    def __call__(self, pixels):
        return self.conv2(_act(self.conv1(pixels)))


class Decoded(NamedTuple):
    image: jax.Array  # the aged images, float32 in [-1, 1]
    gate: jax.Array | None  # (N, H, W, 1) output gate in (0, 1), with model.output_mask
    base: jax.Array  # what the change was applied to: the input, warped with model.warp_max_shift


class Decoder(nnx.Module):
    """(identity features, style) -> pre-tanh RGB, AdaIN-modulated in every block.

    With ``input_skip`` it also reads the input's pixels at full resolution (``InputSkip``).
    """

    def __init__(self, cfg: ml_collections.ConfigDict, *, dtype, rngs: nnx.Rngs):
        k = cfg.kernel_size
        enc = [cfg.stem_channels, *cfg.encoder_channels]
        out_chans = enc[-2::-1]  # mirror of the encoder
        in_chans = [enc[-1], *out_chans[:-1]]
        factors = list(cfg.encoder_factors)[::-1]
        block = lambda i, o, **kw: ResBlock(i, o, kernel_size=k, norm="conditional",
                                            cond_dim=cfg.style_dim, dtype=dtype, rngs=rngs, **kw)
        self.blocks = nnx.List(
            [block(enc[-1], enc[-1]) for _ in range(cfg.decoder_extra_blocks)]
            + [block(i, o, resample_mode="up", factor=f)
               for i, o, f in zip(in_chans, out_chans, factors)])
        self.input_skip = (InputSkip(out_chans[-1], k, dtype=dtype, rngs=rngs)
                           if cfg.input_skip else None)
        self.out_norm = ConditionalNorm(out_chans[-1], cfg.style_dim, rngs=rngs)
        # A residual generator starts as the identity map: its change starts at zero.
        rgb_init = nnx.initializers.zeros if cfg.residual_output else nnx.initializers.lecun_normal()
        # With ``output_mask`` a fourth channel: the logit of the gate (models.Generator).
        self.to_rgb = Conv(out_chans[-1], 4 if cfg.output_mask else 3, (k, k), kernel_init=rgb_init,
                           dtype=dtype, rngs=rngs)
        if cfg.output_mask:  # the gate opens from sigmoid(gate_bias) (a closed start passes the input)
            self.to_rgb.bias[...] = self.to_rgb.bias[...].at[3].set(cfg.gate_bias)

    def __call__(self, identity, style, pixels=None):
        """``pixels``: the image being changed, which ``input_skip`` reads (else unused)."""
        h = identity
        for block in self.blocks:
            h = block(h, style)
        if self.input_skip is not None:
            h = h + self.input_skip(pixels.astype(h.dtype))
        return self.to_rgb(_act(self.out_norm(h, style))).astype(jnp.float32)


class Generator(nnx.Module):
    """Encoder + age modulator + decoder.

    With ``residual_output`` the decoder's output is a change added to the input: the
    encoder-decoder only has to produce what aging changes, which trains much faster on small
    budgets. ``residual_space`` says where: ``"tanh"``, ``tanh(atanh(x) + delta)``, whose
    gradient ``1 - out**2`` all but vanishes on saturated pixels (white hair to be darkened, black
    hair to be greyed), or ``"linear"``, ``x + delta`` clipped to [-1, 1]: a full gradient inside
    the range, none for pushing past it (a straight-through clip let G push the change without
    bound: the generator's gradient norm reached 1e6 by step 300).

    With ``output_mask`` the decoder also outputs a per-pixel gate ``m`` in (0, 1) and the result
    is ``x + m * (g - x)`` for its image ``g``: where the gate closes (background, anything age
    does not touch) the input comes through exactly, instead of through a change that must be
    learnt to be zero everywhere (GANimation-style attention). ``preserve`` charges for what the
    gate lets through, and ``loss.gate`` for how far the gate is open on average.

    With ``warp_max_shift`` above 0 the input is first warped by a smooth learned flow
    (``WarpHead``) and the change and the gate apply to the warped input: proportions (eye line,
    chin, head size) can move without repainting the parts, and ``preserve`` compares with the
    warped input, so moving costs nothing there and repainting does.

    With ``input_skip`` the decoder also reads that (warped) input at full resolution.
    """

    def __init__(self, cfg: ml_collections.ConfigDict, num_groups: int, *, dtype=jnp.float32,
                 rngs: nnx.Rngs):
        self.encoder = Encoder(cfg, dtype=dtype, rngs=rngs)
        self.modulator = AgeModulator(cfg, num_groups, dtype=dtype, rngs=rngs)
        self.spatial_age = (SpatialAge(cfg.encoder_channels[-1], num_groups, cfg.kernel_size,
                                       dtype=dtype, rngs=rngs) if cfg.spatial_age else None)
        self.decoder = Decoder(cfg, dtype=dtype, rngs=rngs)
        self.warp_head = (WarpHead(cfg.encoder_channels[-1], num_groups, cfg.kernel_size,
                                   cfg.warp_max_shift, dtype=dtype, rngs=rngs)
                          if cfg.warp_max_shift > 0 else None)
        self.residual_output = cfg.residual_output
        self.residual_space = cfg.residual_space
        self.output_mask = cfg.output_mask

    def __call__(self, images, age_code):
        """Returns (aged images in float32 in [-1, 1], identity features of the input)."""
        identity = self.encoder(images)
        return self.decode(images, identity, age_code), identity

    def encode(self, images):
        """Identity features of ``images`` (the age-independent half of the generator)."""
        return self.encoder(images)

    def decode(self, images, identity, age_code):
        """``images`` (whose ``identity`` features were encoded) aged to ``age_code``."""
        return self.decode_parts(images, identity, age_code).image

    def decode_parts(self, images, identity, age_code) -> Decoded:
        """``decode``'s aged images with their gate and the (warped) input they changed."""
        style = self.modulator(identity, age_code)
        if self.spatial_age is not None:
            identity = self.spatial_age(identity, age_code)
        x = images.astype(jnp.float32)
        if self.warp_head is not None:
            x = warp(x, self.warp_head(identity, age_code, *images.shape[1:3]))
        out = self.decoder(identity, style, x)
        if self.output_mask:
            out, gate_logit = out[..., :3], out[..., 3:]
        if not self.residual_output:
            out = jnp.tanh(out)
        elif self.residual_space == "linear":
            out = jnp.clip(x + out, -1.0, 1.0)
        else:
            out = jnp.tanh(out + jnp.arctanh(jnp.clip(x, -RESIDUAL_CLIP, RESIDUAL_CLIP)))
        if not self.output_mask:
            return Decoded(out, None, x)
        gate = jax.nn.sigmoid(gate_logit)
        return Decoded(x + gate * (out - x), gate, x)


def minibatch_stddev(h, group: int = 4):
    """``h`` with one more channel: the standard deviation of the features over each group of
    ``group`` consecutive images (averaged over features and positions), so D can see a batch
    that lacks variety. Uses the largest group size dividing the batch, up to ``group``."""
    n = h.shape[0]
    g = math.gcd(n, group)
    x = h.astype(jnp.float32).reshape(g, n // g, *h.shape[1:])
    std = jnp.sqrt(x.var(axis=0) + 1e-8).mean(axis=(1, 2, 3))  # (n // g,)
    stat = jnp.tile(std, g)[:, None, None, None]
    return jnp.concatenate([h, jnp.broadcast_to(stat.astype(h.dtype), (*h.shape[:3], 1))], axis=-1)


class Discriminator(nnx.Module):
    """Image -> (one real/fake logit per age group, age-group classifier logits).

    ``disc_head``: 'pool' averages the last feature map over positions (blind to where things
    are); 'flatten' adds a minibatch-stddev channel and reads the whole map through a dense layer,
    so layout (eye height, head size) reaches both heads.
    ``disc_patch_head``: the real/fake logits are (N, 1 + P, groups) instead of (N, groups): the
    whole-image judge first, then one judge per position of the feature map that enters the last
    downsampling block (P positions, each seeing a patch of the image; PatchGAN-style), so a
    locally unreal region (stripes under a dark cap) costs G even where the whole image passes.
    The losses weigh the patch judges' mean by ``loss.patch_adversarial`` (``losses.per_image``).
    """

    def __init__(self, cfg: ml_collections.ConfigDict, num_groups: int, *, dtype=jnp.float32,
                 image_size: int, rngs: nnx.Rngs):
        k = cfg.kernel_size
        chans = [cfg.disc_stem_channels, *cfg.disc_channels]
        if cfg.disc_head not in DISC_HEADS:
            raise ValueError(f"config.model.disc_head={cfg.disc_head!r}: expected one of {DISC_HEADS}")
        self.stem = Conv(3, chans[0], (k, k), dtype=dtype, rngs=rngs)
        self.blocks = nnx.List(
            [ResBlock(i, o, kernel_size=k, resample_mode="down", factor=2, dtype=dtype, rngs=rngs)
             for i, o in zip(chans[:-1], chans[1:])])
        self.flatten = cfg.disc_head == "flatten"
        head_in = chans[-1] + (1 if self.flatten else 0)
        self.head = Conv(head_in, chans[-1], (3, 3), dtype=dtype, rngs=rngs)
        side = image_size // 2 ** len(cfg.disc_channels)
        self.dense = (nnx.Linear(chans[-1] * side * side, chans[-1], rngs=rngs)
                      if self.flatten else None)
        self.adversarial = nnx.Linear(chans[-1], num_groups, rngs=rngs)
        self.classifier = nnx.Linear(chans[-1], num_groups, rngs=rngs)
        self.patch_judges = (Conv(chans[-2], num_groups, (1, 1), dtype=dtype, rngs=rngs)
                             if cfg.disc_patch_head else None)

    def __call__(self, images):
        h = self.stem(images)
        for block in self.blocks[:-1]:
            h = block(h)
        patches = (None if self.patch_judges is None
                   else self.patch_judges(_act(h)).astype(jnp.float32))
        h = self.blocks[-1](h)
        if self.flatten:
            h = _act(self.head(minibatch_stddev(_act(h)))).astype(jnp.float32)
            h = _act(self.dense(h.reshape(h.shape[0], -1)))
        else:
            h = _act(self.head(_act(h))).astype(jnp.float32).mean(axis=(1, 2))
        adversarial = self.adversarial(h)
        if patches is not None:
            patches = patches.reshape(patches.shape[0], -1, patches.shape[-1])
            adversarial = jnp.concatenate([adversarial[:, None], patches], axis=1)
        return adversarial, self.classifier(h)


def check_geometry(image_size: int, cfg: ml_collections.ConfigDict) -> None:
    """Raises a clear error if the image size does not fit the down/upsampling plan."""
    problems = config_checks.geometry_problems(image_size, cfg)
    if problems:
        raise ValueError("; ".join(problems))


def build_models(config: ml_collections.ConfigDict, num_groups: int, rngs: nnx.Rngs):
    """Returns (generators dict, discriminator); 'restoring' is absent when weights are shared."""
    check_geometry(config.image_size, config.model)
    dtype = jnp.dtype(config.dtype)
    generators = {"aging": Generator(config.model, num_groups, dtype=dtype, rngs=rngs)}
    if not config.model.share_generators:
        generators["restoring"] = Generator(config.model, num_groups, dtype=dtype, rngs=rngs)
    return generators, Discriminator(config.model, num_groups, dtype=dtype,
                                     image_size=config.image_size, rngs=rngs)


def count_params(state) -> int:
    return sum(x.size for x in jax.tree.leaves(state))
