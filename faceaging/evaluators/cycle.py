"""Cycle reconstruction: the restoring generator brings each aged image back to its source group."""

from __future__ import annotations

from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np

from faceaging import image_metrics, pixels
from faceaging.evaluators import common


class Evaluator(common.Evaluator):
    name = "cycle"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx
        dtype, num_groups = jnp.dtype(ctx.config.dtype), ctx.schedule.num_groups
        graph, params = ctx.run.generator, ctx.run.params("restoring")

        @jax.jit
        def restore(aged, source_groups):
            out, _ = nnx.merge(graph, params)(pixels.to_float(aged, dtype),
                                              jax.nn.one_hot(source_groups, num_groups))
            return pixels.to_uint8(out)

        self.restore = restore

    def per_image(self, group, aged):
        images = self.ctx.images
        cycled = np.asarray(self.restore(aged, self.ctx.source_groups))
        return {"cycle_l1": np.asarray(image_metrics.l1(cycled, images)),
                "cycle_psnr": np.asarray(image_metrics.psnr(cycled, images)),
                "cycle_ssim": np.asarray(image_metrics.ssim(cycled, images))}
