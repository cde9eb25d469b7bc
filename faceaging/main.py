"""Command line: ``python -m faceaging.main --config=configs/utk.py --workdir=DIR``.

Exit codes: 0 done; 1 an error (one line on stderr names the file, field or step and what was
expected); 2 predict finished but some inputs failed or were skipped; 75 (``EXIT_PREEMPTED``)
training stopped on SIGTERM/SIGINT or a preemption notice after saving its checkpoint: run the
same command again to resume.

Modes: ``train`` (default; resumes from WORKDIR); ``predict`` (ages images with the
latest checkpoint's EMA generator); ``all`` (prepare data, train, age held-out faces);
``stats`` (label counts and a bar chart of the config's dataset); ``contact_sheet``
(SynthFaces identities x ages); ``train_estimator`` and ``train_traits`` (evaluation networks);
``train_age_guide`` and ``train_attribute_guide`` (the frozen classifiers of
``config.loss.age_guide`` and ``config.loss.attribute_guide``, trained before the GAN otherwise);
``eval`` (metrics of the latest checkpoint; an optional ``--config`` supplies its ``eval``
section, e.g. ``--config.eval.fid_weights=PATH``).
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

from faceaging import age_estimator, age_guide, align, contact_sheet, dataset_stats, evaluate, predict, run_all
from faceaging import checkpointing, config_checks, input_pipeline, stopping, trait_classifier, train
from faceaging import workdir_lock
from faceaging.datasets import utkface
from faceaging.workdir import Workdir
from faceaging.weight_files import WeightsError

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Training config file (e.g. configs/utk.py:tiny).",
                                lock_config=True)
flags.DEFINE_string("workdir", None, "Directory for checkpoints, samples and event files.")
flags.DEFINE_enum("mode", "train", ["train", "predict", "all", "stats", "contact_sheet",
                                    "train_estimator", "train_traits", "train_age_guide",
                                    "train_attribute_guide", "eval"],
                  "What to run.")
flags.DEFINE_string("input", None, "predict: an image, a folder (recursive), a glob, or a .txt list of paths.")
flags.DEFINE_string("output_dir", None, "predict: where aged images, grids and GIFs go.")
flags.DEFINE_string("checkpoint", None, "predict: WORKDIR/checkpoints/STEP (default: latest in --workdir).")
flags.DEFINE_string("target_groups", "all", "predict: 'all' or comma-separated group indices.")
flags.DEFINE_list("target_ages", None, "predict: ages (e.g. 5,30,70), mapped to groups by the run's schedule.")
flags.DEFINE_bool("gif", False, "predict: also write an animated progression through the targets.")
flags.DEFINE_integer("batch_size", None, "predict: images per batch (default: the run's batch size).")
flags.DEFINE_string("dtype", None, "predict: compute dtype, e.g. bfloat16 (default: the run's).")
flags.DEFINE_bool("overwrite", False, "predict: replace existing output files.")
flags.DEFINE_bool("aligned", False, "predict: inputs are aligned face crops; skip face detection.")
flags.DEFINE_bool("paste_back", False, "predict: also write each aged face blended into the photo.")
flags.DEFINE_integer("sheet_identities", 8, "contact_sheet: number of identities (rows).")
flags.DEFINE_list("sheet_ages", ["2", "8", "15", "25", "35", "45", "55", "65", "75", "85", "95"],
                  "contact_sheet: ages (columns).")
flags.DEFINE_integer("restore_step", None,
                     "train: resume from this step instead of the newest one that restores (later "
                     "steps are moved to WORKDIR/checkpoints_set_aside/, not deleted).")
flags.DEFINE_bool("reset_data_iterator", False,
                  "train: keep the checkpoint's train state but not its data position; training "
                  "continues at the step's position in the current dataset's order (after the "
                  "dataset was rebuilt with a different number of images).")
flags.DEFINE_bool("allow_config_changes", False,
                  "train: resume although learning rates, loss weights, batch size or other "
                  "non-shape fields differ from the checkpoint's config.")
flags.DEFINE_bool("break_lock", False,
                  "train: take WORKDIR/train.lock from a trainer on another host that is known "
                  "to be gone.")
flags.DEFINE_bool("jax_distributed", False,
                  "Call jax.distributed.initialize() first: every process of a multi-host run "
                  "(TPU pod slices and SLURM are detected; elsewhere give the three flags below).")
flags.DEFINE_string("coordinator_address", None,
                    "--jax_distributed: HOST:PORT of process 0 (default: detected).")
flags.DEFINE_integer("num_processes", None, "--jax_distributed: processes in the run (default: detected).")
flags.DEFINE_integer("process_id", None, "--jax_distributed: this process's index (default: detected).")
flags.DEFINE_string(
    "compilation_cache", os.path.join(os.path.expanduser("~"), ".cache", "faceaging", "xla"),
    "JAX's persistent compilation cache: a resumed or repeated run loads its compiled steps "
    "instead of compiling them again. '' turns it off.")
flags.register_multi_flags_validator(
    ["workdir", "checkpoint"], lambda f: f["workdir"] is not None or f["checkpoint"] is not None,
    "--workdir is required (predict also accepts --checkpoint=WORKDIR/checkpoints/STEP)")


class _QuietLibraryInfo(std_logging.Filter):
    """Drops INFO chatter of checkpoint internals so training lines stay readable, and the stack
    traces that Orbax's worker threads and their asyncio tasks log for a failed write (the
    training loop reports it in one line)."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        orbax = "/orbax/" in record.pathname
        if orbax or record.name == "asyncio":
            record.exc_info, record.exc_text = None, None
        return record.levelno >= std_logging.WARNING or not orbax


def _is_closed_event_loop(kind, value) -> bool:
    return kind is RuntimeError and str(value) == "Event loop is closed"


def ignore_closed_event_loops() -> None:
    """Drops "Event loop is closed" errors from sys.excepthook and sys.unraisablehook:
    tensorstore calls back into the event loop of an Orbax save that already failed (and that
    the training loop reports in one line), once per pending write."""
    excepthook, unraisablehook = sys.excepthook, sys.unraisablehook

    def on_exception(kind, value, traceback):
        if not _is_closed_event_loop(kind, value):
            excepthook(kind, value, traceback)

    def on_unraisable(args):
        if not _is_closed_event_loop(args.exc_type, args.exc_value):
            unraisablehook(args)

    sys.excepthook, sys.unraisablehook = on_exception, on_unraisable


def enable_compilation_cache(path: str) -> None:
    """Caches every compiled program that took over a second to compile under ``path``.

    Not on several CPU devices (simulated with --xla_force_host_platform_device_count): XLA:CPU
    executables with cross-device collectives deadlock when loaded from the cache.
    """
    if jax.default_backend() == "cpu" and jax.device_count() > 1:
        logging.info("Persistent compilation cache off: %d CPU devices", jax.device_count())
        return
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def _train():
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir, train.ResumeOptions(
        restore_step=FLAGS.restore_step, reset_data_iterator=FLAGS.reset_data_iterator,
        allow_config_changes=FLAGS.allow_config_changes, break_lock=FLAGS.break_lock))


def _predict():
    if not FLAGS.input or not FLAGS.output_dir:
        raise app.UsageError("--mode=predict needs --input and --output_dir")
    summary = predict.predict(
        FLAGS.workdir, FLAGS.input, FLAGS.output_dir, checkpoint=FLAGS.checkpoint,
        target_groups=FLAGS.target_groups, target_ages=FLAGS.target_ages, gif=FLAGS.gif,
        overwrite=FLAGS.overwrite, batch_size=FLAGS.batch_size, dtype=FLAGS.dtype,
        aligned=FLAGS.aligned, paste_back=FLAGS.paste_back)
    print(f"done: {summary.done}, skipped (outputs exist): {summary.skipped}, "
          f"failed: {summary.failed} -> {FLAGS.output_dir}")
    if not summary.ok:
        sys.exit(predict.EXIT_SOME_FAILED)


def _all():
    print(f"Aging grid of held-out faces: {run_all.run_all(FLAGS.config, FLAGS.workdir)}")


def _stats():
    stats, path = dataset_stats.write_report(FLAGS.config, FLAGS.workdir)
    print(json.dumps(stats, indent=2))
    print(f"Bar chart: {path}")


def _contact_sheet():
    path = contact_sheet.write_contact_sheet(FLAGS.config.data.synthfaces.seed, FLAGS.sheet_identities,
                                             [int(a) for a in FLAGS.sheet_ages], FLAGS.workdir)
    print(f"Contact sheet: {path}")


def _train_estimator():
    print(json.dumps(age_estimator.train_estimator(FLAGS.config, FLAGS.workdir), indent=2))


def _train_traits():
    print(json.dumps(trait_classifier.train_trait_classifier(FLAGS.config, FLAGS.workdir), indent=2))


def _train_age_guide():
    print(json.dumps(age_guide.train_guide(FLAGS.config, FLAGS.workdir), indent=2))


def _train_attribute_guide():
    print(json.dumps(age_guide.train_guide(FLAGS.config, FLAGS.workdir, age_guide.ATTRIBUTES),
                     indent=2))


def _eval():
    report = evaluate.evaluate(FLAGS.workdir, FLAGS.config.eval if FLAGS.config else None)
    print(json.dumps(report["mean"], indent=2))
    print(f"Report: {Workdir(FLAGS.workdir).eval_report(report['step'], '.md')}")


MODES = {"train": _train, "predict": _predict, "all": _all, "stats": _stats,
         "contact_sheet": _contact_sheet, "train_estimator": _train_estimator,
         "train_traits": _train_traits, "train_age_guide": _train_age_guide,
         "train_attribute_guide": _train_attribute_guide, "eval": _eval}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    logging.get_absl_handler().addFilter(_QuietLibraryInfo())
    ignore_closed_event_loops()
    if FLAGS.jax_distributed:
        if not os.environ.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION"):  # CPU devices talk via gloo
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=FLAGS.coordinator_address,
                                   num_processes=FLAGS.num_processes, process_id=FLAGS.process_id)
    if FLAGS.compilation_cache:
        enable_compilation_cache(FLAGS.compilation_cache)
    logging.info("JAX process %d/%d, devices: %s", jax.process_index(), jax.process_count(),
                 jax.devices())
    if FLAGS.mode not in ("predict", "eval") and FLAGS.config is None:
        raise app.UsageError(f"--mode={FLAGS.mode} needs --config")
    try:
        MODES[FLAGS.mode]()
    except stopping.Preempted as e:
        logging.warning("%s", e)
        print(f"preempted: {e}", file=sys.stderr)
        sys.exit(stopping.EXIT_PREEMPTED)
    except config_checks.ConfigError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)
    except USER_ERRORS as e:
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)


# Errors whose message says all a user needs: printed as one line, no traceback.
USER_ERRORS = (utkface.DataNotFoundError, predict.PredictError, align.AlignmentUnavailable,
               FileNotFoundError, WeightsError, workdir_lock.WorkdirUnavailable,
               checkpointing.CheckpointError, train.NonFiniteLossError,
               input_pipeline.ImageDecodeError)


def parse_flags(argv):
    """absl's flag parsing, with a bad ``--config.FIELD=VALUE`` override as one line."""
    try:
        return app.parse_flags_with_usage(argv)
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        overrides = [a for a in argv[1:] if a.startswith("--config.")]
        text = str(e).encode("utf-8", "backslashreplace").decode("unicode_escape")  # un-repr
        detail = ": ".join(line.strip("'\" ") for line in text.splitlines() if line.strip("'\" "))
        print(f"error: bad config override among {' '.join(overrides) or '--config'}: {detail}",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
