"""Loss curves of the train step on real batches, for checking that a change to the step
leaves what is learned unchanged.

    python benchmarks/loss_curves.py --config=configs/synthfaces.py --steps=300 --out=new.json
    python benchmarks/loss_curves.py --compare=old.json,new.json --plot=curves.png

The first form trains ``--steps`` steps from the config's seed on the config's dataset (the real
grain loader, so both runs see the same batches) and writes every step's metrics. The second
prints, per metric, the largest difference over the first 10 steps (where the two must agree to
rounding) and the mean of each curve over the last 100 steps, and draws both curves.
"""

import json

from absl import app, flags
import jax
from ml_collections import config_flags
import numpy as np
from PIL import Image, ImageDraw

from faceaging import age_guide, datasets, input_pipeline, mesh as mesh_lib, schedules, steps, train_state

config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
flags.DEFINE_integer("steps", 300, "Steps to train.")
flags.DEFINE_string("out", None, "Where to write the curves (JSON).")
flags.DEFINE_string("compare", None, "Two curve files A,B to compare.")
flags.DEFINE_string("plot", None, "PNG to draw the compared curves into.")
PLOTTED = ("d/total", "g/total", "g/adv", "g/age", "g/cycle", "g/identity")


def record(config, num_steps: int) -> dict:
    schedule = schedules.get_schedule(config.data.schedule)
    builder = datasets.prepare(config)
    source = input_pipeline.open_split(builder, "train", schedule)
    iterator = iter(input_pipeline.make_train_loader(config, source, schedule.num_groups))
    mesh = mesh_lib.make_mesh(config.mesh.num_devices)
    optimizers = train_state.make_optimizers(config)
    abstract, graphs = train_state.abstract_state(config, schedule.num_groups, optimizers)
    shardings = train_state.state_shardings(abstract, mesh_lib.replicated(mesh))
    state = train_state.create_train_state(config, schedule.num_groups, optimizers, shardings)
    guides = age_guide.for_step(config, schedule.num_groups)  # guides in the loss: untrained
    step = jax.jit(steps.make_train_step(config, graphs, optimizers, schedule.num_groups, **guides),
                   donate_argnums=0)
    curves = {}
    for _ in range(num_steps):
        batch = input_pipeline.to_global(next(iterator), mesh_lib.data_sharded(mesh))
        state, metrics = step(state, batch)
        for k, v in jax.device_get(metrics).items():
            curves.setdefault(k, []).append(float(v))
    return curves


def _smooth(values, width=20):
    v = np.asarray(values)
    return np.convolve(v, np.ones(width) / width, mode="valid") if len(v) >= width else v


def compare(a: dict, b: dict, plot: str | None) -> None:
    print(f"{'metric':24s} {'max |A-B| steps 1-10':>22s} {'A mean last 100':>16s} {'B mean last 100':>16s}")
    for k in sorted(set(a) & set(b)):
        first = np.max(np.abs(np.asarray(a[k][:10]) - np.asarray(b[k][:10])))
        print(f"{k:24s} {first:22.3g} {np.mean(a[k][-100:]):16.4f} {np.mean(b[k][-100:]):16.4f}")
    if not plot:
        return
    cell_w, cell_h, pad = 360, 200, 24
    image = Image.new("RGB", (cell_w * 3, (cell_h + pad) * 2), "white")
    draw = ImageDraw.Draw(image)
    for i, k in enumerate(PLOTTED):
        x0, y0 = (i % 3) * cell_w, (i // 3) * (cell_h + pad) + pad
        ya, yb = _smooth(a[k]), _smooth(b[k])
        lo, hi = min(ya.min(), yb.min()), max(ya.max(), yb.max())
        hi = hi if hi > lo else lo + 1
        draw.text((x0 + 6, y0 - pad + 6), f"{k} [{lo:.3g}, {hi:.3g}] (20-step mean)", fill="black")
        for ys, colour in ((ya, (40, 90, 200)), (yb, (220, 80, 40))):
            pts = [(x0 + 6 + (cell_w - 12) * j / max(1, len(ys) - 1),
                    y0 + cell_h - 6 - (cell_h - 12) * (y - lo) / (hi - lo)) for j, y in enumerate(ys)]
            draw.line(pts, fill=colour, width=2)
    draw.text((6, image.height - 14), "blue: A   orange: B", fill="black")
    image.save(plot)
    print(f"plot: {plot}")


def main(_):
    f = flags.FLAGS
    if f.compare:
        path_a, path_b = f.compare.split(",")
        with open(path_a) as fa, open(path_b) as fb:
            compare(json.load(fa), json.load(fb), f.plot)
        return
    curves = record(f.config, f.steps)
    with open(f.out, "w") as out:
        json.dump(curves, out)
    print(f"{f.steps} steps; last-100 means: " + ", ".join(
        f"{k} {np.mean(curves[k][-100:]):.4f}" for k in PLOTTED))


if __name__ == "__main__":
    app.run(main)
