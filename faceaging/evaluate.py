"""``--mode=eval``: how well a checkpoint ages held-out faces, per target group.

Loads the run (EMA weights of both generators only), ages the first ``eval.num_images``
held-out faces to every group once, and runs the evaluators named in ``eval.evaluators``
(``faceaging/evaluators/``: age estimator, cycle, identity, FID/KID, SynthFaces ground truth,
traits) over each target group. Writes WORKDIR/eval/STEP.json and STEP.md and logs the means to
TensorBoard.
"""

from __future__ import annotations

import json

from absl import logging
import ml_collections
import numpy as np

from faceaging import datasets, evaluators, files, input_pipeline, run as run_lib
from faceaging import writer as writer_lib
from faceaging.evaluators import common


def make_context(trained: run_lib.Run, eval_config: ml_collections.ConfigDict) -> common.Context:
    """The held-out faces of ``trained``'s dataset, aged to every group."""
    builder = datasets.prepare(trained.config)
    split = input_pipeline.held_out_split(builder)
    source = input_pipeline.open_split(builder, split, trained.schedule)
    n = min(eval_config.num_images, len(source))
    batch = input_pipeline.sample_batch(source, n, trained.config.image_size)
    ager = trained.ager(num_devices=1)
    aged = ager(ager.place_params(trained.params("aging")), batch["image"],
                np.eye(trained.schedule.num_groups, dtype=np.float32))
    return common.Context(run=trained, eval_config=eval_config, builder=builder, split=split,
                          records=[source.record(i) for i in range(n)], images=batch["image"],
                          source_groups=batch["source"], aged=aged)


def evaluate(workdir: str, eval_config: ml_collections.ConfigDict | None = None) -> dict:
    """Evaluates the latest checkpoint of ``workdir``; returns the report it writes.

    ``eval_config`` (a config's ``eval`` section) is used instead of the run's own, e.g. to name
    weights.
    """
    trained = run_lib.load(workdir, generators=run_lib.GENERATORS)
    c = eval_config if eval_config is not None else trained.config.eval
    chosen = evaluators.names(c.evaluators)
    ctx = make_context(trained, c)
    report = {"step": trained.step, "split": ctx.split, "num_images": len(ctx.images),
              "groups": {}, "skipped": {}}
    running = []
    for name in chosen:
        evaluator = evaluators.get(name)
        if not evaluator.applies(ctx):
            continue
        try:
            running.append(evaluator(ctx))
        except common.Skipped as skipped:
            common.log_skip(skipped)
            report["skipped"][skipped.key] = skipped.reason
    for k, label in enumerate(trained.schedule.labels):
        row = {}
        for evaluator in running:
            row.update(evaluator.group_metrics(k, ctx.aged[:, k]))
        report["groups"][label] = row
    for evaluator in running:
        report.update(evaluator.summary())
    keys = list(next(iter(report["groups"].values())))
    report["mean"] = {key: _mean([g[key] for g in report["groups"].values()]) for key in keys}
    write_report(trained.workdir, report, keys)
    return report


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


def markdown(report: dict, keys) -> str:
    """The report as a table: one row per target group, then the mean, then what was skipped."""
    head = f"Step {report['step']}, {report['num_images']} {report['split']} images."
    if "estimator_mae_real" in report:
        head += (f" Age estimator on real images: MAE {report['estimator_mae_real']:.2f} years, "
                 f"group accuracy {report['estimator_accuracy_real']:.1%}.")
    lines = [head, "", "| target group | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for label, row in [*report["groups"].items(), ("mean", report["mean"])]:
        lines.append(f"| {label} | " + " | ".join("n/a" if row[k] is None else f"{row[k]:.3f}"
                                                  for k in keys) + " |")
    lines += ["", *(f"Skipped {what}: {why}" for what, why in report["skipped"].items())]
    return "\n".join(lines) + "\n"


def write_report(workdir, report: dict, keys) -> None:
    """``eval/STEP.json`` and ``eval/STEP.md`` in ``workdir``, and the means to TensorBoard."""
    files.write_text(workdir.eval_report(report["step"], ".json"), json.dumps(report, indent=2))
    table = markdown(report, keys)
    files.write_text(workdir.eval_report(report["step"], ".md"), table)
    writer = writer_lib.MetricWriter(workdir.tensorboard)
    writer.scalars(report["step"], {f"eval/{k}": v for k, v in report["mean"].items() if v is not None})
    writer.close()
    logging.info("Evaluation written to %s:\n%s", workdir.eval_report(report["step"], ".md"), table)
