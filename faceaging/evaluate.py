"""``--mode=eval``: how well a checkpoint ages held-out faces, per target group.

For each target group: age-group accuracy and age MAE of the aged images by the independent age
estimator; cycle reconstruction (L1, PSNR, SSIM); with user-supplied weights, FID and KID of the
aged images against real training images of the group and the identity similarity of input and
aged image by a face-embedding network (skipped, and said so, without them); and on SynthFaces,
ground truth: L1 and SSIM between G(x, target) and the true render of the same identity at the
group's typical age in the input's pose, beside two baselines (the unchanged input, and the mean
training image of the group), and trait agreement. Writes WORKDIR/eval/STEP.json and STEP.md and
logs to TensorBoard.
"""

from __future__ import annotations

import json
import os

from absl import logging
from flax import nnx
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from faceaging import age_estimator, datasets, face_embedding, feature_metrics, image_metrics
from faceaging import inception, input_pipeline, pixels, predict, steps, trait_classifier, train_state
from faceaging import writer as writer_lib
from faceaging.datasets import synthfaces

FID_FILE, IDENTITY_FILE = "fid_inception.npz", "face_embedding.onnx"


def _true_renders(config, records, schedule, group: int) -> np.ndarray:
    """Each record's identity rendered at the group's typical age, in the record's own pose."""
    age = schedule.representative_age(group)
    seed = config.data.synthfaces.seed
    return np.stack([np.asarray(Image.fromarray(synthfaces.render(
        synthfaces.make_identity(seed, synthfaces.identity_index(r["file_name"])), age, seed,
        pose_age=int(r["age"]))).resize((config.image_size, config.image_size), Image.BICUBIC))
        for r in records])


def _training_images(config, builder, schedule, per_group: int | None) -> list[np.ndarray]:
    """uint8 training images of every group, at most ``per_group`` each (None: all)."""
    source = input_pipeline.open_split(builder, "train", schedule)
    taken = [[] for _ in range(schedule.num_groups)]
    for i in range(len(source)):
        group = taken[source.groups[i]]
        if per_group is None or len(group) < per_group:
            group.append(input_pipeline.decode_image(source.record(i)["image"], config.image_size))
    size = (0, config.image_size, config.image_size, 3)
    return [np.stack(t) if t else np.zeros(size, np.uint8) for t in taken]


def _weights(configured: str, default_name: str, c, load, what: str, skipped: dict):
    """``load(path)`` of configured weights, or None (noted in ``skipped``) when the default is absent.

    An explicitly configured path that does not exist is an error; the default location
    (``config.eval.weights_dir``) is optional.
    """
    path = os.path.expanduser(configured or os.path.join(c.weights_dir, default_name))
    if not configured and not os.path.exists(path):
        skipped[what] = f"no weights at {path} (see README: Evaluating a run)"
        logging.warning("Skipping %s: %s", what, skipped[what])
        return None
    return load(path)


def _inception_features(path: str, c):
    """``images -> (N, 2048)`` FID features with the verified weights at ``path``."""
    graph, params = inception.load_inception(path, c.fid_source_sha256_prefix)
    features = jax.jit(lambda x: inception.pool_features(graph, params, x, c.fid_image_size))
    return lambda images: _batched(features, images, c.batch_size)


def _batched(fn, images: np.ndarray, batch_size: int) -> np.ndarray:
    """``fn`` over fixed-size batches of ``images`` (last one padded), so it compiles once."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start:start + batch_size]
        padded = np.concatenate([chunk, np.zeros((batch_size - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        out.append(np.asarray(fn(padded))[:len(chunk)])
    return np.concatenate(out)


def evaluate(workdir: str, eval_config: ml_collections.ConfigDict | None = None) -> dict:
    """Evaluates the latest checkpoint of ``workdir``; returns the report it writes.

    ``eval_config`` (a config's ``eval`` section) replaces the run's own, e.g. to name weights.
    """
    config, schedule, graphs, ema, step = predict.load_ema_generator(workdir, all_generators=True)
    if eval_config is not None:
        config.eval = eval_config
    c = config.eval
    est_graph, est_params = age_estimator.load_estimator(config, workdir)
    builder = datasets.prepare(config)
    split = input_pipeline.held_out_split(builder)
    source = input_pipeline.open_split(builder, split, schedule)
    n = min(c.num_images, len(source))
    records = [source.record(i) for i in range(n)]
    batch = input_pipeline.sample_batch(source, n, config.image_size)
    images, src = batch["image"], batch["source"]
    dtype = jnp.dtype(config.dtype)

    age_all = jax.jit(steps.make_age_all_groups(graphs, dtype))
    estimate = jax.jit(lambda x: age_estimator.estimate(est_graph, est_params, x))

    @jax.jit
    def restore(aged, source_groups):
        out, _ = nnx.merge(graphs.generator, train_state.restoring_params(ema))(
            pixels.to_float(aged, dtype), jax.nn.one_hot(source_groups, schedule.num_groups))
        return pixels.to_uint8(out)

    aged = np.asarray(age_all(ema["aging"], images, jnp.eye(schedule.num_groups)))
    real_ages = np.array([r["age"] for r in records])
    report = {"step": step, "split": split, "groups": {}, "skipped": {},
              **age_estimator.score_real(schedule, est_graph, est_params, images, real_ages, src)}
    skipped = report["skipped"]
    features_of = _weights(c.fid_weights, FID_FILE, c, lambda p: _inception_features(p, c),
                           "fid_kid", skipped)
    embedder = _weights(c.identity_weights, IDENTITY_FILE, c,
                        lambda p: face_embedding.FaceEmbedder(p, c), "identity_similarity", skipped)
    synthetic = config.data.name == "synth_faces"
    reals = None
    if synthetic or features_of:
        reals = _training_images(config, builder, schedule, None if synthetic else c.fid_num_real)
    if embedder:
        input_embeddings = embedder(images)
    traits = None
    if synthetic:
        try:
            trait_graph, trait_params = trait_classifier.load_trait_classifier(config, workdir)
            traits = jax.jit(lambda x: trait_classifier.predict_traits(trait_graph, trait_params, x))
            input_traits = np.asarray(traits(images))
        except FileNotFoundError as e:
            skipped["trait_agreement"] = str(e)
            logging.warning("Skipping trait agreement: %s", e)
    by_trait = {}
    for k, label in enumerate(schedule.labels):
        target = aged[:, k]
        est = np.asarray(estimate(target))
        cycled = np.asarray(restore(target, src))
        row = {"age_group_accuracy": float((age_estimator.groups_of(schedule, est) == k).mean()),
               "age_mae": float(np.abs(est - schedule.representative_age(k)).mean()),
               "cycle_l1": float(image_metrics.l1(cycled, images).mean()),
               "cycle_psnr": float(image_metrics.psnr(cycled, images).mean()),
               "cycle_ssim": float(image_metrics.ssim(cycled, images).mean())}
        if embedder:
            row["identity_similarity"] = float(face_embedding.cosine_similarity(
                input_embeddings, embedder(target)).mean())
        if features_of:
            real = reals[k][:c.fid_num_real]
            row.update(fid=None, kid=None)  # a group without 2 real images has no distribution
            if len(real) >= 2:
                fake_f, real_f = features_of(target), features_of(real)
                row.update(fid=feature_metrics.frechet_distance(fake_f, real_f),
                           kid=feature_metrics.kernel_inception_distance(
                               fake_f, real_f, c.kid_subsets, c.kid_subset_size, seed=config.seed))
        if synthetic:
            truth = _true_renders(config, records, schedule, k)
            mean = np.broadcast_to(reals[k].mean(0).round().astype(np.uint8), truth.shape)
            row.update({"gt_l1": float(image_metrics.l1(target, truth).mean()),
                        "gt_ssim": float(image_metrics.ssim(target, truth).mean()),
                        "gt_l1_baseline_input": float(image_metrics.l1(images, truth).mean()),
                        "gt_l1_baseline_mean": float(image_metrics.l1(mean, truth).mean())})
        if traits is not None:
            same = np.asarray(traits(target)) == input_traits
            row["trait_agreement"] = float(same.mean())
            # The classifier's ceiling: the same check on the true aged render.
            row["trait_agreement_truth"] = float((np.asarray(traits(truth)) == input_traits).mean())
            by_trait[label] = dict(zip(trait_classifier.TRAITS, same.mean(0).tolist()))
        report["groups"][label] = row
    if by_trait:
        report["trait_agreement_by_trait"] = by_trait
    keys = list(next(iter(report["groups"].values())))
    report["mean"] = {key: _mean([g[key] for g in report["groups"].values()]) for key in keys}
    if embedder:
        report["identity_weights_sha256"] = embedder.sha256
    _write(workdir, report, keys)
    return report


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known else None


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
        lines.append(f"| {label} | " + " | ".join("n/a" if row[k] is None else f"{row[k]:.3f}"
                                                  for k in keys) + " |")
    lines += ["", *(f"Skipped {what}: {why}" for what, why in report["skipped"].items())]
    table = "\n".join(lines) + "\n"
    with open(os.path.join(folder, f"{report['step']}.md"), "w") as f:
        f.write(table)
    writer = writer_lib.MetricWriter(writer_lib.tensorboard_dir(workdir))
    writer.scalars(report["step"], {f"eval/{k}": v for k, v in report["mean"].items() if v is not None})
    writer.close()
    logging.info("Evaluation written to %s:\n%s", folder, table)
