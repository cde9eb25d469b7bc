"""SynthFaces traits kept: the trait classifier reads the same skin, hair style and eye colour
from the aged image as from its input (its ceiling: the same check on the true aged render)."""

from __future__ import annotations

import numpy as np

from faceaging import trait_classifier
from faceaging.evaluators import common


class Evaluator(common.SynthFacesEvaluator):
    name = "traits"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx
        try:
            graph, params = trait_classifier.load_trait_classifier(ctx.config, ctx.run.workdir.root)
        except FileNotFoundError as e:
            raise common.Skipped("trait_agreement", str(e)) from None
        self.traits = common.compiled_with(
            params, lambda p, x: trait_classifier.predict_traits(graph, p, x))
        self.input_traits = np.asarray(self.traits(ctx.images))
        self.by_trait = {}

    def group_metrics(self, group, aged):
        same = np.asarray(self.traits(aged)) == self.input_traits
        truth = self.ctx.true_renders(group)
        self.by_trait[self.ctx.schedule.labels[group]] = dict(
            zip(trait_classifier.TRAITS, same.mean(0).tolist()))
        return {"trait_agreement": float(same.mean()),
                "trait_agreement_truth": float(
                    (np.asarray(self.traits(truth)) == self.input_traits).mean())}

    def summary(self):
        return {"trait_agreement_by_trait": self.by_trait}
