"""Real or aged? A two-sample classifier test of realism.

A small CNN is trained to tell real inputs of a group from inputs of other groups aged to it (one
of each per identity and group, so both classes have the same age mix), on half of the
identities, and tested on the other half: ``two_sample_accuracy`` near 0.5 means the aged faces
cannot be told from real ones; near 1.0, that something (streaks, smears, colour casts) gives
them away. The interval resamples the test identities.
"""

from __future__ import annotations

from flax import nnx
import jax.numpy as jnp
import numpy as np
import optax

from faceaging import batching, cell_stats, pixels, small_models
from faceaging.evaluators import common

MIN_TEST_IDENTITIES = 4


class Evaluator(common.Evaluator):
    name = "two_sample"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx

    def summary(self):
        ctx, c = self.ctx, self.ctx.eval_config
        rng = np.random.default_rng([ctx.config.seed, 7])
        images, labels, units = paired_sets(ctx.images, ctx.aged, ctx.source_groups, ctx.units, rng)
        ids = rng.permutation(np.unique(units))
        test_ids = ids[:len(ids) // 2]
        if len(test_ids) < MIN_TEST_IDENTITIES:
            return {"two_sample_skipped": f"{len(ids)} identities; at least "
                                          f"{2 * MIN_TEST_IDENTITIES} are needed"}
        test = np.isin(units, test_ids)
        graph, params = nnx.split(small_models.ConvNet(c.two_sample_channels, 1, rngs=nnx.Rngs(ctx.config.seed)))
        train_x, train_y = images[~test], labels[~test]

        def draw():
            pick = rng.integers(0, len(train_x), c.batch_size)
            x = train_x[pick][:, :, ::-1] if rng.random() < 0.5 else train_x[pick]
            return x, train_y[pick]

        def loss_of_logits(logits, y):
            return optax.sigmoid_binary_cross_entropy(logits[:, 0], y).mean()

        params = small_models.fit(graph, params, 1e-3, loss_of_logits,
                                  small_models.Batches(draw, c.two_sample_steps), "two-sample classifier")
        logits = batching.map_in_batches(
            common.compiled_with(params, lambda p, x: nnx.merge(graph, p)(pixels.to_float(x, jnp.float32))),
            images[test], c.batch_size)[:, 0]
        correct = ((logits > 0) == (labels[test] > 0.5)).astype(float)[:, None]
        accuracy, ci = cell_stats.ratio_and_ci(correct, None, np.ones_like(correct, bool), units[test])
        return {"two_sample_accuracy": accuracy, "two_sample_accuracy_ci": ci,
                "two_sample_test_images": int(test.sum()), "two_sample_test_identities": len(test_ids)}


def paired_sets(images, aged, source_groups, units, rng):
    """(images, labels 1 real / 0 aged, units): every input as a real image of its group, and for
    each, one input of another group (of the same identity where there is one) aged to its group."""
    out_images, out_labels, out_units = [], [], []
    for n in range(len(images)):
        group = source_groups[n]
        same = np.flatnonzero((units == units[n]) & (source_groups != group))
        others = same if len(same) else np.flatnonzero(source_groups != group)
        if not len(others):
            continue
        out_images += [images[n], aged[rng.choice(others), group]]
        out_labels += [1.0, 0.0]
        out_units += [units[n], units[n]]
    return np.stack(out_images), np.array(out_labels, np.float32), np.array(out_units)
