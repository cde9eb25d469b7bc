"""Train-state bytes each device holds, replicated vs FSDP (``config.mesh.fsdp``).

    python benchmarks/fsdp_bytes.py [--config=configs/seed.py] [--devices=8]

Shapes only (``jax.eval_shape``): nothing is allocated or trained, so any config fits on CPU.
Parameters, EMA and Adam moments are reported apart; on the CPU the mesh is of simulated
devices (``--xla_force_host_platform_device_count``), as sharding does not depend on the kind.
"""

from __future__ import annotations

import os
import sys

from absl import app, flags
from ml_collections import config_flags

config_flags.DEFINE_config_file("config", "configs/seed.py", "Config to measure.")
flags.DEFINE_integer("devices", 8, "Devices in the data axis (simulated on the CPU).")


def _mib(n: int) -> str:
    return f"{n / 2**20:9.2f} MiB"


def main(_):
    import jax

    from faceaging import mesh as mesh_lib, schedules, train_state

    config = flags.FLAGS.config
    mesh = mesh_lib.make_mesh(flags.FLAGS.devices)
    groups = schedules.get_schedule(config.data.schedule).num_groups
    abstract, _ = train_state.abstract_state(config, groups, train_state.make_optimizers(config))
    parts = {"parameters": ("g_params", "d_params"), "EMA": ("ema_params",),
             "optimizer": ("g_opt_state", "d_opt_state")}
    print(f"{config_flags.get_config_filename(flags.FLAGS['config'])}: {mesh.size} devices, "
          f"{sum(x.size for x in jax.tree.leaves(abstract)):,} numbers in the train state")
    print(f"{'':12s} {'replicated':>14s} {'FSDP':>14s}   per device")
    totals = {False: 0, True: 0}
    for name, fields in parts.items():
        row = {}
        for fsdp in (False, True):
            shardings = train_state.mesh_shardings(abstract, mesh, fsdp)
            row[fsdp] = sum(train_state.bytes_per_device(getattr(abstract, f), getattr(shardings, f))
                            for f in fields)
            totals[fsdp] += row[fsdp]
        print(f"{name:12s} {_mib(row[False]):>14s} {_mib(row[True]):>14s}")
    print(f"{'total':12s} {_mib(totals[False]):>14s} {_mib(totals[True]):>14s}   "
          f"({totals[True] / totals[False]:.3f}x)")


if __name__ == "__main__":
    if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
        devices = next((a.split("=")[1] for a in sys.argv if a.startswith("--devices=")), "8")
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                                   f" --xla_force_host_platform_device_count={devices}")
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    app.run(main)
