"""FID and KID of each group's aged images (from inputs of other groups) against real training
images of that group."""

from __future__ import annotations

from faceaging import batching, feature_metrics, inception
from faceaging.evaluators import common

WEIGHTS_FILE = "fid_inception.npz"


class Evaluator(common.Evaluator):
    name = "fid_kid"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx
        c = ctx.eval_config

        def load(path):
            graph, params = inception.load_inception(path, c.fid_source_sha256_prefix)
            return common.compiled_with(
                params, lambda p, x: inception.pool_features(graph, p, x, c.fid_image_size))

        self.features = common.optional_weights(c.fid_weights, WEIGHTS_FILE, c, load, "fid_kid")

    def _features_of(self, images):
        return batching.map_in_batches(self.features, images, self.ctx.eval_config.batch_size)

    def per_group(self, group, aged):
        ctx, c = self.ctx, self.ctx.eval_config
        reals = ctx.training_images(None if ctx.synthetic else c.fid_num_real)
        real = reals[group][:c.fid_num_real]
        if len(real) < 2:  # a group without 2 real images has no distribution
            return {"fid": None, "kid": None}
        fake_f, real_f = self._features_of(aged), self._features_of(real)
        return {"fid": feature_metrics.frechet_distance(fake_f, real_f),
                "kid": feature_metrics.kernel_inception_distance(
                    fake_f, real_f, c.kid_subsets, c.kid_subset_size, seed=ctx.config.seed)}
