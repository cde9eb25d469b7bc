"""GAN loss terms as pure functions of logits and images (all reduce to float32 scalars)."""

import jax
import jax.numpy as jnp
import optax


def pick(logits, groups):
    """The logit of each example's own group, read along the last axis: ``logits[i, ..., groups[i]]``
    ((N, ..., G) -> (N, ...))."""
    index = groups.reshape(-1, *([1] * (logits.ndim - 1)))
    return jnp.take_along_axis(logits, index, axis=-1)[..., 0].astype(jnp.float32)


def per_image(judged, patch_weight: float = 1.0):
    """One value per image from its judges' values: (N,) a whole-image judge alone, as is;
    (N, 1 + P) the whole-image judge plus ``patch_weight`` x the mean of the P patch judges."""
    if judged.ndim == 1:
        return judged
    return judged[:, 0] + patch_weight * judged[:, 1:].mean(axis=1)


def adversarial_real(logits, groups, patch_weight: float = 1.0):
    """Non-saturating loss pushing per-group logits up: softplus(-l)."""
    return per_image(jax.nn.softplus(-pick(logits, groups)), patch_weight).mean()


def adversarial_fake(logits, groups, patch_weight: float = 1.0):
    """Non-saturating loss pushing per-group logits down: softplus(l)."""
    return per_image(jax.nn.softplus(pick(logits, groups)), patch_weight).mean()


def classification(logits, groups):
    return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), groups).mean()


def split_heads(logits, heads):
    """(N, sum(heads)) logits of several classifier heads -> one (N, classes) array per head."""
    bounds = [sum(heads[:i + 1]) for i in range(len(heads) - 1)]
    return jnp.split(logits, bounds, axis=-1)


def accuracy(logits, groups):
    return (jnp.argmax(logits, axis=-1) == groups).mean()


def l1(a, b):
    return jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32)).mean()


def gate_opening(gate, exponent: float = 1.0, floor: float = 1e-6):
    """The output gate's cost: the mean over pixels of ``(opening + floor) ** exponent -
    floor ** exponent`` (0 for a shut gate). Below exponent 1 a small opening costs more per unit
    than a large one, so small openings shut and one that opens, opens further (1: the plain
    mean). The cost's slope at a shut gate is ``exponent * floor ** (exponent - 1)``: with a tiny
    floor it is so steep that a gate which shuts early cannot reopen, as on 2,000 SynthFaces
    identities (benchmarks/RESULTS.md); a floor near the gate's starting opening keeps it finite."""
    gate = gate.astype(jnp.float32)
    if exponent == 1:
        return jnp.mean(gate)
    return jnp.mean(jnp.power(gate + floor, exponent)) - floor ** exponent


def r1_penalty(disc_fn, images, groups, patch_weight: float = 1.0):
    """R1: squared norm of the gradient of the real images' own-group logits w.r.t. the images
    (with patch judges: of the whole-image logit plus ``patch_weight`` x the patch logits' mean)."""
    grad = jax.grad(lambda x: per_image(pick(disc_fn(x)[0], groups), patch_weight).sum())(images)
    return jnp.sum(jnp.square(grad.astype(jnp.float32)), axis=(1, 2, 3)).mean()


def cosine_distance(a, b, eps: float = 1e-12):
    """1 - cosine similarity of the feature vectors (last axis) at each position, averaged: the
    distance between two feature maps' directions, blind to their scale."""
    unit = lambda x: x * jax.lax.rsqrt(jnp.square(x).sum(-1, keepdims=True) + eps)
    a, b = unit(a.astype(jnp.float32)), unit(b.astype(jnp.float32))
    return (1.0 - (a * b).sum(-1)).mean()


def edge_aware_variation(change, guide, sigma: float):
    """How unevenly ``change`` varies inside the regions where ``guide`` is even: the mean over
    horizontally and vertically adjacent pixel pairs of ``|change_p - change_q|`` (averaged over
    channels) weighted by ``exp(-|guide_p - guide_q|^2 / (2 sigma^2))`` (the squared distance
    summed over channels). Pairs across an edge of ``guide`` cost nearly nothing, pairs inside a
    flat region full price: a change that treats each of ``guide``'s regions as one piece (a
    whole head of hair recoloured, not streaked) costs little. ``guide`` is held fixed."""
    change = change.astype(jnp.float32)
    guide = jax.lax.stop_gradient(guide.astype(jnp.float32))
    total = 0.0
    for axis in (1, 2):
        weight = jnp.exp(-jnp.square(jnp.diff(guide, axis=axis)).sum(-1) / (2 * sigma ** 2))
        total = total + jnp.mean(weight * jnp.abs(jnp.diff(change, axis=axis)).mean(-1))
    return total / 2
