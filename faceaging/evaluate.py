"""``--mode=eval``: how well a checkpoint ages faces it never saw, per target group.

Loads the run (EMA weights of both generators only), ages the evaluation faces to every group
once, and runs the evaluators named in ``eval.evaluators`` (``faceaging/evaluators/``: age
estimator, cycle, identity, FID/KID, SynthFaces ground truth, geometry, traits, a real-vs-aged
classifier) on every (input, target group) cell. On SynthFaces the faces are
``eval.fresh_identities`` identities rendered for evaluation only (none is in any dataset), each
at one age drawn from every group; elsewhere the first ``eval.num_images`` held-out images.

Means count only cells whose target differs from the input's group, with bootstrap 95%
intervals over identities (``faceaging.cell_stats``); adult<->child cells are also reported
alone, and age accuracy as a source x target matrix. Writes WORKDIR/eval/STEP.json and STEP.md
and logs the means to TensorBoard.
"""

from __future__ import annotations

import json

from absl import logging
import ml_collections
import numpy as np

from faceaging import cell_stats, datasets, evaluators, files, input_pipeline, run as run_lib
from faceaging import writer as writer_lib
from faceaging.datasets import synthfaces
from faceaging.evaluators import common

FRESH_SPLIT = "fresh"
# Per-cell ratios of means reported beside the means: (numerator, denominator).
RATIOS = {"gt_l1_ratio": ("gt_l1", "gt_l1_baseline_input"),
          "geometry_error_ratio": ("geometry_error", "geometry_error_baseline_input")}


def fresh_cases(seed: int, num_identities: int, schedule) -> list[tuple[int, int]]:
    """(identity index, age) of each evaluation input: identities from
    ``synthfaces.EVAL_IDENTITY_BASE`` on, each at one age drawn uniformly from every group."""
    cases = []
    for index in synthfaces.EVAL_IDENTITY_BASE + np.arange(num_identities):
        rng = np.random.default_rng([seed, int(index), 4])
        for lo, hi in schedule.ranges:
            hi = min(hi, synthfaces.AGES[1])
            cases.append((int(index), int(rng.integers(lo, hi + 1)) if lo <= hi else lo))
    return cases


def fresh_inputs(config, num_identities: int, schedule):
    """(records, uint8 images, source groups, identity of each) of the fresh evaluation faces."""
    seed = config.data.synthfaces.seed
    cases = fresh_cases(seed, num_identities, schedule)
    logging.info("Rendering %d fresh SynthFaces identities x %d ages for evaluation",
                 num_identities, schedule.num_groups)
    images = common.render_decoded(config, cases)
    records = [{"file_name": synthfaces.file_name(synthfaces.make_identity(seed, i), age), "age": age}
               for i, age in cases]
    groups = schedule.group_of(np.array([age for _, age in cases]))
    return records, images, groups.astype(np.int32), np.array([i for i, _ in cases])


def _held_out_inputs(builder, schedule, eval_config, image_size):
    split = input_pipeline.held_out_split(builder)
    source = input_pipeline.open_split(builder, split, schedule)
    n = min(eval_config.num_images, len(source))
    batch = input_pipeline.sample_batch(source, n, image_size)
    records = [source.record(i) for i in range(n)]
    if builder.name == synthfaces.SynthFaces.name:
        units = np.array([synthfaces.identity_index(r["file_name"]) for r in records])
    else:  # no identity labels: every image counts as its own identity
        units = np.arange(n)
    return split, records, batch["image"], batch["source"], units


def make_context(trained: run_lib.Run, eval_config: ml_collections.ConfigDict) -> common.Context:
    """The evaluation faces of ``trained``'s dataset, aged to every group."""
    builder = datasets.prepare(trained.config)
    schedule = trained.schedule
    if trained.config.data.name == "synth_faces" and eval_config.fresh_identities > 0:
        split = FRESH_SPLIT
        records, images, groups, units = fresh_inputs(trained.config, eval_config.fresh_identities, schedule)
    else:
        split, records, images, groups, units = _held_out_inputs(
            builder, schedule, eval_config, trained.config.image_size)
    ager = trained.ager(num_devices=1)
    aged = ager(ager.place_params(trained.params("aging")), images,
                np.eye(schedule.num_groups, dtype=np.float32))
    return common.Context(run=trained, eval_config=eval_config, builder=builder, split=split,
                          records=records, images=images, source_groups=groups, units=units,
                          aged=aged)


def evaluate(workdir: str, eval_config: ml_collections.ConfigDict | None = None) -> dict:
    """Evaluates the latest checkpoint of ``workdir``; returns the report it writes.

    ``eval_config`` (a config's ``eval`` section) is used instead of the run's own, e.g. to name
    weights.
    """
    trained = run_lib.load(workdir, generators=run_lib.GENERATORS)
    c = eval_config if eval_config is not None else trained.config.eval
    chosen = evaluators.names(c.evaluators)
    ctx = make_context(trained, c)
    running, skipped = [], {}
    for name in chosen:
        evaluator = evaluators.get(name)
        if not evaluator.applies(ctx):
            continue
        try:
            running.append(evaluator(ctx))
        except common.Skipped as skip:
            common.log_skip(skip)
            skipped[skip.key] = skip.reason
    cells, per_group = measure(ctx, running)
    report = summarize(ctx, cells, per_group)
    report["skipped"] = skipped
    for evaluator in running:
        report.update(evaluator.summary())
    write_report(trained.workdir, report)
    return report


def measure(ctx: common.Context, running) -> tuple[dict, list[dict]]:
    """({metric: (N, K) per-cell values}, [per target group: set-level metrics])."""
    n, k = ctx.aged.shape[:2]
    cells, per_group = {}, []
    for group in range(k):
        aged = ctx.aged[:, group]
        row = {}
        for evaluator in running:
            for key, values in evaluator.per_image(group, aged).items():
                cells.setdefault(key, np.full((n, k), np.nan))[:, group] = values
            row.update(evaluator.per_group(group, aged[ctx.source_groups != group]))
        per_group.append(row)
    return cells, per_group


def summarize(ctx: common.Context, cells: dict, per_group: list[dict]) -> dict:
    """The report: means and intervals per target group, over all cells and over adult<->child
    cells (target != source everywhere), and the source x target age-accuracy matrix."""
    schedule, sources = ctx.schedule, ctx.source_groups
    other = cell_stats.off_diagonal(sources, schedule.num_groups)
    subsets = {"mean": other, "adult_child": other & cell_stats.adult_child_cells(schedule, sources)}
    for group, label in enumerate(schedule.labels):
        subsets[label] = other & (np.arange(schedule.num_groups) == group)[None, :]
    stats = {name: {} for name in subsets}
    intervals = {name: {} for name in subsets}
    quantities = {key: (values, None) for key, values in cells.items()}
    quantities.update({key: (cells[a], cells[b]) for key, (a, b) in RATIOS.items()
                       if a in cells and b in cells})
    for name, chosen in subsets.items():
        for key, (numerator, denominator) in quantities.items():
            stats[name][key], intervals[name][key] = cell_stats.ratio_and_ci(
                numerator, denominator, chosen, ctx.units)
    for group, label in enumerate(schedule.labels):
        stats[label].update(per_group[group])
    set_keys = sorted({key for row in per_group for key in row})
    for key in set_keys:  # set-level metrics: the mean over groups, no interval
        known = [row[key] for row in per_group if row.get(key) is not None]
        stats["mean"][key] = float(np.mean(known)) if known else None
    report = {"step": ctx.run.step, "split": ctx.split, "num_images": len(ctx.images),
              "num_identities": len(np.unique(ctx.units)), "num_cells": int(other.sum()),
              "num_adult_child_cells": int(subsets["adult_child"].sum()),
              "cells": "target group != source group",
              "cell_keys": list(quantities), "set_keys": set_keys,
              "groups": {label: stats[label] for label in schedule.labels},
              "groups_ci": {label: intervals[label] for label in schedule.labels},
              "mean": stats["mean"], "mean_ci": intervals["mean"],
              "adult_child": stats["adult_child"], "adult_child_ci": intervals["adult_child"]}
    if "age_group_accuracy" in cells:
        report["age_accuracy_matrix"] = {
            "rows": "source group", "columns": "target group", "labels": list(schedule.labels),
            "values": cell_stats.matrix(cells["age_group_accuracy"], sources, schedule.num_groups)}
    return report


def _cell(value, interval) -> str:
    if value is None:
        return "n/a"
    return f"{value:.3f}" if interval is None else f"{value:.3f} [{interval[0]:.3f}, {interval[1]:.3f}]"


def markdown(report: dict) -> str:
    """The report as tables: one row per target group, the mean and the adult<->child cells
    (with 95% intervals), then the age-accuracy matrix, then what was skipped."""
    head = (f"Step {report['step']}, {report['split']} faces: {report['num_images']} inputs of "
            f"{report['num_identities']} identities; {report['num_cells']} cells with target != "
            f"source ({report['num_adult_child_cells']} adult<->child). Brackets: 95% bootstrap "
            "interval over identities.")
    if "estimator_mae_real" in report:
        head += (f" Age estimator on the real inputs: MAE {report['estimator_mae_real']:.2f} years, "
                 f"group accuracy {report['estimator_accuracy_real']:.1%}.")
    if report.get("two_sample_accuracy") is not None:
        head += (f" Real-vs-aged classifier accuracy (0.5: indistinguishable) "
                 f"{_cell(report['two_sample_accuracy'], report['two_sample_accuracy_ci'])} on "
                 f"{report['two_sample_test_images']} images of {report['two_sample_test_identities']} "
                 "held-out identities.")
    rows = [*((label, report["groups"][label], report["groups_ci"][label]) for label in report["groups"]),
            ("mean", report["mean"], report["mean_ci"]),
            ("adult<->child", report["adult_child"], report["adult_child_ci"])]
    lines = [head, ""]
    chunks = [keys[i:i + 4] for keys in (report["cell_keys"], report["set_keys"])
              for i in range(0, len(keys), 4)]  # four metrics per table keeps rows readable
    for part in chunks:
        lines += ["| target group | " + " | ".join(part) + " |", "|---" * (len(part) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(_cell(row.get(k), ci.get(k)) for k in part) + " |"
                  for label, row, ci in rows]
        lines.append("")
    if "age_accuracy_matrix" in report:
        m = report["age_accuracy_matrix"]
        lines += ["Age-group accuracy, source group (rows) x target group (columns):", "",
                  "| source \\ target | " + " | ".join(m["labels"]) + " |", "|---" * (len(m["labels"]) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in row) + " |"
                  for label, row in zip(m["labels"], m["values"])]
        lines.append("")
    lines += [f"Skipped {what}: {why}" for what, why in report["skipped"].items()]
    return "\n".join(lines) + "\n"


def write_report(workdir, report: dict) -> None:
    """``eval/STEP.json`` and ``eval/STEP.md`` in ``workdir``, and the means to TensorBoard."""
    files.write_text(workdir.eval_report(report["step"], ".json"), json.dumps(report, indent=2))
    table = markdown(report)
    files.write_text(workdir.eval_report(report["step"], ".md"), table)
    writer = writer_lib.MetricWriter(workdir.tensorboard)
    writer.scalars(report["step"], {f"eval/{k}": v for k, v in report["mean"].items() if v is not None})
    writer.close()
    logging.info("Evaluation written to %s:\n%s", workdir.eval_report(report["step"], ".md"), table)
