"""SynthFaces ground truth: the aged image against the true render of the same identity at the
target group's typical age (in the input's pose and light), beside two baselines (the unchanged
input; the group's mean training image); and stubble painted on women.

``female_stubble``: for women aged to an adult group, whether the aged image moves the place a
man's stubble grows more than STUBBLE_RATE_THRESHOLD of the way from the true render (which has
none) towards the hair colour: half the opacity of a grown man's stubble
(``synthfaces.STUBBLE_ALPHA``; renderer 3 measures 0.12-0.14 over this region). The same measure
of the unchanged input (``female_stubble_input``) is its baseline: an input of another age differs
from the truth in this region too (jaw and mouth move with age), so the baseline is not zero.
"""

from __future__ import annotations

import numpy as np

from faceaging import cell_stats, image_metrics
from faceaging.datasets import synthfaces
from faceaging.evaluators import common

STUBBLE_RATE_THRESHOLD = 0.5 * synthfaces.STUBBLE_ALPHA  # of the way to the hair colour


class Evaluator(common.SynthFacesEvaluator):
    name = "synthfaces_truth"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx

    def per_image(self, group, aged):
        ctx = self.ctx
        truth = ctx.true_renders(group)
        mean_image = ctx.training_images(None)[group].mean(0).round().astype(np.uint8)
        mean = np.broadcast_to(mean_image, truth.shape)
        out = {"gt_l1": np.asarray(image_metrics.l1(aged, truth)),
               "gt_ssim": np.asarray(image_metrics.ssim(aged, truth)),
               "gt_l1_baseline_input": np.asarray(image_metrics.l1(ctx.images, truth)),
               "gt_l1_baseline_mean": np.asarray(image_metrics.l1(mean, truth))}
        if cell_stats.adult_groups(ctx.schedule)[group]:
            for key, images in (("female_stubble", aged), ("female_stubble_input", ctx.images)):
                alpha = stubble_alpha(ctx.identities(), [r["age"] for r in ctx.records],
                                      ctx.schedule.representative_age(group),
                                      ctx.config.data.synthfaces.seed, images, truth)
                out[key] = np.where(np.isnan(alpha), np.nan, alpha > STUBBLE_RATE_THRESHOLD)
        return out


def stubble_alpha(identities, pose_ages, age: int, seed: int, images: np.ndarray,
                  truth: np.ndarray) -> np.ndarray:
    """(N,) for women: how much hair colour ``images`` add over the ``truth`` renders (each
    identity at ``age`` in the pose of its ``pose_ages`` entry) where a man's stubble grows, as
    an opacity (0: none; a man's stubble as rendered: about 0.13); NaN for men.
    The mean colour change in that region, projected on (hair colour - skin colour)."""
    out = np.full(len(images), np.nan)
    for n, (identity, pose_age) in enumerate(zip(identities, pose_ages)):
        if identity.gender != 1:
            continue
        mask = synthfaces.stubble_mask(identity, age, images.shape[1], seed, pose_age=int(pose_age))
        change = (images[n][mask].astype(float) - truth[n][mask].astype(float)).mean(axis=0)
        towards = np.asarray(synthfaces.hair_colour_at(identity, age)) - np.asarray(identity.skin)
        out[n] = float(change @ towards / max(towards @ towards, 1.0))
    return out
