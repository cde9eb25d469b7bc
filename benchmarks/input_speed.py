"""Input-pipeline speed: images/s of the real grain training loader, per worker count.

    python benchmarks/input_speed.py [--config=configs/utk.py] [--workers=0,1,2] \
        [--batches=40] [--manual_dir=DIR] [--consume=STEP_JSON]

Runs ``input_pipeline.make_train_loader`` exactly as training does (read array_record records,
decode 200x200 JPEGs, resize to ``config.image_size``, flip, draw targets, batch) and reports
images/s after the first batch (worker start-up is reported separately). Data: UTKFace from
``--manual_dir`` when given, else SynthFaces rendered into a temporary folder (the same 200x200
JPEG format). ``--consume`` reads ``train_step_speed.py --json`` output and prints, beside the
loader rates, how many images/s each measured train step consumes, so one sees whether the
loader keeps that device fed.
"""

import json
import os
import tempfile
import time

from absl import app, flags
from ml_collections import config_flags

from faceaging import datasets, input_pipeline, schedules

config_flags.DEFINE_config_file("config", "configs/utk.py", "Config file.", lock_config=True)
flags.DEFINE_string("workers", "0,1,2", "Comma-separated grain worker counts to measure.")
flags.DEFINE_integer("batches", 40, "Timed batches per worker count.")
flags.DEFINE_integer("identities", 120, "SynthFaces identities to render when no --manual_dir.")
flags.DEFINE_string("manual_dir", None, "A folder holding UTKFace (else SynthFaces is rendered).")
flags.DEFINE_string("consume", None, "JSON lines from train_step_speed.py --json to compare with.")
flags.DEFINE_string("json", None, "Append the figures as JSON lines to this file.")


def loader_rate(config, source, num_groups: int, workers: int, batches: int) -> dict:
    start = time.perf_counter()
    iterator = iter(input_pipeline.make_train_loader(config, source, num_groups, worker_count=workers))
    next(iterator)
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    seconds = time.perf_counter() - start
    return {"workers": workers, "first_batch_s": first,
            "img_per_s": batches * config.train.batch_size / seconds}


def main(_):
    f = flags.FLAGS
    config = f.config.copy_and_resolve_references()
    with tempfile.TemporaryDirectory() as tmp:
        config.data.data_dir = os.path.join(tmp, "tfds")
        if f.manual_dir:
            config.data.name, config.data.manual_dir = "utk_face", f.manual_dir
        else:
            config.data.name, config.data.manual_dir = "synth_faces", os.path.join(tmp, "manual")
            with config.unlocked():
                config.data.synthfaces = {"seed": 0, "num_identities": f.identities,
                                          "ages_per_identity": 10}
            config.data.schedule = "0-9,10-19,20-34,35-49,50-69,70+"
        schedule = schedules.get_schedule(config.data.schedule)
        start = time.perf_counter()
        builder = datasets.prepare(config)
        prepare_s = time.perf_counter() - start
        source = input_pipeline.open_split(builder, "train", schedule)
        print(f"{config.data.name}: {len(source)} training images (prepared in {prepare_s:.0f}s); "
              f"{config.image_size}px, batch {config.train.batch_size}, {os.cpu_count()} CPUs",
              flush=True)
        rows = []
        for workers in (int(w) for w in f.workers.split(",")):
            row = loader_rate(config, source, schedule.num_groups, workers, f.batches)
            rows.append(row)
            print(f"loader | {workers} worker(s) | {row['img_per_s']:.0f} img/s "
                  f"(first batch after {row['first_batch_s']:.1f}s)", flush=True)
    if f.consume and os.path.exists(f.consume):
        best = max(r["img_per_s"] for r in rows)
        with open(f.consume) as lines:
            for line in lines:
                step = json.loads(line)
                if "img_per_s" not in step or "steps" not in step:
                    continue
                need = step["img_per_s"]
                print(f"consumer | {step['label']} ({step['device']}, {step['image_size']}px, "
                      f"batch {step['batch']}) trains on {need:.0f} img/s: the best loader rate "
                      f"is {best / need:.1f}x that", flush=True)
    if f.json:
        with open(f.json, "a") as out:
            for row in rows:
                out.write(json.dumps({"label": "input", "image_size": config.image_size,
                                      "batch": config.train.batch_size, **row}) + "\n")


if __name__ == "__main__":
    app.run(main)
