import os
import tarfile

import numpy as np
import pytest

from helpers import MALFORMED_NAMES, write_utkface_folder
from faceaging.datasets import utkface


def test_parse_name():
    labels = utkface.parse_name("/x/26_1_3_20170116174525125.jpg.chip.jpg")
    assert (labels.age, labels.gender, labels.race, labels.split_key) == (26, 1, 3, "20170116174525125")
    for bad in MALFORMED_NAMES:
        assert utkface.parse_name(bad) is None


def test_split_is_a_function_of_the_datetime_field_only():
    rng = np.random.default_rng(0)
    stamps = [f"2017{i:013d}" for i in rng.choice(10**13, 10_000, replace=False)]
    splits = []
    for stamp in stamps:
        variants = {utkface.split_of(utkface.parse_name(f"{age}_{gender}_{race}_{stamp}.jpg.chip.jpg"))
                    for age, gender, race in ((1, 0, 0), (85, 1, 4), (30, 1, 2))}
        assert len(variants) == 1, stamp  # same person (datetime), other labels: same split
        splits.append(variants.pop())
    share = splits.count("validation") / len(splits)
    assert 0.03 <= share <= 0.07, share  # VALIDATION_PERCENT = 5


def test_builder_output_does_not_depend_on_file_order(tmp_path, monkeypatch):
    write_utkface_folder(tmp_path / "src" / "UTKFace", 72, seed=3, malformed=False)  # 3 validation
    real_walk = os.walk

    def builds(order_seed):
        def shuffled_walk(top, *args, **kwargs):
            for root, dirs, names in real_walk(top, *args, **kwargs):
                yield root, dirs, list(np.random.default_rng(order_seed).permutation(names))

        monkeypatch.setattr(utkface.os, "walk", shuffled_walk)
        builder = utkface.prepare(str(tmp_path / f"tfds{order_seed}"), str(tmp_path / "src"))
        out = {}
        for split in builder.info.splits:
            source = builder.as_data_source(split=split)
            out[split] = sorted((source[i]["file_name"], source[i]["image"].tobytes()) for i in range(len(source)))
        return out

    first, second = builds(1), builds(2)
    assert set(first) == {"train", "validation"} and first == second


@pytest.mark.parametrize("as_archive", [False, True])
def test_builder_reads_folder_or_archive_and_skips_malformed(tmp_path, as_archive):
    good = write_utkface_folder(tmp_path / "src" / "UTKFace", 40, seed=1)
    manual = tmp_path / "src"
    if as_archive:
        manual = tmp_path / "archive"
        manual.mkdir()
        with tarfile.open(manual / "UTKFace.tar.gz", "w:gz") as tar:
            tar.add(tmp_path / "src" / "UTKFace", arcname="UTKFace")
    builder = utkface.prepare(str(tmp_path / "tfds"), str(manual))
    splits = builder.info.splits
    assert sum(splits[s].num_examples for s in splits) == len(good)
    expected = {n: utkface.parse_name(n) for n in good}
    assert set(splits) == {utkface.split_of(labels) for labels in expected.values()}
    for split in splits:
        source = builder.as_data_source(split=split)
        for i in range(len(source)):
            record = source[i]
            name = record["file_name"].decode() if isinstance(record["file_name"], bytes) else record["file_name"]
            labels = expected.pop(name)
            assert utkface.split_of(labels) == split
            assert (record["age"], record["gender"], record["race"]) == (labels.age, labels.gender, labels.race)
            assert record["image"].shape == (200, 200, 3) and record["image"].dtype == np.uint8
    assert not expected


def test_both_splits_with_enough_files(utk_dirs):
    builder = utkface.prepare(utk_dirs[1], utk_dirs[0])
    assert builder.info.splits["validation"].num_examples > 0
    assert builder.info.splits["train"].num_examples > 50


def test_missing_data_names_the_files_and_writes_nothing(tmp_path):
    data_dir = tmp_path / "tfds"
    with pytest.raises(utkface.DataNotFoundError, match="UTKFace.tar.gz"):
        utkface.prepare(str(data_dir), str(tmp_path / "nowhere"))
    assert not os.path.exists(data_dir)


def test_a_folder_of_only_malformed_names_is_refused(tmp_path):
    from PIL import Image

    folder = tmp_path / "manual" / "UTKFace"
    folder.mkdir(parents=True)
    for name in MALFORMED_NAMES:
        Image.new("RGB", (200, 200)).save(folder / name)
    with pytest.raises(utkface.DataNotFoundError, match="holds no well-named"):
        utkface.prepare(str(tmp_path / "tfds"), str(tmp_path / "manual"))
    assert not (tmp_path / "tfds").exists()


def test_manual_dir_may_point_at_the_images_and_skipped_names_are_logged(tmp_path, caplog):
    good = write_utkface_folder(tmp_path / "images", 24, seed=2)  # plus the malformed names
    with caplog.at_level("WARNING"):
        builder = utkface.prepare(str(tmp_path / "tfds"), str(tmp_path / "images"))
    assert sum(builder.info.splits[s].num_examples for s in builder.info.splits) == len(good)
    for name in MALFORMED_NAMES:
        assert name in caplog.text
