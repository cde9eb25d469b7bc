import importlib.util
import os

from flax import nnx
import jax
import jax.numpy as jnp
import pytest

from faceaging import config as config_lib, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_config(name, arg=""):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def param_counts(config, groups=14):
    generators, disc = nnx.eval_shape(lambda: models.build_models(config, groups, nnx.Rngs(0)))
    return (models.count_params(nnx.state(generators["aging"], nnx.Param)),
            models.count_params(nnx.state(disc, nnx.Param)), generators)


def test_output_shapes():
    config = config_lib.tiny(config_lib.base_config())
    generators, disc = models.build_models(config, 5, nnx.Rngs(0))
    x = jnp.zeros((3, 32, 32, 3))
    aged, identity = generators["aging"](x, jax.nn.one_hot(jnp.array([0, 2, 4]), 5))
    assert aged.shape == (3, 32, 32, 3) and aged.dtype == jnp.float32
    assert identity.shape == (3, 8, 8, 32)
    adv, cls = disc(x)
    assert adv.shape == (3, 5) and cls.shape == (3, 5)
    assert jnp.all(jnp.abs(aged) <= 1)


def test_age_code_changes_the_output():
    config = config_lib.tiny(config_lib.base_config())
    generators, _ = models.build_models(config, 4, nnx.Rngs(0))
    gen = generators["aging"]
    # Make the condition matter from step 0: perturb the zero-initialised conditional norms.
    params = nnx.state(gen, nnx.Param)
    nudged = jax.tree_util.tree_map_with_path(
        lambda path, v: v + 0.1 * jax.random.normal(jax.random.key(1), v.shape)
        if "proj" in jax.tree_util.keystr(path) else v, params)
    nnx.update(gen, nudged)
    x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), minval=-1, maxval=1)
    young, _ = gen(x, jax.nn.one_hot(jnp.array([0]), 4))
    old, _ = gen(x, jax.nn.one_hot(jnp.array([3]), 4))
    assert float(jnp.abs(young - old).mean()) > 1e-4


@pytest.mark.parametrize("name,g_params,d_params", [
    ("utk", 11_275_779, 5_287_580),
    ("seed", 76_625_283, 35_978_460),
])
def test_parameter_counts(name, g_params, d_params):
    g, d, generators = param_counts(load_config(name))
    assert (g, d) == (g_params, d_params)
    assert ("restoring" in generators) == (name == "utk")  # seed shares weights like the original


def test_seed_geometry_matches_original_plan():
    config = load_config("seed")
    generators, _ = nnx.eval_shape(lambda: models.build_models(config, 14, nnx.Rngs(0)))
    out = jax.eval_shape(lambda g, x, c: g(x, c), generators["aging"],
                         jax.ShapeDtypeStruct((1, 200, 200, 3), jnp.float32),
                         jax.ShapeDtypeStruct((1, 14), jnp.float32))
    assert out[0].shape == (1, 200, 200, 3)
    assert out[1].shape == (1, 5, 5, 512)  # the original's 5x5x512 identity map


def test_bad_geometry_is_a_clear_error():
    config = config_lib.tiny(config_lib.base_config())
    config.image_size = 30
    with pytest.raises(ValueError, match=r"image_size=30: expected a multiple of 4 \(the product of model.encoder_factors\)"):
        models.build_models(config, 14, nnx.Rngs(0))


def test_residual_generator_starts_as_identity_map():
    config = config_lib.tiny(config_lib.base_config())
    config.model.residual_output = True
    generators, _ = models.build_models(config, 4, nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-0.99, maxval=0.99)
    out, _ = generators["aging"](x, jax.nn.one_hot(jnp.array([0, 3]), 4))
    assert float(jnp.abs(out - x).max()) < 1e-4


def residual_generator(**model):
    """(the tiny residual aging generator with ``model`` options over 4 groups, 2 images, their
    target codes)."""
    config = config_lib.tiny(config_lib.base_config())
    config.model.update(dict(residual_output=True, **model))
    generators, _ = models.build_models(config, 4, nnx.Rngs(0))
    x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-0.99, maxval=0.99)
    return generators["aging"], x, jax.nn.one_hot(jnp.array([0, 3]), 4)


def test_linear_residual_moves_saturated_pixels_and_stays_in_range():
    """White hair darkened: in tanh space the change's gradient all but vanishes on a saturated
    pixel; added linearly it passes whole, and the output stays in [-1, 1] either way."""
    white = jnp.full((2, 32, 32, 3), 0.99)
    codes = jax.nn.one_hot(jnp.array([0, 3]), 4)

    def per_pixel_gradient(space):
        aging = residual_generator(residual_space=space)[0]
        assert float(jnp.abs(aging(white, codes)[0] - white).max()) < 1e-4  # the identity map
        graph, params, rest = nnx.split(aging, nnx.Param, ...)

        def total(p):  # its gradient in the change's bias, summed over the output values
            return nnx.merge(graph, p, rest)(white, codes)[0].sum()

        grads = jax.grad(total)(params)
        return float(grads["decoder"]["to_rgb"]["bias"][...][:3].sum()) / white.size

    assert per_pixel_gradient("tanh") < 0.03  # 1 - 0.99**2
    assert abs(per_pixel_gradient("linear") - 1.0) < 1e-4

    aging, x, codes = residual_generator(residual_space="linear")
    to_rgb = aging.decoder.to_rgb
    to_rgb.bias[...] = to_rgb.bias[...].at[:3].set(jnp.array([1.5, -1.5, 0.25]))
    out = aging(x, codes)[0]
    assert float(jnp.abs(out - jnp.clip(x + jnp.array([1.5, -1.5, 0.25]), -1, 1)).max()) < 1e-5


def test_output_mask_passes_the_input_where_closed_and_the_change_where_open():
    aging, x, codes = residual_generator(output_mask=True)
    assert float(jnp.abs(aging(x, codes)[0] - x).max()) < 1e-4  # starts as the identity map
    to_rgb = aging.decoder.to_rgb
    to_rgb.kernel[...] = jax.random.normal(jax.random.key(1), to_rgb.kernel.shape) * 0.3
    bias = to_rgb.bias[...]

    def aged_with_gate(logit):
        to_rgb.bias[...] = bias.at[3].set(logit)
        return aging(x, codes)[0]

    opened, closed, half = aged_with_gate(40.0), aged_with_gate(-40.0), aged_with_gate(0.0)
    assert float(jnp.abs(opened - x).mean()) > 0.05  # the change comes through an open gate
    assert float(jnp.abs(closed - x).max()) < 1e-6  # and none of it through a closed one
    # open: the residual image; in between: that fraction of the way from the input to it.
    delta = aging.decoder(aging.encode(x), aging.modulator(aging.encode(x), codes))[..., :3]
    residual = jnp.tanh(delta + jnp.arctanh(jnp.clip(x, -models.RESIDUAL_CLIP, models.RESIDUAL_CLIP)))
    assert float(jnp.abs(opened - residual).max()) < 1e-5
    gate = jax.nn.sigmoid(aging.decoder(aging.encode(x), aging.modulator(aging.encode(x), codes))[..., 3:])
    assert float(jnp.abs(half - (x + gate * (residual - x))).max()) < 1e-5


def test_gate_bias_sets_how_far_the_gate_starts_open():
    for bias in (0.0, -3.0):
        aging, x, codes = residual_generator(output_mask=True, gate_bias=bias)
        gate = aging.decode_parts(x, aging.encode(x), codes).gate
        assert gate.shape == x.shape[:3] + (1,)
        assert float(jnp.abs(gate - jax.nn.sigmoid(bias)).max()) < 1e-6  # zero kernel: the bias


def test_warp_resamples_bilinearly_and_reads_the_edge_beyond_the_border():
    x = jax.random.uniform(jax.random.key(0), (2, 6, 5, 3))
    zero = jnp.zeros((2, 6, 5, 2))
    assert float(jnp.abs(models.warp(x, zero) - x).max()) < 1e-6
    down_one = zero.at[..., 0].set(1.0)  # every pixel reads the row below it; the last row its own
    expected = jnp.concatenate([x[:, 1:], x[:, -1:]], axis=1)
    assert float(jnp.abs(models.warp(x, down_one) - expected).max()) < 1e-6
    half_right = zero.at[..., 1].set(0.5)  # halfway to the next column
    expected = 0.5 * (x + jnp.concatenate([x[:, :, 1:], x[:, :, -1:]], axis=2))
    assert float(jnp.abs(models.warp(x, half_right) - expected).max()) < 1e-6
    grad = jax.grad(lambda f: models.warp(x, f).sum())(half_right)
    assert float(jnp.abs(grad[:, :, :-1, 1]).min()) > 0  # the column flow has a gradient inside


def test_warp_head_starts_as_identity_then_moves_the_input_within_its_bound():
    """With the gate closed the output is the warped input: the warp moves it by a smooth field of
    at most warp_max_shift of the side, and preserve's base is that warped input."""
    aging, x, codes = residual_generator(output_mask=True, gate_bias=-40.0, warp_max_shift=0.1)
    assert float(jnp.abs(aging(x, codes)[0] - x).max()) < 1e-5  # zero flow: the input
    conv = aging.warp_head.conv
    conv.kernel[...] = jax.random.normal(jax.random.key(1), conv.kernel.shape) * 3.0
    identity = aging.encode(x)
    features = aging.spatial_age(identity, codes) if aging.spatial_age is not None else identity
    flow = aging.warp_head(features, codes, 32, 32)
    assert flow.shape == (2, 32, 32, 2)
    assert float(jnp.abs(flow).max()) <= 0.1 * 32 + 1e-4 and float(jnp.abs(flow).max()) > 1.0
    parts = aging.decode_parts(x, identity, codes)
    assert float(jnp.abs(parts.base - models.warp(x, flow)).max()) < 1e-5
    assert float(jnp.abs(parts.image - parts.base).max()) < 1e-5  # closed gate: the warped input
    assert float(jnp.abs(parts.image - x).mean()) > 0.01  # which is not the input
    neighbours = jnp.abs(jnp.diff(flow, axis=1)).max()  # bilinear from 8x8: a smooth field
    assert float(neighbours) < float(jnp.abs(flow).max())


def test_input_skip_starts_closed_then_brings_pixel_detail_to_the_decoder():
    """The decoder reads the pixels it changes: once its zero-initialised second convolution
    moves, a one-pixel change of the input (with the same bottleneck and style) changes the
    decoder's output most within that pixel's 5x5 neighbourhood (two 3x3 convolutions)."""
    aging, x, codes = residual_generator(output_mask=True, input_skip=True)
    identity = aging.encode(x)
    style = aging.modulator(identity, codes)
    bumped = x.at[:, 16, 16, :].add(-0.9)
    decoder = aging.decoder
    assert float(jnp.abs(decoder(identity, style, bumped) - decoder(identity, style, x)).max()) == 0
    conv2 = decoder.input_skip.conv2
    conv2.kernel[...] = jax.random.normal(jax.random.key(1), conv2.kernel.shape) * 0.3
    to_rgb = decoder.to_rgb
    to_rgb.kernel[...] = jax.random.normal(jax.random.key(2), to_rgb.kernel.shape) * 0.3
    change = jnp.abs(decoder(identity, style, bumped) - decoder(identity, style, x)).max(axis=-1)
    near = change[:, 13:20, 13:20]  # the 5x5 reach of the skip plus to_rgb's 3x3
    far = change.at[:, 13:20, 13:20].set(0)
    assert float(near.max()) > 0.05
    assert float(near.max()) > 5 * float(far.max())
    # Without the path the same bump reaches the decoder only through the bottleneck.
    decoder.input_skip = None
    assert float(jnp.abs(decoder(identity, style, bumped) - decoder(identity, style, x)).max()) == 0


def test_spatial_age_starts_as_identity_and_then_depends_on_the_age():
    aging, x, codes = residual_generator(spatial_age=True)
    out, _ = aging(x, codes)
    assert float(jnp.abs(out - x).max()) < 1e-4
    features = aging.encode(x)
    kernel = aging.spatial_age.conv.kernel
    kernel[...] = jax.random.normal(jax.random.key(1), kernel.shape) * 0.1
    young = aging.spatial_age(features, jax.nn.one_hot(jnp.array([0, 0]), 4))
    old = aging.spatial_age(features, jax.nn.one_hot(jnp.array([3, 3]), 4))
    change = jnp.abs(young - old).mean(axis=-1)  # differs by position, not by a constant
    assert float(change.std()) > 0.01 * float(change.mean()) > 0


def test_flatten_discriminator_sees_layout_and_batch_spread():
    x = jnp.arange(8 * 2 * 2 * 3, dtype=jnp.float32).reshape(8, 2, 2, 3)
    same = jnp.broadcast_to(x[:1], x.shape)
    stat = models.minibatch_stddev(same)[..., -1]
    assert stat.shape == (8, 2, 2) and float(jnp.abs(stat).max()) < 1e-3  # no spread: ~0
    spread = models.minibatch_stddev(x)[..., -1]
    assert float(spread.min()) > 1  # spread over groups of 4 images
    assert models.minibatch_stddev(x[:6]).shape == (6, 2, 2, 4)  # group of 2 when 4 does not divide

    config = config_lib.tiny(config_lib.base_config())
    config.model.disc_head = "flatten"
    _, disc = models.build_models(config, 3, nnx.Rngs(0))
    image = jax.random.uniform(jax.random.key(0), (4, 32, 32, 3), minval=-1, maxval=1)
    moved = jnp.roll(image, 8, axis=1)  # the same content lower in the frame
    assert disc(image)[0].shape == (4, 3)
    assert float(jnp.abs(disc(image)[0] - disc(moved)[0]).max()) > 1e-3
    config.model.disc_head = "avg"
    with pytest.raises(ValueError, match="disc_head='avg'"):
        models.build_models(config, 3, nnx.Rngs(0))


def test_patch_judges_see_their_own_part_of_the_image():
    config = config_lib.tiny(config_lib.base_config())
    config.model.update(disc_head="flatten", disc_patch_head=True)
    assert len(config.model.disc_channels) == 3  # judges on the map after two downsamplings: 8x8
    _, disc = models.build_models(config, 3, nnx.Rngs(0))
    image = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1, maxval=1)
    adv, cls = disc(image)
    assert adv.shape == (2, 1 + 8 * 8, 3) and cls.shape == (2, 3)
    corner = image.at[:, :4, :4].set(1.0)  # only the top-left 4x4 pixels change
    change = jnp.abs(disc(corner)[0] - adv).max(axis=(0, 2))
    patches = change[1:].reshape(8, 8)
    assert float(change[0]) > 1e-4 and float(patches[0, 0]) > 1e-4  # whole image and its patch
    assert float(patches[4:, 4:].max()) == 0.0  # patches far from the corner do not see it
