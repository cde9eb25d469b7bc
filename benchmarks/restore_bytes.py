"""Bytes a loader reads from a checkpoint: the whole train state vs ``run.load`` (EMA only).

    python benchmarks/restore_bytes.py --workdir=runs/seed [--generators=aging]

Reads ``rchar`` of /proc/self/io (bytes this process read through system calls) around each
restore, in separate subprocesses so no page or metadata cache is shared. Linux only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags

flags.DEFINE_string("workdir", None, "A trained run.", required=True)
flags.DEFINE_list("generators", ["aging"], "EMA generators run.load restores.")
flags.DEFINE_string("_measure", None, "internal: 'full' or 'ema' (one measurement, as JSON).")


def _read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


def _measure(kind: str, workdir: str, generators) -> dict:
    import jax
    from faceaging import checkpointing, run as run_lib, schedules, train_state

    if kind == "full":  # what predict did before run.py: the whole TrainState
        config, _ = run_lib.load_config(run_lib.resolve(workdir)[0])
        schedule = schedules.get_schedule(config.data.schedule)
        abstract, _ = train_state.abstract_state(config, schedule.num_groups,
                                                 train_state.make_optimizers(config))
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = checkpointing.with_shardings(abstract, jax.tree.map(lambda _: device, abstract))
        manager = checkpointing.make_manager(run_lib.resolve(workdir)[0].checkpoints, read_only=True)
        start_bytes, start = _read_bytes(), time.perf_counter()
        state, _, _ = checkpointing.restore(manager, target)
        jax.block_until_ready(state)
        leaves = jax.tree.leaves(state)
    else:
        start_bytes, start = _read_bytes(), time.perf_counter()
        trained = run_lib.load(workdir, generators=tuple(generators))
        leaves = jax.tree.leaves(trained.ema_params)
        jax.block_until_ready(leaves)
    return {"kind": kind, "bytes_read": _read_bytes() - start_bytes,
            "seconds": time.perf_counter() - start,
            "array_bytes": sum(int(x.size) * x.dtype.itemsize for x in leaves)}


def _on_disk(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, n)) for d, _, names in os.walk(path) for n in names)


def main(_):
    f = flags.FLAGS
    if f._measure:
        print(json.dumps(_measure(f._measure, f.workdir, f.generators)))
        return
    from faceaging import run as run_lib
    workdir, _ = run_lib.resolve(f.workdir)
    print(f"checkpoints on disk: {_on_disk(workdir.checkpoints) / 2**20:.1f} MiB in {workdir.checkpoints}")
    for kind in ("full", "ema"):
        out = subprocess.run([sys.executable, __file__, f"--workdir={f.workdir}", f"--_measure={kind}",
                              f"--generators={','.join(f.generators)}"],
                             check=True, capture_output=True, text=True).stdout
        m = json.loads(out.strip().splitlines()[-1])
        what = "whole train state" if kind == "full" else f"run.load (EMA {'+'.join(f.generators)})"
        print(f"{what:34s} read {m['bytes_read'] / 2**20:8.1f} MiB in {m['seconds']:.2f} s "
              f"(arrays restored: {m['array_bytes'] / 2**20:.1f} MiB)")


if __name__ == "__main__":
    app.run(main)
