"""``--mode=stats``: label counts of a dataset per split, and a bar chart of them."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
import tensorflow_datasets as tfds

from faceaging import datasets, grids, schedules
from faceaging.datasets import utkface
from faceaging.workdir import Workdir

BAR = (70, 110, 180)


def label_counts(config) -> dict:
    """Counts per age group (by the config's schedule), gender and race, per split."""
    builder = datasets.prepare(config)
    schedule = schedules.get_schedule(config.data.schedule)
    stats = {}
    for split in builder.info.splits:
        source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
        labels = np.array([[r["age"], r["gender"], r["race"]] for r in (source[i] for i in range(len(source)))])
        groups = schedule.group_of(labels[:, 0])
        stats[split] = {
            "images": len(labels),
            "outside_schedule": int((groups < 0).sum()),
            "age_group": dict(zip(schedule.labels, np.bincount(groups[groups >= 0], minlength=schedule.num_groups).tolist())),
            "gender": dict(zip(utkface.GENDER_NAMES, np.bincount(labels[:, 1], minlength=utkface.NUM_GENDERS).tolist())),
            "race": dict(zip(utkface.RACE_NAMES, np.bincount(labels[:, 2], minlength=utkface.NUM_RACES).tolist())),
        }
    return stats


def bar_chart(stats: dict, title: str, width: int = 900) -> np.ndarray:
    """Horizontal bars of the summed splits' counts: one panel each for age group, gender, race."""
    panels = ("age_group", "gender", "race")
    totals = {p: {} for p in panels}
    for split_stats in stats.values():
        for p in panels:
            for key, count in split_stats[p].items():
                totals[p][key] = totals[p].get(key, 0) + count
    row, label_w = 18, 110
    height = 30 + sum(len(totals[p]) * row + 30 for p in panels)
    image = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((10, 8), title, fill=(0, 0, 0))
    y = 30
    for p in panels:
        draw.text((10, y), p.replace("_", " "), fill=(0, 0, 0))
        y += 18
        top = max(totals[p].values()) or 1
        for key, count in totals[p].items():
            length = int((width - label_w - 80) * count / top)
            draw.text((10, y + 2), str(key), fill=(0, 0, 0))
            draw.rectangle((label_w, y + 2, label_w + length, y + row - 3), fill=BAR)
            draw.text((label_w + length + 5, y + 2), str(count), fill=(0, 0, 0))
            y += row
        y += 12
    return np.asarray(image)


def write_report(config, workdir: str) -> tuple[dict, str]:
    """(counts, chart path): counts of ``config``'s dataset and their chart in ``workdir``."""
    stats = label_counts(config)
    path = Workdir(workdir).dataset_stats
    grids.save_png(bar_chart(stats, f"{config.data.name}: all splits"), path)
    return stats, path
