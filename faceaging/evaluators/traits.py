"""SynthFaces traits kept: the trait classifier reads the same skin, hair style and eye colour
from the aged image as from its input (its ceiling: the same check on the true aged render)."""

from __future__ import annotations

import numpy as np

from faceaging import trait_classifier
from faceaging.evaluators import common


def load_reader(ctx: common.Context, key: str):
    """(graph, params) of the run's trait classifier; Skipped(key) when there is none."""
    try:
        return trait_classifier.load_trait_classifier(ctx.config, ctx.run.workdir.root)
    except FileNotFoundError as e:
        raise common.Skipped(key, str(e)) from None


class Evaluator(common.SynthFacesEvaluator):
    name = "traits"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx
        graph, params = load_reader(ctx, "trait_agreement")
        self.traits = common.compiled_with(
            params, lambda p, x: trait_classifier.predict_traits(graph, p, x))
        self.input_traits = np.asarray(self.traits(ctx.images))
        self.by_trait = {}  # per target group
        k = ctx.schedule.num_groups
        self.kept_by_source = np.zeros((k, len(trait_classifier.TRAITS)))  # summed over targets
        self.cells_by_source = np.zeros(k)

    def per_image(self, group, aged):
        same = np.asarray(self.traits(aged)) == self.input_traits
        truth = self.ctx.true_renders(group)
        other = self.ctx.source_groups != group
        self.by_trait[self.ctx.schedule.labels[group]] = dict(
            zip(trait_classifier.TRAITS, same[other].mean(0).tolist()))
        np.add.at(self.kept_by_source, self.ctx.source_groups[other], same[other])
        np.add.at(self.cells_by_source, self.ctx.source_groups[other], 1)
        return {"trait_agreement": same.mean(axis=1),
                "trait_agreement_truth": (np.asarray(self.traits(truth)) == self.input_traits).mean(axis=1)}

    def summary(self):
        """Per trait, by target group and by source group (e.g. hair style lost from white-haired
        inputs), over the target != source cells."""
        by_source = {label: dict(zip(trait_classifier.TRAITS, (kept / n).tolist()))
                     for label, kept, n in zip(self.ctx.schedule.labels, self.kept_by_source,
                                               self.cells_by_source) if n}
        return {"trait_agreement_by_trait": self.by_trait,
                "trait_agreement_by_source_group": by_source}
