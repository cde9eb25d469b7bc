"""SynthFaces ground truth: the aged image against the true render of the same identity at the
target group's typical age, beside two baselines (the unchanged input; the group's mean image)."""

from __future__ import annotations

import numpy as np

from faceaging import image_metrics
from faceaging.evaluators import common


class Evaluator(common.SynthFacesEvaluator):
    name = "synthfaces_truth"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx

    def group_metrics(self, group, aged):
        ctx = self.ctx
        truth = ctx.true_renders(group)
        mean_image = ctx.training_images(None)[group].mean(0).round().astype(np.uint8)
        mean = np.broadcast_to(mean_image, truth.shape)
        return {"gt_l1": float(image_metrics.l1(aged, truth).mean()),
                "gt_ssim": float(image_metrics.ssim(aged, truth).mean()),
                "gt_l1_baseline_input": float(image_metrics.l1(ctx.images, truth).mean()),
                "gt_l1_baseline_mean": float(image_metrics.l1(mean, truth).mean())}
