"""Aging quality on held-out SynthFaces identities, against ground truth and baselines.

    python benchmarks/quality_synthfaces.py [--config=configs/synthfaces.py] \
        [--workdir=runs/quality_synthfaces] [--config.train.steps=5000]

Trains the config for its step budget (resuming if the workdir has checkpoints), trains the
independent age estimator and the trait classifier, runs ``--mode=eval``, prints the per-group
table and a one-line summary, and writes quality.json (its path printed last).
``train_seconds_this_run`` is the GAN's training time in this invocation (0 when resumed at
the budget); ``total_seconds`` adds the estimator, the trait classifier and evaluation.
"""

import json
import os
import time

from absl import app, flags
from ml_collections import config_flags

from faceaging import age_estimator, evaluate, files, trait_classifier, train
from faceaging.workdir import Workdir

config_flags.DEFINE_config_file("config", "configs/synthfaces.py", "SynthFaces config.", lock_config=True)
flags.DEFINE_string("workdir", "runs/quality_synthfaces", "Where the run and its evaluation go.")

KEYS = ("age_group_accuracy", "age_mae", "gt_l1", "gt_l1_baseline_input", "gt_l1_baseline_mean",
        "gt_ssim", "trait_agreement", "trait_agreement_truth", "cycle_psnr", "cycle_ssim")


def main(_):
    config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    train_seconds = time.perf_counter() - start
    estimator = age_estimator.train_estimator(config, workdir)
    traits = trait_classifier.train_trait_classifier(config, workdir)
    report = evaluate.evaluate(workdir)
    quality = {key: report["mean"][key] for key in KEYS}
    quality.update(estimator_accuracy_real=estimator["estimator_accuracy_real"],
                   estimator_mae_real=estimator["estimator_mae_real"], **traits,
                   step=report["step"], train_seconds_this_run=train_seconds,
                   total_seconds=time.perf_counter() - start)
    run_dir = Workdir(workdir)
    print(open(run_dir.eval_report(report["step"], ".md")).read())
    print(f"SynthFaces step {report['step']}: age-group accuracy {quality['age_group_accuracy']:.1%} "
          f"(estimator on reals {quality['estimator_accuracy_real']:.1%}), ground-truth L1 "
          f"{quality['gt_l1']:.2f} vs input {quality['gt_l1_baseline_input']:.2f} / mean "
          f"{quality['gt_l1_baseline_mean']:.2f}, trait agreement {quality['trait_agreement']:.1%}")
    path = os.path.join(run_dir.root, "quality.json")
    files.write_text(path, json.dumps(quality, indent=2))
    print(path)


if __name__ == "__main__":
    app.run(main)
