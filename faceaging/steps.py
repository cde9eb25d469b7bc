"""Jitted, sharded computations: the GAN train step and aging to target groups."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import optax

from faceaging import losses
from faceaging.train_state import Graphs, Optimizers, TrainState, restoring_params


def to_float(images_uint8, dtype):
    return (images_uint8.astype(jnp.float32) / 127.5 - 1.0).astype(dtype)


def to_uint8(images):
    return jnp.clip(jnp.round((images.astype(jnp.float32) + 1.0) * 127.5), 0, 255).astype(jnp.uint8)


def _select(pred, new, old):
    return jax.tree.map(lambda n, o: jnp.where(pred, n, o), new, old)


def make_train_step(config: ml_collections.ConfigDict, graphs: Graphs, optimizers: Optimizers,
                    num_groups: int):
    """Returns ``train_step(state, batch) -> (state, metrics)``: a D update, then a G update."""
    w = config.loss
    dtype = jnp.dtype(config.dtype)

    def generate(params, images, age_code):
        return nnx.merge(graphs.generator, params)(images, age_code)

    def discriminate(params, images):
        return nnx.merge(graphs.discriminator, params)(images)

    def d_loss_fn(d_params, real, fake, src, tgt, apply_r1):
        adv, cls = discriminate(d_params, jnp.concatenate([real, fake.astype(dtype)]))
        n = real.shape[0]
        adv_real = losses.adversarial_real(adv[:n], src)
        adv_fake = losses.adversarial_fake(adv[n:], tgt)
        age = losses.classification(cls[:n], src)
        r1 = jax.lax.cond(apply_r1,
                          lambda: losses.r1_penalty(lambda x: discriminate(d_params, x), real, src),
                          lambda: jnp.zeros((), jnp.float32))
        total = (w.adversarial * (adv_real + adv_fake) + w.age * age
                 + 0.5 * w.r1_gamma * w.r1_every * r1)
        return total, {"d/adv_real": adv_real, "d/adv_fake": adv_fake, "d/age": age, "d/r1": r1,
                       "d/age_accuracy_real": losses.accuracy(cls[:n], src), "d/total": total}

    def g_loss_fn(g_params, d_params, real, src_code, tgt_code, tgt):
        fake, identity_in = generate(g_params["aging"], real, tgt_code)
        cycled, identity_fake = generate(restoring_params(g_params), fake.astype(dtype), src_code)
        adv, cls = discriminate(d_params, fake.astype(dtype))
        terms = {"g/adv": losses.adversarial_real(adv, tgt),
                 "g/age": losses.classification(cls, tgt),
                 "g/cycle": losses.l1(cycled, real),
                 "g/identity": losses.l1(identity_in, identity_fake)}
        weights = {"g/adv": w.adversarial, "g/age": w.age, "g/cycle": w.cycle,
                   "g/identity": w.identity}
        if w.preserve:
            terms["g/preserve"] = losses.l1(fake, real)
            weights["g/preserve"] = w.preserve
        if w.reconstruction:
            reconstructed, _ = generate(g_params["aging"], real, src_code)
            terms["g/reconstruction"] = losses.l1(reconstructed, real)
            weights["g/reconstruction"] = w.reconstruction
        total = sum(weights[k] * v for k, v in terms.items())
        return total, {**terms, "g/total": total, "g/age_accuracy_fake": losses.accuracy(cls, tgt)}

    def train_step(state: TrainState, batch: dict):
        real = to_float(batch["image"], dtype)
        src, tgt = batch["source"], batch["target"]
        src_code = jax.nn.one_hot(src, num_groups)
        tgt_code = jax.nn.one_hot(tgt, num_groups)

        fake, _ = generate(state.g_params["aging"], real, tgt_code)
        apply_r1 = state.step % w.r1_every == 0
        (d_total, d_metrics), d_grads = jax.value_and_grad(d_loss_fn, has_aux=True)(
            state.d_params, real, jax.lax.stop_gradient(fake), src, tgt, apply_r1)
        d_updates, d_opt_state = optimizers.discriminator.update(d_grads, state.d_opt_state,
                                                                 state.d_params)
        d_params = optax.apply_updates(state.d_params, d_updates)

        (g_total, g_metrics), g_grads = jax.value_and_grad(g_loss_fn, has_aux=True)(
            state.g_params, d_params, real, src_code, tgt_code, tgt)
        g_updates, g_opt_state = optimizers.generator.update(g_grads, state.g_opt_state,
                                                             state.g_params)
        g_params = optax.apply_updates(state.g_params, g_updates)

        decay = jnp.minimum(config.optim.ema_decay, (1.0 + state.step) / (10.0 + state.step))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, g_params)

        g_norm, d_norm = optax.tree.norm(g_grads), optax.tree.norm(d_grads)
        finite = jnp.isfinite(jnp.stack([d_total, g_total, g_norm, d_norm])).all()
        updated = state.replace(g_params=g_params, d_params=d_params, g_opt_state=g_opt_state,
                                d_opt_state=d_opt_state, ema_params=ema)
        new_state = _select(finite, updated, state).replace(
            step=state.step + 1, nonfinite_steps=state.nonfinite_steps + (~finite).astype(jnp.int32))
        metrics = {**d_metrics, **g_metrics, "grad_norm/g": g_norm, "grad_norm/d": d_norm,
                   "nonfinite_steps": new_state.nonfinite_steps}
        return new_state, metrics

    return train_step


def make_age_all_groups(graphs: Graphs, dtype):
    """Returns ``fn(params, images_uint8, codes) -> (N, K, H, W, 3) uint8``: each image aged to each code.

    ``codes`` is a (K, num_groups) array of age codes: one-hot rows for groups, or
    mixtures of neighbouring groups for smooth traversals.
    """
    def age_all(params, images, codes):
        n, k = images.shape[0], codes.shape[0]
        x = jnp.repeat(to_float(images, dtype), k, axis=0)
        aged, _ = nnx.merge(graphs.generator, params)(x, jnp.tile(codes, (n, 1)))
        return to_uint8(aged).reshape(n, k, *aged.shape[1:])

    return age_all
