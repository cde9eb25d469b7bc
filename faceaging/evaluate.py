"""``--mode=eval``: how well a checkpoint ages held-out faces, per target group.

For each target group: age-group accuracy and age MAE of the aged images by the independent age
estimator; cycle reconstruction (L1, PSNR, SSIM); and on SynthFaces, ground truth: L1 and SSIM
between G(x, target) and the true render of the same identity at the target group's typical
age, beside two baselines (the unchanged input, and the mean training image of the group).
Writes WORKDIR/eval/STEP.json and STEP.md and logs to TensorBoard.
"""

from __future__ import annotations

import json
import os

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from faceaging import age_estimator, datasets, image_metrics, input_pipeline, predict, steps
from faceaging import trait_classifier, train_state, writer as writer_lib
from faceaging.datasets import synthfaces


def _true_renders(config, records, schedule, group: int) -> np.ndarray:
    age = schedule.representative_age(group)
    seed = config.data.synthfaces.seed
    return np.stack([np.asarray(Image.fromarray(synthfaces.render(
        synthfaces.make_identity(seed, synthfaces.identity_index(r["file_name"])), age, seed)).resize(
            (config.image_size, config.image_size), Image.BICUBIC)) for r in records])


def _group_means(config, builder, schedule) -> np.ndarray:
    """Mean training image of every group (uint8), the 'average face' baseline."""
    source = input_pipeline.open_split(builder, "train", schedule)
    sums = np.zeros((schedule.num_groups, config.image_size, config.image_size, 3))
    counts = np.zeros(schedule.num_groups)
    for i in range(len(source)):
        record = source[i]
        sums[record["source"]] += input_pipeline.decode_image(record["image"], config.image_size)
        counts[record["source"]] += 1
    return (sums / np.maximum(counts, 1)[:, None, None, None]).round().astype(np.uint8)


def evaluate(workdir: str) -> dict:
    """Evaluates the latest checkpoint of ``workdir``; returns the report it writes."""
    config, schedule, graphs, ema, step = predict.load_ema_generator(workdir, all_generators=True)
    est_graph, est_params = age_estimator.load_estimator(config, workdir)
    builder = datasets.prepare(config)
    split = input_pipeline.held_out_split(builder)
    source = input_pipeline.open_split(builder, split, schedule)
    n = min(config.eval.num_images, len(source))
    records = [source.record(i) for i in range(n)]
    batch = input_pipeline.sample_batch(source, n, config.image_size)
    images, src = batch["image"], batch["source"]
    dtype = jnp.dtype(config.dtype)

    age_all = jax.jit(steps.make_age_all_groups(graphs, dtype))
    estimate = jax.jit(lambda x: age_estimator.estimate(est_graph, est_params, x))

    @jax.jit
    def restore(aged, source_groups):
        out, _ = nnx.merge(graphs.generator, train_state.restoring_params(ema))(
            steps.to_float(aged, dtype), jax.nn.one_hot(source_groups, schedule.num_groups))
        return steps.to_uint8(out)

    aged = np.asarray(age_all(ema["aging"], images, jnp.eye(schedule.num_groups)))
    real_ages = np.array([r["age"] for r in records])
    report = {"step": step, "split": split, "groups": {},
              **age_estimator.score_real(schedule, est_graph, est_params, images, real_ages, src)}
    synthetic = config.data.name == "synth_faces"
    means = _group_means(config, builder, schedule) if synthetic else None
    traits = None
    if synthetic:
        try:
            trait_graph, trait_params = trait_classifier.load_trait_classifier(config, workdir)
            traits = jax.jit(lambda x: trait_classifier.predict_traits(trait_graph, trait_params, x))
            input_traits = np.asarray(traits(images))
        except FileNotFoundError as e:
            logging.warning("Skipping trait agreement: %s", e)
    for k, label in enumerate(schedule.labels):
        target = aged[:, k]
        est = np.asarray(estimate(target))
        cycled = np.asarray(restore(target, src))
        row = {"age_group_accuracy": float((age_estimator.groups_of(schedule, est) == k).mean()),
               "age_mae": float(np.abs(est - schedule.representative_age(k)).mean()),
               "cycle_l1": float(image_metrics.l1(cycled, images).mean()),
               "cycle_psnr": float(image_metrics.psnr(cycled, images).mean()),
               "cycle_ssim": float(image_metrics.ssim(cycled, images).mean())}
        if synthetic:
            truth = _true_renders(config, records, schedule, k)
            mean = np.broadcast_to(means[k], truth.shape)
            row.update({"gt_l1": float(image_metrics.l1(target, truth).mean()),
                        "gt_ssim": float(image_metrics.ssim(target, truth).mean()),
                        "gt_l1_baseline_input": float(image_metrics.l1(images, truth).mean()),
                        "gt_l1_baseline_mean": float(image_metrics.l1(mean, truth).mean())})
        if traits is not None:
            row["trait_agreement"] = float((np.asarray(traits(target)) == input_traits).mean())
        report["groups"][label] = row
    keys = list(next(iter(report["groups"].values())))
    report["mean"] = {key: float(np.mean([g[key] for g in report["groups"].values()])) for key in keys}
    _write(workdir, report, keys)
    return report


def _write(workdir: str, report: dict, keys) -> None:
    folder = os.path.join(workdir, "eval")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{report['step']}.json"), "w") as f:
        json.dump(report, f, indent=2)
    lines = [f"Step {report['step']}, {report['num_images']} {report['split']} images. Age estimator on "
             f"real images: MAE {report['estimator_mae_real']:.2f} years, group accuracy "
             f"{report['estimator_accuracy_real']:.1%}.", "",
             "| target group | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    for label, row in [*report["groups"].items(), ("mean", report["mean"])]:
        lines.append(f"| {label} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(folder, f"{report['step']}.md"), "w") as f:
        f.write(table)
    writer = writer_lib.MetricWriter(writer_lib.tensorboard_dir(workdir))
    writer.scalars(report["step"], {f"eval/{k}": v for k, v in report["mean"].items()})
    writer.close()
    logging.info("Evaluation written to %s:\n%s", folder, table)
