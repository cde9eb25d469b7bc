"""Where a SynthFaces run's aged faces differ from the truth more than the unchanged input does.

    python benchmarks/error_by_region.py --workdir=W [--identities=40]

Ages ``--identities`` fresh evaluation identities (each at one age of every group, as
``--mode=eval`` does) to every group with the run's EMA aging generator, and prints the mean L1
(0-255 levels, over target != source cells) of the unchanged input and of the aged image to the
true render, in rings by distance from the image centre (the head, its hair outline, the outer
ring, the corners), each ring's share of the aged image's extra error (of its gain, when the
aged image is the closer), and per target group the mean colour shift of the aged images
against the truth. Then, per target group, the same L1 split between the pixels the true aging
changes (mean over channels above ``CHANGED_LEVELS``) and those it leaves alone, with the share
of the true change the aged images make there (their change from the input projected on the
true one: 1 = all of it, 0 = none).
"""

from absl import app, flags
import ml_collections
import numpy as np

from faceaging import evaluate, run as run_lib

flags.DEFINE_string("workdir", None, "A trained SynthFaces run.", required=True)
flags.DEFINE_integer("identities", 40, "Fresh identities (x one source age per group).")
FLAGS = flags.FLAGS

CHANGED_LEVELS = 12.75  # 5% of the 0-255 range
# Rings as fractions of the image size (at 32x32: r < 8, 8-12, 12-16, >= 16 pixels).
RINGS = (("centre", 0.0, 0.25), ("hair ring", 0.25, 0.375), ("outer ring", 0.375, 0.5),
         ("corners", 0.5, np.inf))


def ring_masks(size: int) -> dict[str, np.ndarray]:
    """{ring name: (size, size) bool}: pixels by distance from the centre, in image sizes."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2 + 0.5, xx - size / 2 + 0.5) / size
    return {name: (r >= lo) & (r < hi) for name, lo, hi in RINGS}


def target_cells(ctx):
    """Per target group: (inputs, true renders, aged images) of its target != source cells, as
    float64 0-255 arrays."""
    for group in range(ctx.aged.shape[1]):
        other = ctx.source_groups != group
        yield (ctx.images[other].astype(np.float64),
               ctx.true_renders(group)[other].astype(np.float64),
               ctx.aged[other, group].astype(np.float64))


def error_maps(ctx) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(input's mean L1 map, aged images' mean L1 map, per target group the mean RGB shift of
    the aged images against the truth), over target != source cells."""
    total_input = total_aged = 0.0
    count, shifts = 0, []
    for image, truth, aged in target_cells(ctx):
        total_input = total_input + np.abs(image - truth).mean(-1).sum(0)
        total_aged = total_aged + np.abs(aged - truth).mean(-1).sum(0)
        count += len(image)
        shifts.append((aged - truth).mean(axis=(0, 1, 2)))
    return total_input / count, total_aged / count, shifts


def change_split(ctx) -> list[dict[str, float]]:
    """Per target group over target != source cells: the share of pixels the truth changes, the
    input's and the aged images' mean L1 on those pixels and on the rest, and the share of the
    true change made on the changed pixels."""
    rows = []
    for image, truth, aged in target_cells(ctx):
        true_change = truth - image
        changed = np.abs(true_change).mean(-1) > CHANGED_LEVELS
        error = lambda x, mask: float(np.abs(x - truth).mean(-1)[mask].mean())
        made = ((aged - image) * true_change).sum(-1)[changed].sum()
        rows.append(dict(changed=float(changed.mean()), input_changed=error(image, changed),
                         aged_changed=error(aged, changed),
                         made=float(made / np.square(true_change).sum(-1)[changed].sum()),
                         input_rest=error(image, ~changed), aged_rest=error(aged, ~changed)))
    return rows


def main(argv):
    del argv
    trained = run_lib.load(FLAGS.workdir, generators=run_lib.GENERATORS)
    eval_config = ml_collections.ConfigDict(trained.config.eval.to_dict())
    eval_config.fresh_identities = FLAGS.identities
    ctx = evaluate.make_context(trained, eval_config)
    unchanged, aged, shifts = error_maps(ctx)
    extra = (aged - unchanged).sum()
    print(f"{FLAGS.workdir}: {FLAGS.identities} fresh identities, target != source cells, "
          f"L1 to the true render in 0-255 levels")
    print(f"{'region':12s} {'input':>7s} {'aged':>7s} {'share of extra':>15s}")
    print(f"{'whole image':12s} {unchanged.mean():7.2f} {aged.mean():7.2f} {1.0:15.2f}")
    for name, mask in ring_masks(unchanged.shape[0]).items():
        share = (aged - unchanged)[mask].sum() / extra if extra else float("nan")
        print(f"{name:12s} {unchanged[mask].mean():7.2f} {aged[mask].mean():7.2f} {share:15.2f}")
    for label, shift in zip(trained.schedule.labels, shifts):
        print(f"mean RGB shift against the truth, target {label}: {np.round(shift, 2).tolist()}")
    print(f"pixels the true aging changes by more than {CHANGED_LEVELS} levels, and the rest:")
    print(f"{'target':8s} {'changed':>8s} {'input':>7s} {'aged':>7s} {'made':>6s} "
          f"{'rest: input':>12s} {'aged':>6s}")
    for label, row in zip(trained.schedule.labels, change_split(ctx)):
        print(f"{label:8s} {row['changed']:8.1%} {row['input_changed']:7.1f} "
              f"{row['aged_changed']:7.1f} {row['made']:6.2f} {row['input_rest']:12.2f} "
              f"{row['aged_rest']:6.2f}")


if __name__ == "__main__":
    app.run(main)
