import numpy as np
from PIL import Image

from faceaging import contact_sheet, dataset_stats, run_all, schedules
from test_synthfaces import _load_synth_config


def synth_tiny(tmp_path):
    config = _load_synth_config("tiny")
    config.data.manual_dir, config.data.data_dir = str(tmp_path / "manual"), str(tmp_path / "tfds")
    config.mesh.num_devices = 1
    return config


def test_stats_count_every_image_and_draw_a_chart(tmp_path):
    config = synth_tiny(tmp_path)
    stats = dataset_stats.label_counts(config)
    assert sum(s["images"] for s in stats.values()) == 40 * 6
    for split in stats.values():
        assert sum(split["age_group"].values()) + split["outside_schedule"] == split["images"]
        assert sum(split["gender"].values()) == split["images"] == sum(split["race"].values())
    chart = dataset_stats.bar_chart(stats, "synth")
    assert chart.ndim == 3 and chart.shape[1] == 900 and chart.min() < 128  # bars were drawn


def test_contact_sheet_layout():
    sheet = contact_sheet.contact_sheet(seed=0, identities=2, ages=[5, 50, 90], cell=100)
    # 3 columns of 100px + padding, 2 rows below a label header.
    assert sheet.shape[1] == 3 * 102 + 2 and sheet.shape[0] > 2 * 102


def test_mode_all_trains_and_ages_held_out_faces(tmp_path):
    config = synth_tiny(tmp_path)
    config.train.steps = 4
    path = run_all.run_all(config, str(tmp_path / "run"), count=3)
    grid = np.asarray(Image.open(path))
    groups = 6
    cell = 96  # 32px faces are enlarged 3x for legibility
    assert grid.shape[1] == (groups + 1) * (cell + 2) + 2  # input column + one per group
    assert grid.shape[0] > 3 * (cell + 2)


def test_stats_work_for_utkface(tiny_config):
    stats = dataset_stats.label_counts(tiny_config)
    assert sum(s["images"] for s in stats.values()) == 96  # the malformed files are not counted
    assert tuple(stats["train"]["age_group"]) == schedules.get_schedule("utk14").labels
