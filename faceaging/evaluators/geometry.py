"""SynthFaces geometry: does the aged head have the target age's proportions?

The renderer knows where the crown, eye line, mouth and chin of every render are
(``synthfaces.landmarks``); the trait classifier's landmark outputs read them from an image.
``geometry_error`` is the mean distance, in pixels, between the heights read from the aged image
and the true heights at the target age (same identity, pose); ``geometry_error_baseline_input``
the same for the unchanged input (what doing nothing scores) and ``geometry_error_truth`` for the
true render itself (the reader's floor). All three go through the same reader.
"""

from __future__ import annotations

import numpy as np

from faceaging import trait_classifier
from faceaging.evaluators import common, traits


class Evaluator(common.SynthFacesEvaluator):
    name = "geometry"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx
        graph, params = traits.load_reader(ctx, "geometry_error")
        self.read = common.compiled_with(
            params, lambda p, x: trait_classifier.read_landmarks(graph, p, x))
        self.input_heights = np.asarray(self.read(ctx.images))

    def per_image(self, group, aged):
        ctx, pixels = self.ctx, self.ctx.config.image_size
        truth = ctx.true_landmarks(group)

        def error(heights):
            return np.abs(np.asarray(heights) - truth).mean(axis=1) * pixels

        return {"geometry_error": error(self.read(aged)),
                "geometry_error_baseline_input": error(self.input_heights),
                "geometry_error_truth": error(self.read(ctx.true_renders(group)))}
