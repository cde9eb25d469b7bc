"""The oracle: the same aging generator trained on paired ground truth, to separate what the
generator can represent from what the GAN objective teaches it.

    python benchmarks/oracle_synthfaces.py [--config=configs/synthfaces.py] \
        [--estimator_workdir=WORKDIR] [--config.train.steps=1800]

SynthFaces can render every training image's identity at any age in the image's own pose, so
the aging generator can be trained on L1 to the true render at the target group's typical age
(no discriminator, no cycle) for the config's step budget, batch size and learning rate. It is
then measured like ``--mode=eval`` on the config's fresh identities (target != source cells,
95% intervals over identities): ground-truth L1 against the unchanged input, overall and in
adult<->child cells, and, with ``--estimator_workdir`` (a workdir holding a trained age
estimator), age-group accuracy. Prints one JSON object.
"""

import json
import time

from absl import app, flags, logging
from flax import nnx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from ml_collections import config_flags

from faceaging import age_estimator, cell_stats, datasets, evaluate, image_metrics, input_pipeline
from faceaging import models, pixels, schedules
from faceaging.datasets import synthfaces
from faceaging.evaluators import common

config_flags.DEFINE_config_file("config", "configs/synthfaces.py", "SynthFaces config.", lock_config=True)
flags.DEFINE_string("estimator_workdir", "", "Workdir whose age estimator judges the outputs.")


def paired_training_set(config, schedule):
    """(inputs (N, H, W, 3), truths (N, K, H, W, 3), source groups) of the training split."""
    builder = datasets.prepare(config)
    source = input_pipeline.open_split(builder, "train", schedule)
    records = [source.record(i) for i in range(len(source))]
    images = np.stack([input_pipeline.decode_image(r["image"], config.image_size) for r in records])
    ages = [schedule.representative_age(k) for k in range(schedule.num_groups)]
    jobs = [(synthfaces.identity_index(r["file_name"]), age, int(r["age"]))
            for r in records for age in ages]
    logging.info("Rendering %d paired ground-truth images", len(jobs))
    truths = common.render_decoded(config, jobs).reshape(len(records), len(ages), *images.shape[1:])
    return images, truths, np.asarray(source.groups)


def train_oracle(config, schedule, images, truths, sources):
    generators, _ = models.build_models(config, schedule.num_groups, nnx.Rngs(config.seed))
    graph, params = nnx.split(generators["aging"])
    optimizer = optax.adam(config.optim.g_learning_rate, b1=config.optim.b1, b2=config.optim.b2)
    opt_state = optimizer.init(params)
    dtype = jnp.dtype(config.dtype)

    @jax.jit
    def step(params, opt_state, x, truth, target):
        def loss_fn(p):
            out, _ = nnx.merge(graph, p)(pixels.to_float(x, dtype), jax.nn.one_hot(target, schedule.num_groups))
            return jnp.abs(out - pixels.to_float(truth, jnp.float32)).mean()
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(config.seed)
    for i in range(1, config.train.steps + 1):
        pick = rng.integers(0, len(images), config.train.batch_size)
        # Targets other than the source group, as training draws them.
        target = (sources[pick] + rng.integers(1, schedule.num_groups, len(pick))) % schedule.num_groups
        params, opt_state, loss = step(params, opt_state, images[pick], truths[pick, target], target)
        if i % max(1, config.train.steps // 10) == 0:
            logging.info("oracle step %d/%d: L1 %.4f", i, config.train.steps, float(loss))
    return graph, params


def main(_):
    config = flags.FLAGS.config
    schedule = schedules.get_schedule(config.data.schedule)
    start = time.perf_counter()
    graph, params = train_oracle(config, schedule, *paired_training_set(config, schedule))
    train_seconds = time.perf_counter() - start

    records, inputs, sources, units = evaluate.fresh_inputs(config, config.eval.fresh_identities, schedule)
    ages = [schedule.representative_age(k) for k in range(schedule.num_groups)]
    truths = common.render_decoded(config, [(i, age, r["age"]) for age in ages
                                            for i, r in zip(units, records)]).reshape(
        len(ages), len(records), *inputs.shape[1:])
    age_all = jax.jit(lambda p, x, code: pixels.to_uint8(nnx.merge(graph, p)(
        pixels.to_float(x, jnp.dtype(config.dtype)), code)[0]))
    aged = np.stack([np.asarray(age_all(params, inputs, jax.nn.one_hot(np.full(len(inputs), k), len(ages))))
                     for k in range(len(ages))], axis=1)
    gt = np.stack([np.asarray(image_metrics.l1(aged[:, k], truths[k])) for k in range(len(ages))], axis=1)
    baseline = np.stack([np.asarray(image_metrics.l1(inputs, truths[k])) for k in range(len(ages))], axis=1)
    other = cell_stats.off_diagonal(sources, len(ages))
    pairs = other & cell_stats.adult_child_cells(schedule, sources)
    result = {"steps": config.train.steps, "train_seconds": train_seconds,
              "num_identities": int(len(set(units))), "num_cells": int(other.sum())}
    for name, cells in (("", other), ("adult_child_", pairs)):
        for key, (num, den) in {"gt_l1": (gt, None), "gt_l1_baseline_input": (baseline, None),
                                "gt_l1_ratio": (gt, baseline)}.items():
            result[name + key], result[name + key + "_ci"] = cell_stats.ratio_and_ci(num, den, cells, units)
    if flags.FLAGS.estimator_workdir:
        est_graph, est_params = age_estimator.load_estimator(config, flags.FLAGS.estimator_workdir)
        estimate = jax.jit(lambda p, x: age_estimator.estimate(est_graph, p, x))
        correct = np.stack([age_estimator.groups_of(schedule, np.asarray(estimate(est_params, aged[:, k]))) == k
                            for k in range(len(ages))], axis=1).astype(float)
        result["age_group_accuracy"], result["age_group_accuracy_ci"] = cell_stats.ratio_and_ci(
            correct, None, other, units)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    app.run(main)
