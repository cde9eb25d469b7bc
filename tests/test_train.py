import os

import jax
import jax.numpy as jnp
import numpy as np

from helpers import EIGEN_WORKERS, SMALLEST_MODEL, adam_parameter_atol
from faceaging import checkpointing, mesh as mesh_lib, steps, train, train_state
from faceaging.workdir import Workdir

GROUPS = 14


def make_step(config):
    mesh = mesh_lib.make_mesh(config.mesh.num_devices)
    optimizers = train_state.make_optimizers(config)
    abstract, graphs = train_state.abstract_state(config, GROUPS, optimizers)
    shardings = train_state.mesh_shardings(abstract, mesh, config.mesh.fsdp)
    state = train_state.create_train_state(config, GROUPS, optimizers, shardings)
    step = jax.jit(steps.make_train_step(config, graphs, optimizers, GROUPS),
                   in_shardings=(shardings, mesh_lib.data_sharded(mesh)),
                   out_shardings=(shardings, mesh_lib.replicated(mesh)), donate_argnums=0)
    return state, step, mesh


def fixed_batch(config, mesh, seed=0):
    rng = np.random.default_rng(seed)
    n, s = config.train.batch_size, config.image_size
    source = rng.integers(0, GROUPS, n).astype(np.int32)
    batch = {"image": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8), "source": source,
             "target": ((source + rng.integers(1, GROUPS, n)) % GROUPS).astype(np.int32)}
    return {k: jax.device_put(v, mesh_lib.data_sharded(mesh)) for k, v in batch.items()}


def test_repeated_batch_reduces_reconstruction_losses(tiny_config):
    tiny_config.loss.preserve = 1.0
    state, step, mesh = make_step(tiny_config)
    batch = fixed_batch(tiny_config, mesh)
    history = []
    for _ in range(60):
        state, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
    # The last 5 steps' mean against the first step (one step's value moves by a few percent).
    first, last = history[0], {k: np.mean([m[k] for m in history[-5:]]) for k in history[0]}
    assert last["g/cycle"] < 0.8 * first["g/cycle"]
    assert last["g/reconstruction"] < 0.8 * first["g/reconstruction"]
    assert last["g/preserve"] < first["g/preserve"]
    assert history[-1]["nonfinite_steps"] == 0
    assert int(state.step) == 60
    assert any(m["d/r1"] > 0 for m in history)  # lazy R1 ran on some steps


def test_generator_uses_the_age_code_to_hit_each_target_group(tiny_config):
    """One face repeated 8 times, each copy with its own target group. With only the age loss and
    a frozen discriminator, G learns to make D's age head read each copy as its target; without
    the age code all copies would come out alike and at most one of the 8 could match in any
    step (accuracy <= 1/8 every step), so a mean of 1.5/8 over the last 20 steps needs the code."""
    tiny_config.loss.update(adversarial=0.0, cycle=0.0, reconstruction=0.0, identity=0.0, preserve=0.0)
    tiny_config.optim.update(g_learning_rate=3e-3, d_learning_rate=0.0)
    state, step, mesh = make_step(tiny_config)
    one = fixed_batch(tiny_config, mesh)
    n = tiny_config.train.batch_size
    targets = np.arange(1, n + 1, dtype=np.int32)  # 8 distinct groups, none the source (0)
    batch = {"image": np.repeat(np.asarray(jax.device_get(one["image"]))[:1], n, axis=0),
             "source": np.zeros(n, np.int32), "target": targets}
    batch = {k: jax.device_put(v, mesh_lib.data_sharded(mesh)) for k, v in batch.items()}
    best_without_code = 1 / n
    history = []
    # The code's pull on the output is weak at first: 1/8 until ~100 steps; the last 20 steps'
    # mean at 240 measured 0.25 (tests' XLA flags) and 0.36 (XLA's default optimisation).
    for _ in range(240):
        state, metrics = step(state, batch)
        history.append(jax.device_get(metrics))
    early, late = history[:10], history[-20:]
    assert np.mean([m["g/age"] for m in late]) < np.mean([m["g/age"] for m in early])
    accuracy = np.mean([m["g/age_accuracy_fake"] for m in late])
    assert accuracy >= 1.5 * best_without_code, (accuracy, best_without_code)


def test_xla_cpu_pool_has_workers_to_spare_beyond_the_devices():
    """The FSDP test's guard (conftest.py): XLA:CPU's thread pool has NPROC workers, not just one
    per simulated device, so devices waiting in collectives cannot hold every worker."""
    jax.devices()
    names = []
    for task in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{task}/comm") as f:
            names.append(f.read().strip())
    workers = sum(name == "tf_XLAEigen" for name in names)
    assert workers >= EIGEN_WORKERS > jax.device_count(), (workers, jax.device_count())


def test_fsdp_trains_as_replicated_with_an_eighth_of_the_state_per_device(tiny_config, monkeypatch):
    """config.mesh.fsdp splits parameters, EMA and Adam moments over 8 devices: the same losses
    (up to the order of float sums), each large leaf stored once across the devices."""
    tiny_config.mesh.num_devices = -1
    # Every part of the model at its smallest (two programs on 8 devices compile here), with
    # leaves of any size split (at full size only those of 1024+ numbers are).
    tiny_config.model.update(SMALLEST_MODEL)
    monkeypatch.setattr(mesh_lib, "FSDP_MIN_ELEMENTS", 64)
    losses, states = {}, {}
    for fsdp in (False, True):
        tiny_config.mesh.fsdp = fsdp
        state, step, mesh = make_step(tiny_config)
        history = []
        for i in range(3):
            state, metrics = step(state, fixed_batch(tiny_config, mesh, seed=i))
            history.append(jax.device_get(metrics))
        losses[fsdp], states[fsdp] = history, state
    tags = [t for t in losses[False][0] if t.startswith(("g/", "d/")) and "accuracy" not in t]
    worst = max(abs(a[t] - b[t]) / max(abs(b[t]), 1e-3) for a, b in zip(losses[True], losses[False])
                for t in tags)
    print(f"\nFSDP vs replicated, {len(tags)} losses x 3 steps: max relative difference {worst:.2e}")
    assert worst < 1e-5
    leaves = [leaf for leaf in jax.tree.leaves(states[True]) if leaf.size >= mesh_lib.FSDP_MIN_ELEMENTS]
    split = [leaf for leaf in leaves if not leaf.sharding.is_fully_replicated]
    assert len(split) >= 0.9 * len(leaves), (len(split), len(leaves))
    for leaf in split:
        assert leaf.addressable_shards[0].data.size * 8 == leaf.size
    abstract = jax.eval_shape(lambda: states[False])
    full = train_state.bytes_per_device(abstract, train_state.mesh_shardings(abstract, mesh, False))
    fsdp = train_state.bytes_per_device(abstract, train_state.mesh_shardings(abstract, mesh, True))
    assert fsdp < 0.3 * full
    # Parameters agree to a few learning rates (sums in another order), not to float precision.
    atol = adam_parameter_atol(tiny_config.optim.g_learning_rate, 3)
    for a, b in zip(jax.tree.leaves(states[True].g_params), jax.tree.leaves(states[False].g_params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol)


def test_nonfinite_update_is_skipped_and_counted(tiny_config):
    tiny_config.loss.preserve = 1.0  # the program of test_repeated_batch_...: compiled once
    state, step, mesh = make_step(tiny_config)
    poisoned = jax.tree.map(lambda x: x, state.g_params)
    first_leaf = jax.tree.leaves(poisoned["aging"])[0]
    poisoned = jax.tree.map(lambda x: jnp.full_like(x, jnp.nan) if x is first_leaf else x, poisoned)
    state = state.replace(g_params=poisoned)
    before = jax.device_get(state)
    state, metrics = step(state, fixed_batch(tiny_config, mesh))
    after = jax.device_get(state)
    assert int(after.step) == 1 and int(after.nonfinite_steps) == 1
    for old, new in zip(jax.tree.leaves(before.d_params), jax.tree.leaves(after.d_params)):
        np.testing.assert_array_equal(old, new)  # D untouched although only G was broken


def shorten(config, steps=6):
    config.train.steps = steps
    config.train.checkpoint_every = 3
    config.train.log_every = 3
    config.train.sample_every = 6
    return config


def test_train_resumes_exactly(tiny_config, tmp_path):
    tiny_config = shorten(tiny_config)
    tiny_config.model.update(SMALLEST_MODEL)
    # The frozen guides are trained once per workdir, then reused.
    tiny_config.loss.age_guide = tiny_config.loss.attribute_guide = 1.0
    tiny_config.loss.attribute_features = tiny_config.loss.change_smoothness = 0.5
    full_dir, resumed_dir = str(tmp_path / "full"), str(tmp_path / "resumed")
    full = train.train_and_evaluate(tiny_config, full_dir)
    assert sorted(os.listdir(os.path.join(full_dir, "checkpoints"))) == ["3", "6"]
    assert os.listdir(Workdir(full_dir).age_guide) == [str(tiny_config.age_guide.steps)]
    assert os.listdir(Workdir(full_dir).attribute_guide) == [str(tiny_config.attribute_guide.steps)]

    # Stop after 3 steps, then restart in the same workdir: it must resume at step 3 and
    # see the same batches as the uninterrupted run, ending with identical parameters.
    tiny_config.train.steps = 3
    train.train_and_evaluate(tiny_config, resumed_dir)
    guide_saved = os.stat(os.path.join(Workdir(resumed_dir).age_guide, str(tiny_config.age_guide.steps)))
    attributes_saved = os.stat(os.path.join(Workdir(resumed_dir).attribute_guide,
                                            str(tiny_config.attribute_guide.steps)))
    tiny_config.train.steps = 6
    manager = checkpointing.make_manager(Workdir(resumed_dir).checkpoints, read_only=True)
    assert manager.latest_step() == 3
    resumed = train.train_and_evaluate(tiny_config, resumed_dir)
    assert os.stat(os.path.join(Workdir(resumed_dir).age_guide,
                                str(tiny_config.age_guide.steps))).st_mtime_ns == guide_saved.st_mtime_ns
    assert os.stat(os.path.join(Workdir(resumed_dir).attribute_guide, str(
        tiny_config.attribute_guide.steps))).st_mtime_ns == attributes_saved.st_mtime_ns
    assert int(resumed.step) == 6
    # Exactly: the same tree (no leaf dropped or renamed) and bit-identical leaves.
    assert jax.tree.structure(full) == jax.tree.structure(resumed)
    for a, b in zip(jax.tree.leaves(jax.device_get(full)), jax.tree.leaves(jax.device_get(resumed))):
        np.testing.assert_array_equal(a, b)


def test_a_shut_output_gate_is_reported_once(tiny_config, tmp_path, caplog):
    """A gate born shut (logit -30: opening ~1e-13) under the square-root cost with a tiny floor:
    the loop says so once, naming the fields to change; an open gate gets no warning."""
    tiny_config = shorten(tiny_config)
    tiny_config.model.update(SMALLEST_MODEL, output_mask=True, gate_bias=-30.0)
    tiny_config.loss.update(gate=1.0, gate_exponent=0.5)
    tiny_config.train.log_every = 2
    with caplog.at_level("WARNING"):
        train.train_and_evaluate(tiny_config, str(tmp_path / "shut"))
    warnings = [r.getMessage() for r in caplog.records if "output gate has shut" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("Step 2:") and "config.loss.gate_floor" in warnings[0]
    assert train.shut_gate_warning({"g/gate": 0.05}, 2, tiny_config) is None
    assert train.shut_gate_warning({"g/gate_opening": 0.05, "g/gate": 1e-9}, 2, tiny_config) is None
    assert train.shut_gate_warning({"d/loss": 0.0}, 2, tiny_config) is None  # no gate
