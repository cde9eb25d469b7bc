import jax
import numpy as np
import pytest

from faceaging import datasets, input_pipeline, mesh as mesh_lib, schedules
from faceaging.datasets import utkface


@pytest.fixture
def train_source(tiny_config):
    builder = datasets.prepare(tiny_config)
    return input_pipeline.open_split(builder, "train", schedules.get_schedule("utk14"))


def test_batches_have_labels_and_targets_differ(tiny_config, train_source):
    iterator = input_pipeline.make_train_loader(tiny_config, train_source, 14)
    for _ in range(5):
        batch = next(iterator)
        assert batch["image"].shape == (8, 32, 32, 3) and batch["image"].dtype == np.uint8
        np.testing.assert_array_equal(batch["source"], schedules.get_schedule("utk14").group_of(batch["age"]))
        assert np.all(batch["target"] != batch["source"])
        assert np.all((batch["target"] >= 0) & (batch["target"] < 14))
        assert batch["attributes"].shape == (8, 2) and batch["attributes"].dtype == np.int32


def test_records_carry_the_gender_and_race_of_their_file_names(train_source):
    """The attribute guide's labels (input_pipeline.ATTRIBUTES) are the file name's, per record."""
    seen = set()
    for i in range(len(train_source)):
        element = train_source[i]
        name = element["file_name"]
        labels = utkface.parse_name(name.decode() if isinstance(name, bytes) else name)
        np.testing.assert_array_equal(element["attributes"], [labels.gender, labels.race])
        seen.add((labels.gender, labels.race))
    assert len(seen) > 3  # the fixture's names vary both labels


def test_schedule_with_gaps_drops_uncovered_ages(tiny_config):
    builder = datasets.prepare(tiny_config)
    full = input_pipeline.open_split(builder, "train", schedules.get_schedule("utk14"))
    gappy = input_pipeline.open_split(builder, "train", schedules.get_schedule("lats6"))
    assert 0 < len(gappy) < len(full)
    assert gappy.num_dropped == len(full) - len(gappy)
    ages = np.array([gappy[i]["age"] for i in range(len(gappy))])
    assert np.all(schedules.get_schedule("lats6").group_of(ages) >= 0)


def test_frequency_target_sampling():
    groups = np.array([0, 0, 0, 1, 2, 2])
    np.testing.assert_allclose(input_pipeline.target_probabilities(groups, 4, "frequency"),
                               [0.5, 1 / 6, 1 / 3, 0.0])
    np.testing.assert_allclose(input_pipeline.target_probabilities(groups, 4, "uniform"), [0.25] * 4)
    with pytest.raises(ValueError, match="target_sampling"):
        input_pipeline.target_probabilities(groups, 4, "balanced")
    transform = input_pipeline.FlipAndDrawTarget(np.array([0.5, 0.5, 0.0]), random_flip=False)
    rng = np.random.default_rng(0)
    image = np.zeros((4, 4, 3), np.uint8)
    targets = [transform.random_map({"image": image, "source": 0}, rng)["target"] for _ in range(50)]
    assert set(targets) == {1}  # never the source, never a zero-probability group


def test_a_loader_started_at_a_saved_position_yields_the_same_next_batches(tiny_config, train_source):
    iterator = input_pipeline.make_train_loader(tiny_config, train_source, 14)
    for _ in range(3):
        next(iterator)
    state = iterator.state()
    assert state == {"position": 3 * tiny_config.train.batch_size, "records": len(train_source)}
    expected = [next(iterator) for _ in range(2)]
    resumed = input_pipeline.make_train_loader(tiny_config, train_source, 14,
                                               start=state["position"])
    for want in expected:
        got = next(resumed)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def global_batches(config, source, process_index=0, process_count=1, batch_size=8):
    probs = input_pipeline.target_probabilities(source.groups, 14, "uniform")
    return input_pipeline.GlobalBatches(
        source, (input_pipeline.Decode(config.image_size), input_pipeline.FlipAndDrawTarget(probs, True)),
        global_batch_size=batch_size, seed=config.seed, process_index=process_index,
        process_count=process_count)


def test_processes_read_disjoint_rows_that_make_up_the_one_process_batch(tiny_config, train_source):
    whole = global_batches(tiny_config, train_source)
    for count in (2, 4):
        shares = [global_batches(tiny_config, train_source, i, count) for i in range(count)]
        for k in (0, 1, len(train_source) // 8 + 1):  # the last one crosses into the next epoch
            joined = [share[k] for share in shares]
            for key, value in whole[k].items():
                np.testing.assert_array_equal(np.concatenate([j[key] for j in joined]), value)
            rows = [share.positions(k) for share in shares]
            assert len(set(np.concatenate(rows).tolist())) == 8  # no sample read twice


def test_each_epoch_trains_every_record_once_in_an_order_that_changes(tiny_config, train_source):
    batches = global_batches(tiny_config, train_source)
    n = len(train_source)
    first = [batches.record_index(p) for p in range(n)]
    second = [batches.record_index(p) for p in range(n, 2 * n)]
    assert sorted(first) == sorted(second) == list(range(n))
    assert first != second


def test_grain_workers_do_not_change_the_batches(tiny_config, train_source):
    in_process = input_pipeline.make_train_loader(tiny_config, train_source, 14, worker_count=0)
    with_workers = input_pipeline.make_train_loader(tiny_config, train_source, 14, worker_count=2)
    for _ in range(3):
        want, got = next(in_process), next(with_workers)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_to_global_shards_over_the_data_axis(tiny_config, train_source):
    mesh = mesh_lib.make_mesh(-1)
    assert mesh.size == 8
    batch = next(input_pipeline.make_train_loader(tiny_config, train_source, 14))
    arrays = input_pipeline.to_global(batch, mesh_lib.data_sharded(mesh))
    assert arrays["image"].shape == (8, 32, 32, 3)
    assert len(arrays["image"].addressable_shards) == 8
    assert arrays["image"].addressable_shards[0].data.shape == (1, 32, 32, 3)
    np.testing.assert_array_equal(jax.device_get(arrays["source"]), batch["source"])


def test_batch_size_must_split_over_devices(tiny_config):
    with pytest.raises(ValueError, match="batch_size=12 must be divisible"):
        mesh_lib.check_batch_size(12, mesh_lib.make_mesh(-1))


def test_worker_count_auto_is_in_process_on_cpu_and_explicit_counts_are_kept():
    import pytest
    from faceaging import input_pipeline

    assert input_pipeline.resolve_worker_count(-1) == 0  # tests run on the CPU backend
    assert input_pipeline.resolve_worker_count(3) == 3
    with pytest.raises(ValueError, match="worker_count=-2"):
        input_pipeline.resolve_worker_count(-2)
