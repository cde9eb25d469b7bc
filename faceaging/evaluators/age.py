"""Age of the aged images by the independent age estimator: group accuracy and MAE per target."""

from __future__ import annotations

import numpy as np

from faceaging import age_estimator
from faceaging.evaluators import common


class Evaluator(common.Evaluator):
    name = "age"

    def __init__(self, ctx: common.Context):
        self.ctx = ctx
        self.graph, self.params = age_estimator.load_estimator(ctx.config, ctx.run.workdir.root)
        self.estimate = common.compiled_with(
            self.params, lambda p, x: age_estimator.estimate(self.graph, p, x))

    def per_image(self, group, aged):
        schedule = self.ctx.schedule
        est = np.asarray(self.estimate(aged))
        return {"age_group_accuracy": (age_estimator.groups_of(schedule, est) == group).astype(float),
                "age_mae": np.abs(est - schedule.representative_age(group))}

    def summary(self):
        """How far to trust the estimator: its MAE and accuracy on the real inputs."""
        ctx = self.ctx
        real_ages = np.array([r["age"] for r in ctx.records])
        return age_estimator.score_real(ctx.schedule, self.graph, self.params, ctx.images,
                                        real_ages, ctx.source_groups)
