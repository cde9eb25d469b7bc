"""Aging quality on fresh SynthFaces identities, against ground truth and baselines.

    python benchmarks/quality_synthfaces.py [--config=configs/synthfaces.py:full] \
        [--workdir=runs/quality_synthfaces] [--evaluation_networks=OTHER_WORKDIR]

Trains the config for its step budget (resuming if the workdir has checkpoints), trains the
independent age estimator and the trait classifier / landmark reader (or, with
``--evaluation_networks``, copies those of another workdir, so that variants are judged by the
same networks), runs ``--mode=eval`` (``config.eval.fresh_identities`` identities no dataset
contains, target != source cells, 95% bootstrap intervals over identities), prints the report and
a summary, and writes quality.json (its path printed last). ``train_seconds_this_run`` is the
GAN's training time in this invocation (0 when resumed at the budget); ``total_seconds`` adds the
evaluation networks and evaluation.
"""

import json
import os
import time

from absl import app, flags
from ml_collections import config_flags

from faceaging import age_estimator, evaluate, files, trait_classifier, train
from faceaging.workdir import Workdir

config_flags.DEFINE_config_file("config", "configs/synthfaces.py:full", "SynthFaces config.", lock_config=True)
flags.DEFINE_string("workdir", "runs/quality_synthfaces", "Where the run and its evaluation go.")
flags.DEFINE_string("evaluation_networks", "", "A workdir whose age estimator and trait "
                    "classifier to reuse instead of training new ones.")

# Means over all target != source cells (key), and the same over adult<->child cells.
KEYS = ("age_group_accuracy", "age_mae", "gt_l1", "gt_l1_baseline_input", "gt_l1_baseline_mean",
        "gt_l1_ratio", "gt_ssim", "trait_agreement", "trait_agreement_truth", "cycle_psnr",
        "cycle_ssim", "geometry_error", "geometry_error_baseline_input", "geometry_error_truth",
        "female_stubble", "female_stubble_input")
ADULT_CHILD_KEYS = ("gt_l1_ratio", "gt_l1", "gt_l1_baseline_input", "geometry_error",
                    "geometry_error_baseline_input", "age_group_accuracy")
CHILD_GROUP = "0-9"


def _evaluation_networks(config, workdir: str, source: str) -> None:
    if source:
        for name in ("age_estimator", "trait_classifier"):
            target = os.path.join(Workdir(workdir).root, name)
            if not files.exists(target):
                files.copy_missing(os.path.join(Workdir(source).root, name), target)
    else:
        age_estimator.train_estimator(config, workdir)
        trait_classifier.train_trait_classifier(config, workdir)


def quality_of(report: dict) -> dict:
    """The benchmark's figures from an evaluation report: each with its 95% interval."""
    quality = {}
    for key in KEYS:
        quality[key], quality[f"{key}_ci"] = report["mean"].get(key), report["mean_ci"].get(key)
    for key in ADULT_CHILD_KEYS:
        quality[f"adult_child_{key}"] = report["adult_child"].get(key)
        quality[f"adult_child_{key}_ci"] = report["adult_child_ci"].get(key)
    child, child_ci = report["groups"][CHILD_GROUP], report["groups_ci"][CHILD_GROUP]
    for key in ("age_group_accuracy", "geometry_error", "geometry_error_baseline_input", "gt_l1_ratio"):
        quality[f"child_target_{key}"], quality[f"child_target_{key}_ci"] = child.get(key), child_ci.get(key)
    for key in ("estimator_accuracy_real", "estimator_mae_real", "two_sample_accuracy",
                "two_sample_accuracy_ci", "num_identities", "num_images", "num_cells",
                "num_adult_child_cells", "step"):
        quality[key] = report.get(key)
    quality["age_accuracy_vs_estimator"] = (
        quality["age_group_accuracy"] / quality["estimator_accuracy_real"]
        if quality["age_group_accuracy"] is not None and quality["estimator_accuracy_real"] else None)
    return quality


def main(_):
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    train_seconds = time.perf_counter() - start
    _evaluation_networks(config, workdir, flags.FLAGS.evaluation_networks)
    report = evaluate.evaluate(workdir, config.eval)  # the benchmark's evaluation settings
    quality = quality_of(report)
    quality.update(train_seconds_this_run=train_seconds, total_seconds=time.perf_counter() - start)
    run_dir = Workdir(workdir)
    print(files.read_text(run_dir.eval_report(report["step"], ".md")))
    q = quality
    print(f"SynthFaces step {q['step']}, {q['num_identities']} fresh identities, target != source: "
          f"age-group accuracy {q['age_group_accuracy']:.1%} (estimator on the real inputs "
          f"{q['estimator_accuracy_real']:.1%}; ratio {q['age_accuracy_vs_estimator']:.3f}), "
          f"0-9 targets {q['child_target_age_group_accuracy']:.1%}; ground-truth L1 / input "
          f"baseline {q['gt_l1_ratio']:.3f} (adult<->child {q['adult_child_gt_l1_ratio']:.3f}); "
          f"trait agreement {q['trait_agreement']:.1%} (true renders {q['trait_agreement_truth']:.1%})")
    path = os.path.join(run_dir.root, "quality.json")
    files.write_text(path, json.dumps(quality, indent=2))
    print(path)


if __name__ == "__main__":
    app.run(main)
