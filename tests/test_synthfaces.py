import dataclasses
import hashlib
import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from faceaging import datasets, input_pipeline, schedules
from faceaging.datasets import synthfaces, utkface


def test_render_is_deterministic_and_identity_specific():
    a = synthfaces.render(synthfaces.make_identity(3, 7), 40, seed=3)
    b = synthfaces.render(synthfaces.make_identity(3, 7), 40, seed=3)
    other = synthfaces.render(synthfaces.make_identity(3, 8), 40, seed=3)
    assert a.shape == (200, 200, 3) and a.dtype == np.uint8
    assert hashlib.sha256(a.tobytes()).digest() == hashlib.sha256(b.tobytes()).digest()
    assert np.abs(a.astype(int) - other.astype(int)).mean() > 5


def test_pose_age_renders_the_same_pose_at_another_age():
    identity = synthfaces.make_identity(0, 5)
    young = synthfaces.render(identity, 30).astype(int)
    assert np.array_equal(synthfaces.render(identity, 30, pose_age=30), young)
    same_pose = synthfaces.render(identity, 31, pose_age=30).astype(int)
    own_pose = synthfaces.render(identity, 31).astype(int)
    assert np.abs(same_pose - young).mean() < 0.5 * np.abs(own_pose - young).mean()


def _hair_region_brightness(identity, age):
    image = synthfaces.render(identity, age).astype(float)
    return image[30:70, 70:130].mean()


def _top_difference(a, b, age):
    """Mean absolute difference of two identities' renders above the eyes, in one pose."""
    diff = synthfaces.render(a, age, pose_age=25).astype(int) - synthfaces.render(b, age, pose_age=25)
    return np.abs(diff[:90]).mean() * 10  # per mille of the 0-255 range, x 10 for legibility


def _skin_share_above_hairline(identity, age, pose_age=25):
    """Share of skin-coloured pixels in a box over the middle of the forehead's top, from the crown
    down a third of the way to the eyes of the identity at ``pose_age`` (same pose for all ages)."""
    layout = synthfaces._layout(identity, pose_age)
    half = synthfaces.SCALE
    rows = slice(int(layout.top / half) + 2, int((layout.top + layout.head_h * 0.3) / half))
    cols = slice(int((layout.cx - layout.head_w * 0.1) / half), int((layout.cx + layout.head_w * 0.1) / half))
    box = synthfaces.render(identity, age, pose_age=pose_age)[rows, cols].astype(float)
    return float((np.abs(box - np.array(identity.skin)).mean(axis=-1) < 25).mean())


def _line_energy(identity, age, rows, cols, pose_age=None):
    """Mean vertical gradient inside a box: horizontal lines (wrinkles, folds) raise it."""
    grey = synthfaces.render(identity, age, pose_age=pose_age).astype(float).mean(axis=-1)
    return np.abs(np.diff(grey[rows[0]:rows[1], cols[0]:cols[1]], axis=0)).mean()


def test_aging_is_measurable():
    identities = [synthfaces.make_identity(0, i) for i in range(16)]
    full_hair = [i for i in identities if not i.balding]
    # Hair greys: the top-of-head region gets brighter from 30 to 85.
    hair_30 = np.mean([_hair_region_brightness(i, 30) for i in full_hair])
    hair_85 = np.mean([_hair_region_brightness(i, 85) for i in full_hair])
    assert hair_85 > hair_30 + 30
    # Wrinkles: forehead lines and nasolabial folds deepen from 25 to 85 (same pose and light).
    forehead, folds = ((60, 80), (82, 118)), ((98, 122), (72, 128))
    for box, factor in ((forehead, 1.4), (folds, 1.2)):
        young = np.mean([_line_energy(i, 25, *box) for i in full_hair])
        old = np.mean([_line_energy(i, 85, *box, pose_age=25) for i in full_hair])
        assert old > factor * young
    # Balding men's hair recedes from their 30s: against the same man with full hair (same pose,
    # same render noise), nothing differs at 25 and the top of the head differs at 50 and 70;
    # at 70 the box above the young hairline shows skin where the full-haired twin has hair.
    balding = [i for i in identities if i.balding]
    assert balding
    for identity in balding:
        full = dataclasses.replace(identity, balding=False)
        change = [_top_difference(identity, full, age) for age in (25, 50, 70)]
        assert change[0] == 0 and min(change[1:]) > 5, change
        skin_70, skin_full_70 = _skin_share_above_hairline(identity, 70), _skin_share_above_hairline(full, 70)
        assert skin_70 > skin_full_70 + 0.4 and skin_70 > _skin_share_above_hairline(identity, 25) + 0.4
    # Child proportions: eyes sit lower (big forehead) in a 2-year-old's face than at 30.
    shifts = [_eye_row(i, 2) - _eye_row(i, 30) for i in identities[:8]]
    assert np.mean(shifts) > 3 and min(shifts) >= 0


def _eye_row(identity, age):
    """Row of the darkest horizontal band (pupils) in the face's central third."""
    image = synthfaces.render(identity, age).astype(float).mean(axis=-1)
    rows = image[50:170, 60:140].min(axis=1)
    return 50 + int(np.argmin(rows[:80]))


def test_ages_cover_the_lifespan():
    ages = sorted({a for i in range(30) for a in synthfaces.sample_ages(0, i, 10)})
    assert ages[0] <= 5 and ages[-1] >= 95
    per_identity = synthfaces.sample_ages(0, 1, 10)
    assert len(per_identity) == 10 and len(set(per_identity)) == 10


def test_generated_folder_parses_back_and_index_is_consistent(tmp_path):
    count = synthfaces.generate(str(tmp_path), num_identities=24, ages_per_identity=5, seed=1, processes=2)
    files = sorted(os.listdir(tmp_path / "UTKFace"))
    index = synthfaces.read_index(str(tmp_path))
    assert count == len(files) == len(index) == 24 * 5
    by_identity = {}
    for row in index:
        labels = utkface.parse_name(row["file_name"])
        assert (labels.age, labels.gender, labels.race) == (row["age"], row["gender"], row["race"])
        identity = synthfaces.make_identity(1, row["identity"])
        assert (identity.gender, identity.race) == (row["gender"], row["race"])
        by_identity.setdefault(row["identity"], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in by_identity.values())  # identity-level split
    with pytest.raises(FileExistsError):
        synthfaces.generate(str(tmp_path), 1, 1)
    # Re-rendering an indexed image reproduces the file's content (up to JPEG loss).
    row = index[7]
    decoded = input_pipeline.decode_image((tmp_path / "UTKFace" / row["file_name"]).read_bytes(), 200)
    rerendered = synthfaces.render(synthfaces.make_identity(1, row["identity"]), row["age"], seed=1)
    assert np.abs(decoded.astype(int) - rerendered.astype(int)).mean() < 4  # JPEG q92 on noisy pixels


def test_concurrent_generation_ends_with_one_complete_copy(tmp_path, monkeypatch):
    """Two preparers of one folder both finish rendering before either renames its copy into
    place (a barrier makes the race deterministic): one rename wins, the other adopts it."""
    render_into, barrier = synthfaces._render_into, threading.Barrier(2, timeout=120)

    def render_then_wait(*args, **kwargs):
        rows = render_into(*args, **kwargs)
        barrier.wait()
        return rows

    monkeypatch.setattr(synthfaces, "_render_into", render_then_wait)
    results = []
    threads = [threading.Thread(target=lambda: results.append(
        synthfaces.generate(str(tmp_path), num_identities=6, ages_per_identity=2, seed=2, processes=1)))
        for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [12, 12]
    assert sorted(os.listdir(tmp_path)) == sorted([synthfaces.FOLDER_NAME, synthfaces.INDEX_NAME,
                                                   synthfaces.VERSION_NAME])
    assert len(os.listdir(tmp_path / synthfaces.FOLDER_NAME)) == 12


def test_config_generates_on_first_use_and_builds(synth_dirs, synth_tiny_config, tmp_path):
    """The session's SynthFaces was rendered by the first datasets.prepare (conftest)."""
    manual_dir, _ = synth_dirs
    assert sorted(os.listdir(manual_dir)) == sorted([synthfaces.FOLDER_NAME, synthfaces.INDEX_NAME,
                                                     synthfaces.VERSION_NAME])
    builder = datasets.prepare(synth_tiny_config)
    assert builder.name == "synth_faces"
    assert {s: builder.info.splits[s].num_examples for s in builder.info.splits} == {
        "train": 69 * 4, "validation": 3 * 4}  # identities 43, 69 and 71 hash to validation
    source = input_pipeline.open_split(builder, "validation",
                                       schedules.get_schedule(synth_tiny_config.data.schedule))
    assert {synthfaces.identity_index(source.record(i)["file_name"]) for i in range(len(source))} == {43, 69, 71}
    # A folder from another renderer version is refused, never re-rendered over.
    copy = tmp_path / "manual"
    shutil.copytree(manual_dir, copy)
    synth_tiny_config.data.manual_dir, synth_tiny_config.data.data_dir = str(copy), str(tmp_path / "tfds")
    version_file = copy / synthfaces.VERSION_NAME
    version_file.write_text("1")
    with pytest.raises(ValueError, match="renderer version 1, but this faceaging renders version"):
        datasets.prepare(synth_tiny_config)
    assert version_file.read_text() == "1"


# SHA-256 of a few renders. eval re-renders ground truth with render(), so stored datasets and eval
# must agree: a change to render() (or a Pillow that draws differently) must bump RENDERER_VERSION
# and these digests together.
GOLDEN_RENDERS = {"3": {
    (0, 3, 5): "79166cbf6f403637dd0ed473a330600f8dc9f1550926b77efee48de155a16262",
    (0, 7, 40): "92509fbb104293b2030ea831379bcbf370d97271a2ad20cd615a46fa4b4bdfca",
    (1, 12, 85): "72b75e8ffad922110174bb9b71571313b6b07585f4c297c5d4037fe58d92fb10"}}


def test_renders_match_their_golden_digests():
    golden = GOLDEN_RENDERS.get(synthfaces.RENDERER_VERSION)
    assert golden is not None, (f"RENDERER_VERSION {synthfaces.RENDERER_VERSION} has no golden "
                                "digests: add them to GOLDEN_RENDERS")
    for (seed, index, age), digest in golden.items():
        image = synthfaces.render(synthfaces.make_identity(seed, index), age, seed)
        assert hashlib.sha256(image.tobytes()).hexdigest() == digest, (
            f"render(seed={seed}, identity={index}, age={age}) changed: bump RENDERER_VERSION")


def _grey_haired(index):
    """An identity at 95 (white hair: the darkest pixels are the pupils)."""
    return synthfaces.make_identity(0, index)


@pytest.mark.parametrize("index", [3, 11, 24])
def test_landmarks_sit_on_the_drawn_features(index):
    identity = _grey_haired(index)
    for age, pose_age in ((95, None), (95, 4)):  # its own pose, and a child's pose
        image = synthfaces.render(identity, age, pose_age=pose_age).astype(float)
        crown, eyes, mouth, chin = synthfaces.landmarks(identity, age, pose_age=pose_age) * synthfaces.SIZE
        lum = image.mean(axis=2)
        face = lum[int(crown[1]) + 5:int(chin[1]) - 5, int(eyes[0]) - 50:int(eyes[0]) + 50]
        darkest_row = np.unravel_index(np.argmin(face), face.shape)[0] + int(crown[1]) + 5
        assert abs(darkest_row - eyes[1]) <= 3  # the pupils are on the eye line
        # Below the chin: the neck's shade; above it: skin.
        x = int(round(chin[0]))
        assert lum[int(chin[1]) + 3, x] < lum[int(chin[1]) - 4, x] - 10
    # A child's eyes sit lower in the head and its chin higher than an adult's.
    child = synthfaces.landmarks(identity, 3, pose_age=30)[:, 1]
    adult = synthfaces.landmarks(identity, 30, pose_age=30)[:, 1]
    assert (child[1] - child[0]) / (child[3] - child[0]) > (adult[1] - adult[0]) / (adult[3] - adult[0]) + 0.05
    assert child[3] < adult[3]


def test_stubble_mask_covers_the_stubble_and_alpha_measures_it():
    from faceaging.evaluators.synthfaces_truth import STUBBLE_RATE_THRESHOLD, stubble_alpha

    women = [i for i in (synthfaces.make_identity(0, k) for k in range(40)) if i.gender == 1][:6]
    size, age, pose_age = 64, 30, 30
    truth = np.stack([np.asarray(Image.fromarray(synthfaces.render(w, age, pose_age=pose_age)).resize(
        (size, size), Image.BICUBIC)) for w in women])
    # The same faces drawn as men: stubble (and a man's jaw and brows) over the same skin.
    twins = [dataclasses.replace(w, gender=0) for w in women]
    stubbled = np.stack([np.asarray(Image.fromarray(synthfaces.render(t, age, pose_age=pose_age)).resize(
        (size, size), Image.BICUBIC)) for t in twins])
    mask = synthfaces.stubble_mask(women[0], age, size, pose_age=pose_age)
    assert 0.02 < mask.mean() < 0.2
    own = stubble_alpha(women, [pose_age] * len(women), age, 0, truth, truth)
    assert np.all(own == 0)
    painted = stubble_alpha(women, [pose_age] * len(women), age, 0, stubbled, truth)
    # The stubble is translucent (renderer 3 blends): its opacity, less the blur at the edges.
    np.testing.assert_allclose(painted, synthfaces.STUBBLE_ALPHA, atol=0.025)
    assert np.all(painted > STUBBLE_RATE_THRESHOLD)
    for share in (0.3, 0.7):  # a fraction of the stubble measures as that fraction of it
        part = (truth.astype(float) + share * (stubbled.astype(float) - truth)).round().astype(np.uint8)
        measured = stubble_alpha(women, [pose_age] * len(women), age, 0, part, truth)
        np.testing.assert_allclose(measured, share * painted, atol=0.01)
        assert np.all((measured > STUBBLE_RATE_THRESHOLD) == (share > 0.5))
    assert np.isnan(stubble_alpha(twins, [pose_age] * len(women), age, 0, stubbled, truth)).all()
