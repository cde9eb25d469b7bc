"""Command line: ``python -m faceaging.main --config=configs/utk.py --workdir=DIR``.

Modes: ``train`` (default; resumes from WORKDIR); ``predict`` (ages images with the
latest checkpoint's EMA generator); ``all`` (prepare data, train, age held-out faces);
``stats`` (label counts and a bar chart of the config's dataset); ``contact_sheet``
(SynthFaces identities x ages).
"""

import json
import os

import logging as std_logging
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from faceaging import dataset_reports, grids, predict, run_all, train
from faceaging.datasets import utkface

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (e.g. configs/utk.py:tiny).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, samples and event files.")
flags.DEFINE_enum("mode", "train", ["train", "predict", "all", "stats", "contact_sheet"],
                  "What to run.")
flags.DEFINE_string("input", None, "predict: an image file or a folder of images.")
flags.DEFINE_string("output_dir", None, "predict: where aged images and grids go.")
flags.DEFINE_bool("overwrite", False, "predict: replace existing output files.")
flags.DEFINE_integer("sheet_identities", 8, "contact_sheet: number of identities (rows).")
flags.DEFINE_list("sheet_ages", ["2", "8", "15", "25", "35", "45", "55", "65", "75", "85", "95"],
                  "contact_sheet: ages (columns).")
flags.DEFINE_bool("jax_distributed", False,
                  "Call jax.distributed.initialize() first (multi-host TPU pods, SLURM).")
flags.mark_flags_as_required(["workdir"])


class _QuietLibraryInfo(std_logging.Filter):
    """Drops INFO chatter of checkpoint internals so training lines stay readable."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return record.levelno >= std_logging.WARNING or "/orbax/" not in record.pathname


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraryInfo())
    if FLAGS.jax_distributed:
        jax.distributed.initialize()
    logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
                 jax.devices())
    if FLAGS.mode != "predict" and FLAGS.config is None:
        raise app.UsageError(f"--mode={FLAGS.mode} needs --config")
    try:
        if FLAGS.mode == "train":
            train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
        elif FLAGS.mode == "predict":
            if not FLAGS.input or not FLAGS.output_dir:
                raise app.UsageError("--mode=predict needs --input and --output_dir")
            predict.predict(FLAGS.workdir, FLAGS.input, FLAGS.output_dir, overwrite=FLAGS.overwrite)
        elif FLAGS.mode == "all":
            print(f"Aging grid of held-out faces: {run_all.run_all(FLAGS.config, FLAGS.workdir)}")
        elif FLAGS.mode == "stats":
            stats = dataset_reports.label_counts(FLAGS.config)
            os.makedirs(FLAGS.workdir, exist_ok=True)
            path = os.path.join(FLAGS.workdir, "dataset_stats.png")
            grids.save_png(dataset_reports.bar_chart(stats, f"{FLAGS.config.data.name}: all splits"), path)
            print(json.dumps(stats, indent=2))
            print(f"Bar chart: {path}")
        else:
            s = FLAGS.config.data.synthfaces
            path = os.path.join(FLAGS.workdir, "contact_sheet.png")
            os.makedirs(FLAGS.workdir, exist_ok=True)
            grids.save_png(dataset_reports.contact_sheet(s.seed, FLAGS.sheet_identities,
                                                         [int(a) for a in FLAGS.sheet_ages]), path)
            print(f"Contact sheet: {path}")
    except (utkface.DataNotFoundError, predict.PredictError, FileNotFoundError) as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
