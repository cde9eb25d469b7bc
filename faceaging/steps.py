"""The GAN algorithm: loss functions, the train step that applies them, and aging to groups.

One step, read top to bottom in ``make_train_step``:

1. Aging pass, once: ``fake = G(x, target)`` (and ``G(x, source)`` for the reconstruction
   term, decoded from the same encoding in the same call), kept with its ``jax.vjp`` so the
   generator's loss can later be pulled back through it without running it again.
2. Discriminator update on ``D_loss(real, stop_gradient(fake))``; every ``r1_every`` steps
   the lazy R1 penalty is added, scaled by ``r1_every`` (StyleGAN2's lazy regularisation).
   With ``config.train.d_augment`` every image D reads, here and in step 3, passes through a
   random differentiable transform first (``faceaging/augment.py``).
3. Generator update: ``G_loss`` is a function of the aging pass's outputs, the restoring
   generator and the *updated* discriminator; its gradient w.r.t. those outputs is pulled back
   through step 1's vjp, and added to the loss's direct gradient (the restoring pass; the aging
   generator's too when weights are shared or the identity term re-encodes the fake with it).
4. EMA of the generator weights; an update whose losses, gradients or new parameters are not
   finite is skipped (and counted; the training loop stops on a streak of them).

The loss functions are pure functions of arrays and parameters, importable and testable alone.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from faceaging import augment, losses
from faceaging.pixels import to_float, to_uint8
from faceaging.train_state import (Graphs, Optimizers, TrainState, learning_rate_factor,
                                   restoring_params)

__all__ = ["LossWeights", "AgingOutputs", "d_loss", "r1_loss", "g_loss", "ema_update",
           "make_train_step", "make_age_all_groups"]

R1_SCHEDULES = ("lazy", "always", "never")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    adversarial: float = 1.0
    age: float = 1.0
    age_generator: float = -1.0  # < 0: the same as ``age``
    cycle: float = 10.0
    identity: float = 1.0
    reconstruction: float = 10.0
    preserve: float = 0.0
    gate: float = 0.0
    gate_exponent: float = 1.0
    gate_floor: float = 1e-6
    age_guide: float = 0.0
    attribute_guide: float = 0.0
    attribute_features: float = 0.0
    change_smoothness: float = 0.0
    change_smoothness_sigma: float = 0.1
    patch_adversarial: float = 1.0
    r1_gamma: float = 10.0
    r1_every: int = 16
    identity_encoder: str = "restoring"  # config_checks.IDENTITY_ENCODERS
    identity_distance: str = "l1"  # config_checks.IDENTITY_DISTANCES

    @classmethod
    def from_config(cls, loss: ml_collections.ConfigDict) -> "LossWeights":
        return cls(**{f.name: loss[f.name] for f in dataclasses.fields(cls)})


class AgingOutputs(NamedTuple):
    fake: jax.Array  # G(x, target), float32 in [-1, 1]
    identity: jax.Array  # the encoder's features of x
    reconstructed: jax.Array | None  # G(x, source), when the reconstruction term is on
    gate: jax.Array | None = None  # the fake's output gate in (0, 1), with model.output_mask
    base: jax.Array | None = None  # the input the fake's change applied to (warped: model.warp)


Generate = Callable  # (params, images, age_code) -> (aged float32 images, identity features)
Encode = Callable  # (params, images) -> identity features
Discriminate = Callable  # (params, images) -> (per-group adversarial logits, age logits)
Classify = Callable  # (images) -> age-group logits: the frozen age guide


class ReadAttributes(NamedTuple):
    """The frozen attribute guide: ``logits(images)`` -> (N, sum(heads)), one softmax per head;
    ``features(images)`` -> the activation maps that ``loss.attribute_features`` compares."""
    logits: Callable
    heads: tuple[int, ...]
    features: Callable | None = None


def d_loss(d_params, discriminate: Discriminate, real, fake, source, target, w: LossWeights):
    """Non-saturating D loss on real images (their source group's logit) and fakes (their
    target group's), plus age-group classification of the real images. -> (total, metrics)."""
    adv, cls = discriminate(d_params, jnp.concatenate([real, fake.astype(real.dtype)]))
    n = real.shape[0]
    adv_real = losses.adversarial_real(adv[:n], source, w.patch_adversarial)
    adv_fake = losses.adversarial_fake(adv[n:], target, w.patch_adversarial)
    age = losses.classification(cls[:n], source)
    total = w.adversarial * (adv_real + adv_fake) + w.age * age
    return total, {"d/adv_real": adv_real, "d/adv_fake": adv_fake, "d/age": age,
                   "d/age_accuracy_real": losses.accuracy(cls[:n], source)}


def r1_loss(d_params, discriminate: Discriminate, real, source, w: LossWeights):
    """Lazy R1, as added to the D loss on the steps it runs: 0.5 * gamma * r1_every * R1.
    -> (scaled penalty, the unscaled R1)."""
    r1 = losses.r1_penalty(lambda x: discriminate(d_params, x), real, source, w.patch_adversarial)
    return 0.5 * w.r1_gamma * w.r1_every * r1, r1


def g_loss(outputs: AgingOutputs, g_params: dict, d_params, generate: Generate,
           discriminate: Discriminate, real, source_code, target, w: LossWeights,
           guide: Classify | None = None, encode: Encode | None = None,
           attributes: ReadAttributes | None = None):
    """The generator's loss given the aging pass's ``outputs``. -> (total, metrics).

    ``g_params``: the generators' parameters ({'aging'[, 'restoring']}, as in ``TrainState``); the
    aging pass's own dependence on them is in ``outputs`` (``make_train_step`` pulls that part
    back separately). Adversarial and age terms from D on the fakes (their target group), L1 cycle
    through the restoring generator back to the source group, the identity term between the
    input's features (aging encoder) and the fake's (``w.identity_encoder``: the restoring
    generator's encoder, from the cycle pass, or the aging encoder again through ``encode``;
    ``w.identity_distance``: L1 or cosine), and optionally L1 reconstruction G(x, source) ~ x,
    preservation G(x, target) ~ x, the mean opening of the fake's output gate
    (``model.output_mask``: a GANimation-style sparsity term, ``losses.gate_opening``) and the
    frozen age ``guide``'s cross entropy for the target group, and the KL divergence from the
    frozen ``attributes`` guide's reading of the input to its reading of the fake (summed over
    its heads: gender, race), and the cosine distance between its activation maps of the input
    and of the fake (``attribute_feature_change``: what it sees where, not only what it concludes),
    and the edge-aware variation of the change ``fake - input`` (``losses.edge_aware_variation``:
    a region the input shows in one colour, such as its hair, changes as one piece).
    """
    fake = outputs.fake.astype(real.dtype)
    cycled, identity_fake = generate(restoring_params(g_params), fake, source_code)
    if w.identity_encoder == "aging" and "restoring" in g_params:  # shared: the same encoder
        identity_fake = encode(g_params["aging"], fake)
    distance = losses.cosine_distance if w.identity_distance == "cosine" else losses.l1
    adv, cls = discriminate(d_params, fake)
    terms = {"g/adv": (w.adversarial, losses.adversarial_real(adv, target, w.patch_adversarial)),
             "g/age": (w.age if w.age_generator < 0 else w.age_generator,
                       losses.classification(cls, target)),
             "g/cycle": (w.cycle, losses.l1(cycled, real)),
             "g/identity": (w.identity, distance(outputs.identity, identity_fake))}
    base = real if outputs.base is None else outputs.base  # the warped input with a warp
    if w.preserve:  # against the warped input: moving parts costs nothing here
        terms["g/preserve"] = (w.preserve, losses.l1(fake, base))
    if w.change_smoothness:  # the change in one piece inside each of the (warped) input's regions
        terms["g/change_smoothness"] = (w.change_smoothness, losses.edge_aware_variation(
            fake - base, base, w.change_smoothness_sigma))
    extra = {}
    if outputs.gate is not None:  # logged even at weight 0
        cost = losses.gate_opening(outputs.gate, w.gate_exponent, w.gate_floor)
        terms["g/gate"] = (w.gate, cost)
        if w.gate_exponent != 1:
            extra["g/gate_opening"] = jnp.mean(outputs.gate)
    if outputs.reconstructed is not None:
        terms["g/reconstruction"] = (w.reconstruction, losses.l1(outputs.reconstructed, real))
    if guide is not None:
        guide_logits = guide(fake)
        terms["g/age_guide"] = (w.age_guide, losses.classification(guide_logits, target))
        extra["g/age_guide_accuracy_fake"] = losses.accuracy(guide_logits, target)
    if attributes is not None:
        kept, agreement = attribute_change(attributes, real, fake)
        terms["g/attribute_guide"] = (w.attribute_guide, kept)
        extra["g/attribute_guide_agreement_fake"] = agreement
    if w.attribute_features:
        terms["g/attribute_features"] = (w.attribute_features,
                                         attribute_feature_change(attributes, real, fake))
    total = sum(weight * value for weight, value in terms.values())
    return total, {**{k: v for k, (_, v) in terms.items()},
                   "g/age_accuracy_fake": losses.accuracy(cls, target), **extra}


def attribute_change(attributes: ReadAttributes, real, fake):
    """(KL divergence from the guide's reading of ``real`` (held fixed) to its reading of
    ``fake``, summed over heads and averaged over images; the share of images whose most likely
    class agrees, averaged over heads)."""
    both = attributes.logits(jnp.concatenate([real, fake.astype(real.dtype)])).astype(jnp.float32)
    n = real.shape[0]
    kl, agreement = 0.0, 0.0
    for part in losses.split_heads(both, attributes.heads):
        log_p = jax.lax.stop_gradient(jax.nn.log_softmax(part[:n]))
        log_q = jax.nn.log_softmax(part[n:])
        kl = kl + jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))
        agreement = agreement + jnp.mean(jnp.argmax(part[:n], -1) == jnp.argmax(part[n:], -1))
    return kl, agreement / len(attributes.heads)


def attribute_feature_change(attributes: ReadAttributes, real, fake):
    """The mean over the guide's chosen activation maps of the cosine distance, at each position,
    between the map of ``real`` (held fixed) and the map of ``fake``: 0 when the guide sees the
    same things in the same places, up to their strength."""
    both = attributes.features(jnp.concatenate([real, fake.astype(real.dtype)]))
    n = real.shape[0]
    return sum(losses.cosine_distance(jax.lax.stop_gradient(m[:n]), m[n:]) for m in both) / len(both)


def ema_update(ema_params, params, step, decay: float):
    """EMA of ``params`` with a warm-up: the decay is min(decay, (1 + step) / (10 + step))."""
    d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
    return jax.tree.map(lambda e, p: d * e + (1.0 - d) * p, ema_params, params)


def aging_pass(generator: nnx.GraphDef, params, real, target_code, source_code) -> AgingOutputs:
    """G(x, target) and, when ``source_code`` is given, G(x, source): one encoding, one batched
    decoder call for both codes."""
    model = nnx.merge(generator, params)
    identity = model.encode(real)
    if source_code is None:
        fake, gate, base = model.decode_parts(real, identity, target_code)
        return AgingOutputs(fake, identity, None, gate, base)
    n = real.shape[0]
    both, gate, base = model.decode_parts(jnp.concatenate([real, real]),
                                          jnp.concatenate([identity, identity]),
                                          jnp.concatenate([target_code, source_code]))
    return AgingOutputs(both[:n], identity, both[n:], None if gate is None else gate[:n], base[:n])


def _augmented(discriminate: Discriminate, key, policy: augment.Policy) -> Discriminate:
    """``discriminate`` reading each image through ``augment.augment(images, key, policy)``."""
    return lambda params, images: discriminate(params, augment.augment(images, key, policy))


def _select(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def make_train_step(config: ml_collections.ConfigDict, graphs: Graphs, optimizers: Optimizers,
                    num_groups: int, r1: str = "lazy", guide=None, attribute_guide=None):
    """Returns ``train_step(state, batch) -> (state, metrics)``: a D update, then a G update.

    ``r1``: 'lazy' applies R1 every ``config.loss.r1_every`` steps (training); 'always' and
    'never' fix the choice at trace time, for counting each kind of step's work.
    ``guide``: (graph, params) of the frozen age guide, required when ``config.loss.age_guide``
    is above 0 (``age_guide.load_or_train``); its parameters are constants of the step.
    ``attribute_guide``: (graph, params, classes per head) of the frozen attribute guide, required
    when ``config.loss.attribute_guide`` or ``config.loss.attribute_features`` is above 0
    (``age_guide.for_step`` gives both); the latter compares its activation maps numbered
    ``config.attribute_guide.feature_layers``.
    """
    if r1 not in R1_SCHEDULES:
        raise ValueError(f"r1={r1!r}: expected one of {R1_SCHEDULES}")
    w = LossWeights.from_config(config.loss)
    if (w.age_guide > 0) != (guide is not None):
        raise ValueError(f"config.loss.age_guide={w.age_guide} needs an age guide exactly when "
                         "it is above 0 (faceaging.age_guide.load_or_train)")
    if (w.attribute_guide > 0 or w.attribute_features > 0) != (attribute_guide is not None):
        raise ValueError(f"config.loss.attribute_guide={w.attribute_guide} and config.loss."
                         f"attribute_features={w.attribute_features} need an attribute guide "
                         "exactly when either is above 0 (faceaging.age_guide.for_step)")
    classify = None if guide is None else (lambda images: nnx.merge(guide[0], guide[1])(images))
    attributes = None
    if attribute_guide is not None:
        read = lambda: nnx.merge(attribute_guide[0], attribute_guide[1])
        layers = tuple(config.attribute_guide.feature_layers)

        def chosen_maps(images):  # one pass of the guide for all chosen maps
            maps = read().features(images)
            return [maps[i] for i in layers]

        attributes = ReadAttributes(lambda images: read()(images), tuple(attribute_guide[2]),
                                    chosen_maps)
    dtype = jnp.dtype(config.dtype)
    policy = augment.parse(config.train.d_augment)
    augment_key = jax.random.key(config.seed)

    def generate(params, images, age_code):
        return nnx.merge(graphs.generator, params)(images, age_code)

    def encode(params, images):
        return nnx.merge(graphs.generator, params).encode(images)

    def discriminate(params, images):
        return nnx.merge(graphs.discriminator, params)(images)

    def d_objective(d_params, real, fake, source, target, apply_r1, judge, judge_r1):
        total, metrics = d_loss(d_params, judge, real, fake, source, target, w)
        penalty = lambda: r1_loss(d_params, judge_r1, real, source, w)
        nothing = lambda: (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.float32))
        if r1 == "lazy":
            scaled, raw = jax.lax.cond(apply_r1, penalty, nothing)
        else:
            scaled, raw = penalty() if r1 == "always" else nothing()
        total = total + scaled
        return total, {**metrics, "d/r1": raw, "d/total": total}

    def train_step(state: TrainState, batch: dict):
        real = to_float(batch["image"], dtype)
        source, target = batch["source"], batch["target"]
        source_code = jax.nn.one_hot(source, num_groups)
        target_code = jax.nn.one_hot(target, num_groups)

        # 1. The aging pass, once, with its pullback.
        outputs, pull_back = jax.vjp(
            lambda p: aging_pass(graphs.generator, p, real, target_code,
                                 source_code if w.reconstruction else None),
            state.g_params["aging"])

        # 2. Discriminator update (lazy R1 every r1_every steps). With config.train.d_augment D
        #    reads every image through its own random transform (faceaging/augment.py), drawn
        #    anew for D's loss, R1 and G's adversarial term from the seed and the step.
        judge = judge_r1 = judge_g = discriminate
        if policy:
            keys = jax.random.split(jax.random.fold_in(augment_key, state.step), 3)
            judge, judge_r1, judge_g = (_augmented(discriminate, k, policy) for k in keys)
        apply_r1 = state.step % w.r1_every == 0
        (d_total, d_metrics), d_grads = jax.value_and_grad(d_objective, has_aux=True)(
            state.d_params, real, jax.lax.stop_gradient(outputs.fake), source, target, apply_r1,
            judge, judge_r1)
        rate = learning_rate_factor(state.step, config.train.steps, config.optim.decay_from)
        d_updates, d_opt_state = optimizers.discriminator.update(d_grads, state.d_opt_state,
                                                                 state.d_params)
        d_params = optax.apply_updates(state.d_params, optax.tree.scale(rate, d_updates))

        # 3. Generator update against the updated discriminator: the loss's gradient through
        #    the aging pass's outputs, pulled back, plus its direct gradient (the restoring pass,
        #    and with shared weights or identity_encoder='aging' the aging generator's own).
        (g_total, g_metrics), (d_outputs, direct_grads) = jax.value_and_grad(
            g_loss, argnums=(0, 1), has_aux=True)(
            outputs, state.g_params, d_params, generate, judge_g, real, source_code, target,
            w, classify, encode, attributes)
        (aging_grads,) = pull_back(d_outputs)
        g_grads = {**direct_grads, "aging": jax.tree.map(jnp.add, aging_grads, direct_grads["aging"])}
        g_updates, g_opt_state = optimizers.generator.update(g_grads, state.g_opt_state,
                                                             state.g_params)
        g_params = optax.apply_updates(state.g_params, optax.tree.scale(rate, g_updates))

        # 4. EMA; skip the whole update if any loss, gradient or new parameter is not finite.
        ema = ema_update(state.ema_params, g_params, state.step, config.optim.ema_decay)
        g_norm, d_norm = optax.tree.norm(g_grads), optax.tree.norm(d_grads)
        finite = jnp.isfinite(jnp.stack([d_total, g_total, g_norm, d_norm,
                                         optax.tree.norm(g_params), optax.tree.norm(d_params)])).all()
        updated = state.replace(g_params=g_params, d_params=d_params, g_opt_state=g_opt_state,
                                d_opt_state=d_opt_state, ema_params=ema)
        new_state = _select(finite, updated, state).replace(
            step=state.step + 1, nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
        metrics = {**d_metrics, **g_metrics, "g/total": g_total, "learning_rate_factor": rate,
                   "grad_norm/g": g_norm, "grad_norm/d": d_norm,
                   "nonfinite_steps": new_state.nonfinite_steps,
                   "skipped": (~finite).astype(jnp.float32)}
        return new_state, metrics

    return train_step


def make_age_all_groups(generator: nnx.GraphDef, dtype):
    """Returns ``fn(params, images_uint8, codes) -> (N, K, H, W, 3) uint8``: each image aged to each code.

    ``codes`` is a (K, num_groups) array of age codes: one-hot rows for groups, or
    mixtures of neighbouring groups for smooth traversals. Each image is encoded once and
    decoded K times.
    """
    def age_all(params, images, codes):
        n, k = images.shape[0], codes.shape[0]
        x = to_float(images, dtype)
        model = nnx.merge(generator, params)
        identity = model.encode(x)
        aged = model.decode(jnp.repeat(x, k, axis=0), jnp.repeat(identity, k, axis=0),
                            jnp.tile(codes, (n, 1)))
        return to_uint8(aged).reshape(n, k, *aged.shape[1:])

    return age_all
