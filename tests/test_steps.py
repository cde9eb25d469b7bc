import dataclasses
"""The GAN algorithm's pieces alone: each loss, R1, EMA, and the fused step's gradients."""

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from faceaging import config as config_lib, losses, pixels, steps, train_state
from faceaging.train_state import Optimizers
from helpers import SMALLEST_MODEL

W = steps.LossWeights(adversarial=1.0, age=2.0, cycle=3.0, identity=4.0, reconstruction=5.0,
                      preserve=6.0, r1_gamma=10.0, r1_every=4)
GROUPS = 3


def logits_for(values):
    """A discriminator that ignores its input and returns fixed (adv, cls) logits per image."""
    adv, cls = (jnp.asarray(v, jnp.float32) for v in values)

    def discriminate(params, images):
        del params
        n = images.shape[0]
        return jnp.tile(adv, (n // adv.shape[0], 1)), jnp.tile(cls, (n // cls.shape[0], 1))
    return discriminate


def test_d_loss_uses_the_source_logit_for_reals_and_the_target_logit_for_fakes():
    adv = [[5.0, -1.0, 0.0], [0.0, 2.0, -3.0],  # reals: own (source) groups 0 and 1
           [-7.0, 0.5, 9.0], [4.0, 0.0, 1.5]]  # fakes: target groups 2 and 0
    cls = [[2.0, 0.0, 0.0]] * 4
    real = jnp.zeros((2, 4, 4, 3))
    total, m = steps.d_loss(None, logits_for((adv, cls)), real, real, jnp.array([0, 1]),
                            jnp.array([2, 0]), W)
    softplus = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(m["d/adv_real"], (softplus(-5.0) + softplus(-2.0)) / 2, rtol=1e-6)
    np.testing.assert_allclose(m["d/adv_fake"], (softplus(9.0) + softplus(4.0)) / 2, rtol=1e-6)
    ce = optax.losses.softmax_cross_entropy_with_integer_labels(jnp.array(cls[:2]), jnp.array([0, 1]))
    np.testing.assert_allclose(m["d/age"], ce.mean(), rtol=1e-6)
    np.testing.assert_allclose(total, m["d/adv_real"] + m["d/adv_fake"] + W.age * m["d/age"], rtol=1e-6)
    assert m["d/age_accuracy_real"] == 0.5


def test_r1_is_zero_for_a_constant_discriminator_and_exact_for_a_linear_one():
    real = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 4, 3)), jnp.float32)
    scaled, raw = steps.r1_loss(None, logits_for(([[1.0, 2.0, 3.0]], [[0.0, 0.0, 0.0]])), real,
                                jnp.array([0, 2]), W)
    assert float(raw) == 0.0 and float(scaled) == 0.0

    a = jnp.asarray(np.random.default_rng(1).normal(size=(GROUPS, 4, 4, 3)), jnp.float32)

    def linear(params, images):  # group g's logit is <a_g, x>
        del params
        adv = jnp.einsum("nhwc,ghwc->ng", images, a)
        return adv, jnp.zeros_like(adv)

    source = jnp.array([0, 2])
    scaled, raw = steps.r1_loss(None, linear, real, source, W)
    expected = np.mean([np.sum(np.square(a[g])) for g in (0, 2)])  # |grad_x <a_g, x>|^2 = |a_g|^2
    np.testing.assert_allclose(raw, expected, rtol=1e-5)
    np.testing.assert_allclose(scaled, 0.5 * W.r1_gamma * W.r1_every * expected, rtol=1e-5)


def test_patch_judges_add_their_weighted_mean_to_each_image_in_d_g_and_r1():
    """With model.disc_patch_head, adversarial logits are (N, 1 + P, groups): the whole-image
    judge, then P patch judges whose mean enters each image's loss (and R1) x patch_adversarial."""
    w = dataclasses.replace(W, patch_adversarial=0.5)
    adv = [[[5.0, -1.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]],  # real, source 0
           [[0.0, 2.0, -3.0], [0.0, -2.0, 0.0], [0.0, 4.0, 0.0]],  # real, source 1
           [[0.0, 0.0, 9.0], [0.0, 0.0, -1.0], [0.0, 0.0, 2.0]],  # fake, target 2
           [[4.0, 0.0, 1.5], [6.0, 0.0, 0.0], [-6.0, 0.0, 0.0]]]  # fake, target 0
    adv = jnp.asarray(adv, jnp.float32)
    discriminate = lambda params, images: (adv[:len(images)], jnp.zeros((len(images), GROUPS)))
    real = jnp.zeros((2, 4, 4, 3))
    _, m = steps.d_loss(None, discriminate, real, real, jnp.array([0, 1]), jnp.array([2, 0]), w)
    sp = lambda x: float(np.log1p(np.exp(x)))
    real_expected = ((sp(-5) + 0.5 * (sp(-1) + sp(-3)) / 2) + (sp(-2) + 0.5 * (sp(2) + sp(-4)) / 2)) / 2
    fake_expected = ((sp(9) + 0.5 * (sp(-1) + sp(2)) / 2) + (sp(4) + 0.5 * (sp(6) + sp(-6)) / 2)) / 2
    np.testing.assert_allclose(m["d/adv_real"], real_expected, rtol=1e-6)
    np.testing.assert_allclose(m["d/adv_fake"], fake_expected, rtol=1e-6)
    # G wants each fake's target-group judges to say real: the whole image's and its patches'
    judge_fakes = lambda params, images: (adv[2:2 + len(images)], jnp.zeros((len(images), GROUPS)))
    features = jnp.zeros((2, 2, 2, 5))
    _, m = steps.g_loss(steps.AgingOutputs(real, features, None), {"aging": None}, None,
                        lambda params, images, code: (images, features), judge_fakes, real,
                        jax.nn.one_hot(jnp.array([0, 1]), GROUPS), jnp.array([2, 0]), w)
    g_expected = ((sp(-9) + 0.5 * (sp(1) + sp(-2)) / 2) + (sp(-4) + 0.5 * (sp(-6) + sp(6)) / 2)) / 2
    np.testing.assert_allclose(m["g/adv"], g_expected, rtol=1e-6)
    # weight 0: the whole-image judge alone, as without patch judges
    np.testing.assert_allclose(losses.adversarial_real(adv[:2], jnp.array([0, 1]), 0.0),
                               losses.adversarial_real(adv[:2, 0], jnp.array([0, 1])), rtol=1e-6)

    rng = np.random.default_rng(2)
    a = jnp.asarray(rng.normal(size=(3, GROUPS, 4, 4, 3)), jnp.float32)  # judge j, group g

    def linear(params, images):  # judge j's logit for group g is <a_jg, x>
        del params
        judged = jnp.einsum("nhwc,jghwc->njg", images, a)
        return judged, jnp.zeros((len(images), GROUPS))

    source = jnp.array([0, 2])
    real = jnp.asarray(rng.normal(size=(2, 4, 4, 3)), jnp.float32)
    _, raw = steps.r1_loss(None, linear, real, source, w)
    grads = [a[0, g] + 0.5 * (a[1, g] + a[2, g]) / 2 for g in (0, 2)]
    np.testing.assert_allclose(raw, np.mean([np.sum(np.square(g)) for g in grads]), rtol=1e-5)


def test_g_loss_weights_each_term_and_uses_the_target_logit():
    rng = np.random.default_rng(0)
    real = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3)), jnp.float32)
    fake = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3)), jnp.float32)
    identity = jnp.asarray(rng.normal(size=(2, 2, 2, 5)), jnp.float32)
    reconstructed = real + 0.25
    outputs = steps.AgingOutputs(fake, identity, reconstructed)

    def generate(params, images, code):  # cycles back perfectly; identity features shift by 1
        del params, code
        return images * 0 + real, identity + 1.0

    adv = [[3.0, -2.0, 0.0], [1.0, 0.0, 4.0]]
    cls = [[0.0, 5.0, 0.0], [0.0, 0.0, 5.0]]
    target = jnp.array([1, 2])
    total, m = steps.g_loss(outputs, {"aging": None}, None, generate, logits_for((adv, cls)), real,
                            jax.nn.one_hot(jnp.array([0, 0]), GROUPS), target, W)
    softplus = lambda x: np.log1p(np.exp(x))
    np.testing.assert_allclose(m["g/adv"], (softplus(2.0) + softplus(-4.0)) / 2, rtol=1e-6)
    assert float(m["g/cycle"]) == 0.0
    np.testing.assert_allclose(m["g/identity"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(m["g/reconstruction"], 0.25, rtol=1e-6)
    np.testing.assert_allclose(m["g/preserve"], np.abs(np.asarray(fake - real)).mean(), rtol=1e-6)
    assert m["g/age_accuracy_fake"] == 1.0
    expected = (m["g/adv"] + W.age * m["g/age"] + W.identity * 1.0 + W.reconstruction * 0.25
                + W.preserve * m["g/preserve"])
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    # G's own weight on the age classifier, apart from D's.
    own = dataclasses.replace(W, age_generator=0.25)
    total_own, _ = steps.g_loss(outputs, {"aging": None}, None, generate, logits_for((adv, cls)), real,
                                jax.nn.one_hot(jnp.array([0, 0]), GROUPS), target, own)
    np.testing.assert_allclose(total_own, expected + (0.25 - W.age) * m["g/age"], rtol=1e-6)


def test_gate_term_is_the_mean_opening_of_the_fakes_gate():
    """With an output gate, G's loss gains loss.gate x the gate's mean (logged at weight 0 too);
    without one there is no such term."""
    rng = np.random.default_rng(0)
    real = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3)), jnp.float32)
    gate = jnp.asarray(rng.uniform(0, 1, (2, 4, 4, 1)), jnp.float32)
    generate = lambda p, x, c: (x, x.mean(axis=(1, 2)))
    discriminate = lambda p, x: (jnp.zeros((len(x), 3)), jnp.zeros((len(x), 3)))
    args = ({"aging": None}, None, generate, discriminate, real, jax.nn.one_hot(jnp.array([0, 1]), 3),
            jnp.array([2, 0]))
    ungated = steps.AgingOutputs(real * 0.5, real.mean(axis=(1, 2)), None)
    gated = ungated._replace(gate=gate)
    without, metrics = steps.g_loss(ungated, *args, steps.LossWeights(gate=0.7))
    assert "g/gate" not in metrics
    logged, metrics = steps.g_loss(gated, *args, steps.LossWeights(gate=0.0))
    np.testing.assert_allclose(metrics["g/gate"], np.asarray(gate).mean(), rtol=1e-6)
    np.testing.assert_allclose(logged, without, rtol=1e-6)
    total, _ = steps.g_loss(gated, *args, steps.LossWeights(gate=0.7))
    np.testing.assert_allclose(total - without, 0.7 * np.asarray(gate).mean(), rtol=1e-5)
    # gate_exponent 0.5: the mean of the square roots is charged, the plain mean still logged.
    total, metrics = steps.g_loss(gated, *args, steps.LossWeights(gate=0.7, gate_exponent=0.5))
    np.testing.assert_allclose(total - without, 0.7 * np.sqrt(np.asarray(gate)).mean(), rtol=3e-3)
    # gate_floor: the floor is added before the square root and the shut gate's cost taken off.
    total, _ = steps.g_loss(gated, *args, steps.LossWeights(gate=0.7, gate_exponent=0.5,
                                                             gate_floor=0.05))
    np.testing.assert_allclose(total - without,
                               0.7 * (np.sqrt(np.asarray(gate) + 0.05).mean() - np.sqrt(0.05)),
                               rtol=1e-4)
    np.testing.assert_allclose(metrics["g/gate_opening"], np.asarray(gate).mean(), rtol=1e-6)


def test_a_gate_exponent_below_one_charges_small_openings_more_per_unit():
    """The marginal cost of opening a pixel further: flat at exponent 1, falling with the opening
    below 1 (a nearly shut pixel is pushed hardest to shut)."""
    openings = jnp.array([0.01, 0.1, 0.5, 0.9])
    marginal = lambda p: jax.vmap(jax.grad(lambda m: losses.gate_opening(m[None], p)))(openings)
    np.testing.assert_allclose(marginal(1.0), 1.0, rtol=1e-6)
    slopes = np.asarray(marginal(0.5))
    assert np.all(np.diff(slopes) < 0) and slopes[0] > 4 * slopes[-1], slopes


def test_a_gate_floor_lets_a_shut_gate_reopen():
    """In the gate's logit the square-root cost pulls ~ opening ** 0.5 while anything that wants
    the gate open pulls ~ opening: with the default tiny floor the cost's pull per unit of opening
    grows without bound as the gate shuts (a trap); a floor caps it at exponent * floor ** -0.5."""
    logits = jnp.array([-3.0, -8.0, -13.0, -18.0])
    def pull_per_opening(floor):
        cost = lambda z: losses.gate_opening(jax.nn.sigmoid(z)[None], 0.5, floor)
        return np.asarray(jax.vmap(jax.grad(cost))(logits) / jax.nn.sigmoid(logits))
    trapped, floored = pull_per_opening(1e-6), pull_per_opening(0.05)
    assert np.all(np.diff(trapped) > 0) and trapped[-1] > 100 * trapped[0], trapped
    np.testing.assert_allclose(floored[1:], 0.5 * 0.05 ** -0.5, rtol=1e-2)
    assert abs(losses.gate_opening(jnp.zeros((1, 4, 4, 1)), 0.5, 0.05)) < 1e-6  # a shut gate: 0


def _g_loss_args(real, fake):
    """g_loss's leading arguments for 4 images of 3 groups, with a generator that returns its
    input and a discriminator that outputs zeros: the guide terms are all that varies."""
    target, source_code = jnp.array([0, 1, 2, 1]), jax.nn.one_hot(jnp.array([1, 0, 0, 2]), 3)
    outputs = steps.AgingOutputs(fake, fake.mean(axis=(1, 2)), None)
    generate = lambda p, x, c: (x, x.mean(axis=(1, 2)))
    discriminate = lambda p, x: (jnp.zeros((len(x), 3)), jnp.zeros((len(x), 3)))
    return (outputs, {"aging": None}, None, generate, discriminate, real, source_code, target)


def _assert_the_step_wants_a_guide_when(weight: str):
    """make_train_step refuses to build without a guide when config.loss.<weight> is above 0."""
    config = config_lib.tiny(config_lib.base_config())
    optimizers = Optimizers(optax.sgd(1.0), optax.sgd(1.0))
    _, graphs = train_state.abstract_state(config, GROUPS, optimizers)
    config.loss[weight] = 1.0
    with pytest.raises(ValueError, match=weight):
        steps.make_train_step(config, graphs, optimizers, GROUPS)


def test_age_guide_adds_its_cross_entropy_for_the_target_group():
    """With a frozen guide, G's loss gains loss.age_guide x the guide's cross entropy of the fakes
    for their target groups (and its accuracy is reported); make_train_step wants a guide exactly
    when the weight is above 0."""
    rng = np.random.default_rng(0)
    real = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
    fake = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
    guide = lambda x: x.mean(axis=(1, 2)) * 10  # logits: the mean of each colour channel
    w = steps.LossWeights(age_guide=2.5)
    args = _g_loss_args(real, fake)
    target = args[-1]
    without, _ = steps.g_loss(*args, w)
    total, metrics = steps.g_loss(*args, w, guide)
    logits = np.asarray(guide(fake), np.float64)
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    expected = -log_p[np.arange(4), np.asarray(target)].mean()
    np.testing.assert_allclose(metrics["g/age_guide"], expected, rtol=1e-5)
    np.testing.assert_allclose(total - without, 2.5 * expected, rtol=1e-5)
    np.testing.assert_allclose(metrics["g/age_guide_accuracy_fake"],
                               (logits.argmax(-1) == np.asarray(target)).mean())
    _assert_the_step_wants_a_guide_when("age_guide")


def test_attribute_guide_charges_the_change_of_its_reading_from_input_to_fake():
    """G's loss gains loss.attribute_guide x the KL divergence from the frozen guide's reading of
    the input (held fixed) to its reading of the fake, summed over heads: 0 when the fake reads
    like its input, larger the further it moves; its gradient reaches the fake, not the input."""
    rng = np.random.default_rng(1)
    real = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
    fake = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    reader = steps.ReadAttributes(lambda x: x.mean(axis=(1, 2)) @ weights * 20, (2, 3))
    kl, agreement = steps.attribute_change(reader, real, real)
    np.testing.assert_allclose(kl, 0.0, atol=1e-6)
    assert float(agreement) == 1.0
    kl, agreement = steps.attribute_change(reader, real, fake)
    logits_p = np.asarray(reader.logits(real), np.float64)
    logits_q = np.asarray(reader.logits(fake), np.float64)
    expected = 0.0
    for lo, hi in ((0, 2), (2, 5)):
        log_p = logits_p[:, lo:hi] - np.log(np.exp(logits_p[:, lo:hi]).sum(-1, keepdims=True))
        log_q = logits_q[:, lo:hi] - np.log(np.exp(logits_q[:, lo:hi]).sum(-1, keepdims=True))
        expected += (np.exp(log_p) * (log_p - log_q)).sum(-1).mean()
    assert expected > 0.1
    np.testing.assert_allclose(kl, expected, rtol=1e-4)
    agree = np.mean([(logits_p[:, lo:hi].argmax(-1) == logits_q[:, lo:hi].argmax(-1)).mean()
                     for lo, hi in ((0, 2), (2, 5))])
    np.testing.assert_allclose(agreement, agree, rtol=1e-6)
    grad_real = jax.grad(lambda r: steps.attribute_change(reader, r, fake)[0])(real)
    assert float(jnp.abs(grad_real).max()) == 0.0
    assert float(jnp.abs(jax.grad(lambda f: steps.attribute_change(reader, real, f)[0])(fake)).max()) > 0

    args = (*_g_loss_args(real, fake), steps.LossWeights(attribute_guide=0.4))
    without, _ = steps.g_loss(*args)
    total, metrics = steps.g_loss(*args, attributes=reader)
    np.testing.assert_allclose(metrics["g/attribute_guide"], expected, rtol=1e-4)
    np.testing.assert_allclose(total - without, 0.4 * expected, rtol=1e-4)
    _assert_the_step_wants_a_guide_when("attribute_guide")


def test_attribute_features_charge_what_the_guide_sees_where():
    """G's loss gains loss.attribute_features x the mean over the guide's chosen maps of the cosine
    distance, position by position, between its map of the input (held fixed) and of the fake: 0
    for the input itself and for a brighter copy of the input's maps (direction, not strength),
    positive for another image; its gradient reaches the fake, not the input."""
    rng = np.random.default_rng(2)
    real = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
    fake = jnp.asarray(rng.uniform(-1, 1, (4, 8, 8, 3)), jnp.float32)
    weights = jnp.asarray(rng.normal(size=(3, 5)), jnp.float32)
    maps = lambda x: [x, x.reshape(-1, 4, 2, 4, 2, 3).mean(axis=(2, 4))]  # linear in the image
    reader = steps.ReadAttributes(lambda x: x.mean(axis=(1, 2)) @ weights, (2, 3), maps)
    np.testing.assert_allclose(steps.attribute_feature_change(reader, real, real), 0.0, atol=1e-6)
    np.testing.assert_allclose(steps.attribute_feature_change(reader, real, 3.0 * real), 0.0,
                               atol=1e-6)

    def cosine_distance(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        cos = (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)
        return (1 - cos).mean()

    expected = np.mean([cosine_distance(a, b) for a, b in zip(maps(real), maps(fake))])
    assert expected > 0.5
    np.testing.assert_allclose(steps.attribute_feature_change(reader, real, fake), expected,
                               rtol=1e-5)
    grad = lambda f, x: jax.grad(f)(x)
    assert float(jnp.abs(grad(lambda r: steps.attribute_feature_change(reader, r, fake), real)).max()) == 0
    assert float(jnp.abs(grad(lambda f: steps.attribute_feature_change(reader, real, f), fake)).max()) > 0

    args = _g_loss_args(real, fake)
    without, _ = steps.g_loss(*args, steps.LossWeights(), attributes=reader)
    total, metrics = steps.g_loss(*args, steps.LossWeights(attribute_features=0.7),
                                  attributes=reader)
    np.testing.assert_allclose(metrics["g/attribute_features"], expected, rtol=1e-5)
    np.testing.assert_allclose(total - without, 0.7 * expected, rtol=1e-4)
    _assert_the_step_wants_a_guide_when("attribute_features")


def test_change_smoothness_charges_a_streaked_change_not_a_whole_region():
    """losses.edge_aware_variation: a change that is even inside each of the input's flat regions
    (a head of hair darkened whole, up to the hair's edge) costs ~0; the same change streaked
    inside the region costs the numpy value of the weighted neighbour differences. g_loss adds
    loss.change_smoothness x that value for fake - input (the warped input when there is one)."""
    image = np.full((1, 8, 8, 3), -0.5, np.float32)
    image[:, :, :4] = 0.9  # two flat regions: white hair on the left, darker skin on the right
    whole = np.zeros_like(image)
    whole[:, :, :4] = -1.2  # the hair darkened whole, the skin left
    np.testing.assert_allclose(losses.edge_aware_variation(whole, image, 0.1), 0.0, atol=1e-6)
    streaked = whole.copy()
    streaked[:, ::2, :4] = 0.0  # every other row of the hair left white
    def expected(change, guide, sigma):
        total = 0.0
        for axis in (1, 2):
            weight = np.exp(-(np.diff(guide, axis=axis) ** 2).sum(-1) / (2 * sigma ** 2))
            total += (weight * np.abs(np.diff(change, axis=axis)).mean(-1)).mean()
        return total / 2
    value = losses.edge_aware_variation(streaked, image, 0.1)
    assert float(value) > 0.2
    np.testing.assert_allclose(value, expected(streaked, image, 0.1), rtol=1e-5)
    # Across the edge a change's step is free; with a sigma far above the edge it is charged.
    np.testing.assert_allclose(losses.edge_aware_variation(whole, image, 100.0),
                               expected(whole, image, 100.0), rtol=1e-5)
    assert float(losses.edge_aware_variation(whole, image, 100.0)) > 0.05
    guide_grad = jax.grad(lambda g: losses.edge_aware_variation(streaked, g, 0.1))(jnp.asarray(image))
    assert float(jnp.abs(guide_grad).max()) == 0.0

    real, fake = jnp.asarray(image), jnp.asarray(image + streaked)
    args = _g_loss_args(jnp.tile(real, (4, 1, 1, 1)), jnp.tile(fake, (4, 1, 1, 1)))
    without, _ = steps.g_loss(*args, steps.LossWeights())
    total, metrics = steps.g_loss(*args, steps.LossWeights(change_smoothness=0.3))
    np.testing.assert_allclose(metrics["g/change_smoothness"], expected(streaked, image, 0.1),
                               rtol=1e-4)
    np.testing.assert_allclose(total - without, 0.3 * expected(streaked, image, 0.1), rtol=1e-4)
    # With a warp the change is measured from the warped input, and its regions are the warp's.
    warped = args[0]._replace(base=jnp.tile(fake, (4, 1, 1, 1)))
    _, metrics = steps.g_loss(warped, *args[1:], steps.LossWeights(change_smoothness=0.3))
    np.testing.assert_allclose(metrics["g/change_smoothness"], 0.0, atol=1e-6)


def test_ema_update_warms_up_then_uses_the_decay():
    ema, params = {"w": jnp.zeros(3)}, {"w": jnp.ones(3)}
    np.testing.assert_allclose(steps.ema_update(ema, params, 0, 0.999)["w"], 1 - 0.1)  # (1+0)/(10+0)
    np.testing.assert_allclose(steps.ema_update(ema, params, 10 ** 6, 0.999)["w"], 1 - 0.999, rtol=1e-4)


def _gradient_keeper():
    """An optax transformation that leaves the parameters as they are and keeps, as its state,
    the last gradient it was given."""
    return optax.GradientTransformation(
        init=lambda params: jax.tree.map(jnp.zeros_like, params),
        update=lambda grads, state, params=None: (jax.tree.map(jnp.zeros_like, grads), grads))


def test_identity_term_reads_the_fake_with_the_chosen_encoder_and_distance():
    """identity_encoder='aging' re-encodes the fake with the aging generator's encoder (through
    ``encode``) instead of taking the restoring pass's features; with shared weights both are the
    same encoder, so the cycle pass's features serve. 'cosine' compares directions: scaling the
    fake's features changes nothing, where L1 would shrink with them."""
    rng = np.random.default_rng(0)
    real = jnp.asarray(rng.uniform(-1, 1, (2, 4, 4, 3)), jnp.float32)
    features = jnp.asarray(rng.normal(size=(2, 2, 2, 5)), jnp.float32)
    outputs = steps.AgingOutputs(real * 0.5, features, None)
    restoring_features = -features  # the restoring encoder: opposite directions
    generate = lambda p, x, c: (x, restoring_features)
    encode = lambda p, x: features * p  # the aging encoder: the input's directions, scaled by p
    discriminate = lambda p, x: (jnp.zeros((len(x), 3)), jnp.zeros((len(x), 3)))
    args = (None, generate, discriminate, real, jax.nn.one_hot(jnp.array([0, 1]), 3),
            jnp.array([2, 0]))
    identity = lambda g_params, **w: steps.g_loss(
        outputs, g_params, *args, steps.LossWeights(**w), None, encode)[1]["g/identity"]
    separate = {"aging": 0.1, "restoring": None}
    np.testing.assert_allclose(identity(separate), np.abs(2 * np.asarray(features)).mean(), rtol=1e-6)
    np.testing.assert_allclose(identity(separate, identity_distance="cosine"), 2.0, rtol=1e-5)
    np.testing.assert_allclose(identity(separate, identity_encoder="aging"),
                               0.9 * np.abs(np.asarray(features)).mean(), rtol=1e-6)
    assert abs(float(identity(separate, identity_encoder="aging", identity_distance="cosine"))) < 1e-5
    shared = {"aging": 0.1}  # one generator: its encoder is the restoring pass's
    np.testing.assert_allclose(identity(shared, identity_encoder="aging", identity_distance="cosine"),
                               2.0, rtol=1e-5)


@pytest.mark.parametrize("shared,identity_encoder", [(False, "restoring"), (True, "restoring"),
                                                     (False, "aging")])
def test_fused_step_gradients_equal_differentiating_the_whole_generator_loss(shared, identity_encoder):
    """The step runs the aging pass once and pulls G's loss back through its vjp; the gradient it
    hands the optimizer must equal the gradient of the loss written the direct way (aging pass
    inside the differentiated function), leaf by leaf.

    Both run op by op (``jax.disable_jit``): each operation is then the same compiled kernel on
    the same inputs in both, so the forward values agree bit for bit and only the order in
    which cotangents are summed differs. Compiled as two programs they are two float32
    computations of the same function, and a leaky-ReLU input within rounding of 0 can land on
    opposite sides of the kink in each (seen on XLA:CPU at optimisation level 0: a decoder
    activation at -7.6e-8 in the step, +3.6e-7 in the direct program), which changes that
    pixel's share of the gradient by far more than rounding. The optimizer keeps the gradient
    as its state (``_gradient_keeper``), so no parameter subtraction rounds it either.
    Every generator parameter is first moved off its initial value: every leaf then has a
    gradient to compare (at initialisation the zero-initialised conditional-norm projections
    cut the age modulator off) and no L1 term sits at its kink (the residual generator starts
    as the identity map).
    """
    config = config_lib.tiny(config_lib.base_config())
    config.model.share_generators = shared
    config.model.update(SMALLEST_MODEL)  # running op by op dominates the test
    config.loss.preserve = 1.0
    config.loss.update(identity_encoder=identity_encoder,
                       identity_distance="cosine" if identity_encoder == "aging" else "l1")
    if shared:  # and the output gate, whose opening G's loss also charges for, the warp and the
        # decoder's full-resolution read of the input
        config.model.update(residual_output=True, output_mask=True, warp_max_shift=0.1,
                            input_skip=True)
        config.loss.gate = 0.5
    # G's optimizer keeps its gradient; D's moves D, so G's loss must use the moved D.
    optimizers = Optimizers(generator=_gradient_keeper(), discriminator=optax.sgd(1.0))
    abstract, graphs = train_state.abstract_state(config, GROUPS, optimizers)
    one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    state = train_state.create_train_state(config, GROUPS, optimizers,
                                           train_state.state_shardings(abstract, one_device))
    leaves, treedef = jax.tree.flatten(state.g_params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    kicked = [v + 0.05 * jax.random.normal(k, v.shape, v.dtype) for v, k in zip(leaves, keys)]
    state = state.replace(g_params=jax.tree.unflatten(treedef, kicked))
    step = steps.make_train_step(config, graphs, optimizers, GROUPS, r1="never")
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             "source": np.array([0, 1, 2, 0], np.int32), "target": np.array([1, 2, 0, 2], np.int32)}
    w = steps.LossWeights.from_config(config.loss)
    real = pixels.to_float(batch["image"], jnp.float32)
    src_code, tgt_code = (jax.nn.one_hot(batch[k], GROUPS) for k in ("source", "target"))
    generate = lambda p, x, c: nnx.merge(graphs.generator, p)(x, c)
    discriminate = lambda p, x: nnx.merge(graphs.discriminator, p)(x)
    encode = lambda p, x: nnx.merge(graphs.generator, p).encode(x)

    def whole_loss(g_params, d_params):
        outputs = steps.aging_pass(graphs.generator, g_params["aging"], real, tgt_code, src_code)
        return steps.g_loss(outputs, g_params, d_params, generate, discriminate, real,
                            src_code, jnp.asarray(batch["target"]), w, None, encode)[0]

    with jax.disable_jit():
        new, metrics = step(state, batch)
        expected = jax.grad(whole_loss)(state.g_params, new.d_params)
    assert int(new.nonfinite_steps) == 0
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(state.d_params),
                                                        jax.tree.leaves(new.d_params)))
    step_grads = new.g_opt_state
    assert set(step_grads) == ({"aging"} if shared else {"aging", "restoring"})
    for (path, got), want in zip(jax.tree_util.tree_leaves_with_path(step_grads),
                                 jax.tree.leaves(expected)):
        name = jax.tree_util.keystr(path)
        if not ("['bias']" in name and ("conv" in name or "stem" in name)):  # instance norm follows
            assert np.abs(want).max() > 1e-6, f"{name}: no gradient to compare"
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-7, err_msg=name)
    np.testing.assert_allclose(metrics["grad_norm/g"], optax.tree.norm(expected), rtol=1e-4)
    assert float(metrics["d/r1"]) == 0.0


def test_learning_rates_fall_linearly_to_zero_from_decay_from():
    factor = lambda step, decay_from: float(train_state.learning_rate_factor(step, 100, decay_from))
    assert [factor(s, 0.6) for s in (0, 60, 80, 99, 100, 150)] == pytest.approx(
        [1.0, 1.0, 0.5, 0.025, 0.0, 0.0])
    assert [factor(s, 1.0) for s in (0, 99, 100, 150)] == [1.0] * 4
    assert factor(0, 0.0) == 1.0 and factor(50, 0.0) == pytest.approx(0.5)


def test_the_step_scales_both_updates_by_the_learning_rate_factor():
    """At step 7 of 8 with ``decay_from=0.5`` both rates are a quarter of the configured ones:
    from the same state and batch, D moves a quarter as far as with constant rates, and so does
    G when D is held still (G's gradient is taken against the updated D)."""
    config = config_lib.tiny(config_lib.base_config())
    config.model.update(SMALLEST_MODEL)
    config.train.steps = 8
    rng = np.random.default_rng(0)
    batch = {"image": rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             "source": np.array([0, 1, 2, 0], np.int32), "target": np.array([1, 2, 0, 2], np.int32)}

    def moves(part, decay_from, optimizers):
        abstract, graphs = train_state.abstract_state(config, GROUPS, optimizers)
        one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        state = train_state.create_train_state(config, GROUPS, optimizers,
                                               train_state.state_shardings(abstract, one_device))
        state = state.replace(step=jnp.asarray(7, jnp.int32))
        config.optim.decay_from = decay_from
        step = jax.jit(steps.make_train_step(config, graphs, optimizers, GROUPS, r1="never"))
        new, metrics = step(state, batch)
        assert int(new.nonfinite_steps) == 0
        deltas = [np.asarray(b) - np.asarray(a)
                  for a, b in zip(jax.tree.leaves(getattr(state, part)),
                                  jax.tree.leaves(getattr(new, part)))]
        return deltas, float(metrics["learning_rate_factor"])

    both_move = Optimizers(generator=optax.sgd(1.0), discriminator=optax.sgd(1.0))
    d_still = Optimizers(generator=optax.sgd(1.0), discriminator=optax.set_to_zero())
    for part, optimizers in (("d_params", both_move), ("g_params", d_still)):
        (full, full_rate), (quarter, quarter_rate) = (moves(part, d, optimizers) for d in (1.0, 0.5))
        assert (full_rate, quarter_rate) == (1.0, 0.25)
        assert max(np.abs(d).max() for d in full) > 1e-3, part
        for f, q in zip(full, quarter):
            np.testing.assert_allclose(q, 0.25 * f, rtol=1e-3, atol=1e-6, err_msg=part)
