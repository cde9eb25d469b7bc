import collections
import json

import numpy as np
from PIL import Image

from faceaging import contact_sheet, dataset_stats, datasets, grids, input_pipeline, run as run_lib
from faceaging import run_all, schedules
from faceaging.datasets import synthfaces, utkface
from helpers import main_in_process


def test_stats_count_every_image_and_draw_a_chart(synth_tiny_config, synth_dirs):
    stats = dataset_stats.label_counts(synth_tiny_config)
    # Counts against the dataset's own index, per split.
    schedule = schedules.get_schedule(synth_tiny_config.data.schedule)
    index = synthfaces.read_index(synth_dirs[0])
    for split in ("train", "validation"):
        rows = [r for r in index if r["split"] == split]
        groups = collections.Counter(schedule.labels[g] for g in schedule.group_of([r["age"] for r in rows]))
        assert stats[split]["images"] == len(rows)
        assert stats[split]["age_group"] == {label: groups[label] for label in schedule.labels}
        assert stats[split]["gender"] == {name: sum(r["gender"] == i for r in rows)
                                          for i, name in enumerate(utkface.GENDER_NAMES)}
        assert stats[split]["race"] == {name: sum(r["race"] == i for r in rows)
                                        for i, name in enumerate(utkface.RACE_NAMES)}
    # Each bar's length is proportional to its count (panels age group, gender, race, in order).
    chart = dataset_stats.bar_chart(stats, "synth")
    expected = []
    for panel in ("age_group", "gender", "race"):
        totals = collections.Counter()
        for split_stats in stats.values():
            totals.update(split_stats[panel])
        top = max(totals.values())
        expected += [int((900 - 110 - 80) * totals[key] / top) for key in stats["train"][panel]]
    assert _bar_lengths(chart) == expected


def _bar_lengths(chart: np.ndarray) -> list[int]:
    """Lengths of the bars (runs of rows holding bar colour), top to bottom."""
    is_bar = np.all(chart == dataset_stats.BAR, axis=-1)
    lengths, row = [], 0
    while row < len(is_bar):
        if is_bar[row].any():
            lengths.append(int(is_bar[row].sum()) - 1)  # a rectangle x0..x1 spans x1 - x0 + 1 pixels
            while row < len(is_bar) and is_bar[row].any():
                row += 1
        row += 1
    return lengths


def test_contact_sheet_cells_are_the_renders():
    ages = [5, 50, 90]
    sheet = contact_sheet.contact_sheet(seed=0, identities=2, ages=ages, cell=100)
    assert sheet.shape[1] == 3 * 102 + 2 and sheet.shape[0] > 2 * 102
    header = sheet.shape[0] - 2 * 102 - grids.PAD  # the label row above the cells
    for i in range(2):
        for j, age in enumerate(ages):
            render = np.asarray(Image.fromarray(synthfaces.render(synthfaces.make_identity(0, i), age, 0))
                                .resize((100, 100), Image.LANCZOS))
            y, x = header + i * 102, grids.PAD + j * 102
            np.testing.assert_array_equal(sheet[y:y + 100, x:x + 100], render, err_msg=f"cell {i}, age {age}")


def test_mode_all_trains_and_ages_held_out_faces(synth_tiny_config, tmp_path, capsys):
    synth_tiny_config.train.steps = 4
    # A decoder that paints its output (not the residual one, which starts as the identity map
    # and changes no pixel level in a few steps), so every column must differ after 4 steps.
    synth_tiny_config.model.residual_output = False
    # Through the CLI, as the README runs it.
    capsys.readouterr()
    assert main_in_process(
        "--mode=all", "--config=configs/synthfaces.py:tiny", f"--workdir={tmp_path / 'run'}",
        f"--config.data.manual_dir={synth_tiny_config.data.manual_dir}",
        f"--config.data.data_dir={synth_tiny_config.data.data_dir}", "--config.mesh.num_devices=1",
        "--config.train.steps=4", "--config.model.residual_output=False") == 0
    path = str(tmp_path / "run" / "held_out_aging.png")
    assert capsys.readouterr().out.strip() == f"Aging grid of held-out faces: {path}"
    run_all_faces = 8  # main's --mode=all ages 8 held-out faces; this test checks the first 3
    assert np.asarray(Image.open(path)).shape[0] > run_all_faces * 98
    # The input column holds validation faces: identities no training image shows.
    builder = datasets.prepare(synth_tiny_config)
    schedule = schedules.get_schedule(synth_tiny_config.data.schedule)
    validation = input_pipeline.open_split(builder, "validation", schedule)
    train_source = input_pipeline.open_split(builder, "train", schedule)
    train_ids = {synthfaces.identity_index(train_source.record(i)["file_name"]) for i in range(len(train_source))}
    shown = [validation.record(i) for i in range(run_all_faces)]
    assert not {synthfaces.identity_index(r["file_name"]) for r in shown} & train_ids
    faces = input_pipeline.sample_batch(validation, run_all_faces, synth_tiny_config.image_size)["image"]
    trained = run_lib.load(str(tmp_path / "run"))
    ager = trained.ager(num_devices=1)
    aged = ager(ager.place_params(trained.params()), faces, np.eye(schedule.num_groups, dtype=np.float32))
    grid = np.asarray(Image.open(path))
    np.testing.assert_array_equal(grid, grids.aging_grid(faces, aged, schedule.labels))
    # Aged columns differ from the input and from each other.
    # (After 4 steps the age code moves few pixels by a level: columns are pairwise distinct, not
    # far apart; a generator that ignored the code would give identical columns.)
    to_input = [np.abs(aged[:, k].astype(int) - faces).mean() for k in range(schedule.num_groups)]
    assert min(to_input) > 0.5
    assert len({aged[:, k].tobytes() for k in range(schedule.num_groups)}) == schedule.num_groups


def test_stats_work_for_utkface(tiny_config):
    stats = dataset_stats.label_counts(tiny_config)
    assert sum(s["images"] for s in stats.values()) == 96  # the malformed files are not counted
    assert tuple(stats["train"]["age_group"]) == schedules.get_schedule("utk14").labels


def test_stats_and_contact_sheet_through_the_cli(synth_tiny_config, tmp_path, capsys):
    common = ["--config=configs/synthfaces.py:tiny", f"--workdir={tmp_path}",
              f"--config.data.manual_dir={synth_tiny_config.data.manual_dir}",
              f"--config.data.data_dir={synth_tiny_config.data.data_dir}"]
    capsys.readouterr()
    assert main_in_process("--mode=stats", *common) == 0
    out = capsys.readouterr().out
    assert json.loads(out[:out.rindex("}") + 1]) == dataset_stats.label_counts(synth_tiny_config)
    assert out.rstrip().endswith(f"Bar chart: {tmp_path / 'dataset_stats.png'}")
    assert main_in_process("--mode=contact_sheet", *common, "--sheet_identities=2", "--sheet_ages=5,50,90") == 0
    assert capsys.readouterr().out.strip() == f"Contact sheet: {tmp_path / 'contact_sheet.png'}"
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "contact_sheet.png")),
                                  contact_sheet.contact_sheet(0, 2, [5, 50, 90]))
