import os
import tarfile

import numpy as np
import pytest

from conftest import MALFORMED_NAMES, write_utkface_folder
from faceaging.datasets import utkface


def test_parse_name():
    labels = utkface.parse_name("/x/26_1_3_20170116174525125.jpg.chip.jpg")
    assert (labels.age, labels.gender, labels.race, labels.split_key) == (26, 1, 3, "20170116174525125")
    for bad in MALFORMED_NAMES:
        assert utkface.parse_name(bad) is None


def test_split_is_a_function_of_the_name_only():
    names = [f"{a}_0_0_2017{i:013d}.jpg.chip.jpg" for i, a in enumerate(range(1, 101))] * 2
    splits = [utkface.split_of(utkface.parse_name(n)) for n in names]
    assert splits[:100] == splits[100:]
    assert 0 < splits.count("validation") < 50


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
