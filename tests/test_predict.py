import glob
import re
import io
import os

import numpy as np
from PIL import Image
import pytest

from faceaging import align, image_io, predict, run as run_lib, schedules, train
from faceaging.workdir import Workdir


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory, utk_dirs):
    from faceaging import config as config_lib
    config = config_lib.tiny(config_lib.base_config())
    config.data.manual_dir, config.data.data_dir = utk_dirs
    config.mesh.num_devices = 1
    config.train.steps = config.train.checkpoint_every = 2
    workdir = str(tmp_path_factory.mktemp("predict") / "run")
    train.train_and_evaluate(config, workdir)
    return workdir


def face(size=(64, 64), seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (*size[::-1], 3), dtype=np.uint8))


def write_mixed_folder(root):
    """7 usable images in assorted formats and 6 broken ones, some in a subfolder."""
    (root / "sub").mkdir(parents=True)
    face(seed=1).save(root / "rgb.jpg")
    face(seed=2).save(root / "sub" / "rgb.png")
    face(seed=3).convert("L").save(root / "gray.png")
    face(seed=4).convert("CMYK").save(root / "cmyk.jpg")
    rgba = face(seed=5).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(root / "rgba.png")
    Image.fromarray((np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)).save(root / "deep16.png")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees
    face((80, 48), seed=6).save(root / "sub" / "exif_rotated.jpg", exif=exif)
    jpeg = io.BytesIO()
    face(seed=7).save(jpeg, format="JPEG")
    (root / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (root / "corrupt.jpg").write_bytes(b"\xff\xd8\xff" + np.random.default_rng(0).bytes(500))
    (root / "empty.png").write_bytes(b"")
    (root / "notes.png").write_text("this is not an image")
    face((8, 8)).save(root / "tiny.png")
    face((300, 300)).save(root / "huge.png")


def test_load_rgb_handles_modes_rotation_and_refusals(tmp_path, monkeypatch):
    monkeypatch.setattr(image_io, "MAX_PIXELS", 200 * 200)
    write_mixed_folder(tmp_path)
    assert image_io.load_rgb(str(tmp_path / "sub" / "exif_rotated.jpg")).shape == (80, 48, 3)
    deep = image_io.load_rgb(str(tmp_path / "deep16.png"))
    assert deep.dtype == np.uint8 and deep.max() > 200  # 16-bit range mapped onto 8 bits
    assert np.all(image_io.load_rgb(str(tmp_path / "rgba.png")) >= 127)  # laid on white
    for name, reason in [("truncated.jpg", "truncated"), ("corrupt.jpg", "not an image|corrupt"),
                         ("empty.png", "empty"), ("notes.png", "not an image"),
                         ("tiny.png", "too small"), ("huge.png", "too large")]:
        with pytest.raises(image_io.BadImageError, match=reason):
            image_io.load_rgb(str(tmp_path / name))


def test_batch_aging_of_a_mixed_folder(trained_workdir, tmp_path, monkeypatch):
    monkeypatch.setattr(image_io, "MAX_PIXELS", 200 * 200)
    inputs, out = tmp_path / "in", tmp_path / "out"
    write_mixed_folder(inputs)
    summary = predict.predict(trained_workdir, str(inputs), str(out), target_ages=["3", "30", "70"], gif=True,
                              aligned=True)
    assert (summary.done, summary.skipped, summary.failed) == (7, 0, 6)
    labels = [schedules.get_schedule("utk14").labels[g] for g in (0, 5, 9)]
    for stem in ("rgb", "sub/rgb", "gray", "cmyk", "rgba", "deep16", "sub/exif_rotated"):
        for label in labels:
            assert Image.open(out / f"{stem}_age_{label}.png").size == (32, 32)
        assert (out / f"{stem}_grid.png").exists()
        assert Image.open(out / f"{stem}_aging.gif").size == (96, 96)  # enlarged for viewing
    # Existing outputs are skipped, not overwritten, unless asked.
    before = os.path.getmtime(out / "rgb_grid.png")
    again = predict.predict(trained_workdir, str(inputs / "*.jpg"), str(out), target_ages=["3", "30", "70"],
                            gif=True, aligned=True)
    assert (again.done, again.skipped, again.failed) == (0, 2, 2)  # rgb, cmyk exist; broken still fail
    assert os.path.getmtime(out / "rgb_grid.png") == before
    assert predict.predict(trained_workdir, str(inputs / "rgb.jpg"), str(out), target_groups="0,13",
                           overwrite=True, aligned=True).done == 1


def test_gif_goes_there_and_back(tmp_path):
    frames = np.stack([np.full((32, 32, 3), 20 * i, np.uint8) for i in range(5)])
    predict.save_gif(frames, str(tmp_path / "a.gif"))
    gif = Image.open(tmp_path / "a.gif")
    assert gif.n_frames == 8 and gif.size == (96, 96)  # 0..4 then 3..1


def test_inputs_from_a_list_file_and_targets(trained_workdir, tmp_path):
    face(seed=1).save(tmp_path / "a.jpg")
    (tmp_path / "b").mkdir()
    face(seed=2).save(tmp_path / "b" / "c.jpg")
    (tmp_path / "list.txt").write_text("# faces\na.jpg\n\nb/c.jpg\n")
    assert [rel for _, rel in predict.list_inputs(str(tmp_path / "list.txt"))] == ["a.jpg", "b/c.jpg"]
    schedule = schedules.get_schedule("utk14")
    assert predict.select_targets(schedule, target_ages=["5", "30", "33", "120"]) == [0, 5, 6, 13]
    with pytest.raises(predict.PredictError, match="fall in no group"):
        predict.select_targets(schedules.get_schedule("lats6"), target_ages=["12"])
    with pytest.raises(predict.PredictError, match="groups 0..13"):
        predict.select_targets(schedule, target_groups="0,14")
    with pytest.raises(predict.PredictError, match="matches no images"):
        predict.list_inputs(str(tmp_path / "*.webp"))
    step_dir = glob.glob(os.path.join(trained_workdir, "checkpoints", "*"))[0]
    assert run_lib.resolve(step_dir) == (Workdir(trained_workdir), 2)
    with pytest.raises(predict.PredictError, match="expected WORKDIR/checkpoints/STEP"):
        predict.checkpoint_path(None, trained_workdir)
    codes = predict.interpolation_codes(14, [0, 5], 4)
    assert codes.shape == (5, 14) and np.allclose(codes.sum(1), 1) and codes[2, 0] == pytest.approx(0.5)


def test_detection_alignment_and_paste_back_on_a_real_photo(trained_workdir, tmp_path):
    pytest.importorskip("dlib")
    astronaut = pytest.importorskip("skimage.data").astronaut()
    inputs = tmp_path / "in"
    inputs.mkdir()
    Image.fromarray(astronaut).save(inputs / "astronaut.png")
    face((300, 200), seed=9).save(inputs / "no_face.png")
    aligner = align.FaceAligner()
    left, right = aligner.eyes(astronaut)
    assert 180 < left[0] < 225 and 225 < right[0] < 270 and 90 < left[1] < 115  # her eyes
    # Re-detecting the eyes in the aligned crop finds them where the framing puts them.
    crop = aligner.align(astronaut, 200).crop
    left, right = aligner.eyes(crop)
    np.testing.assert_allclose(left, np.array(align.LEFT_EYE) * 200, atol=4)
    np.testing.assert_allclose(right, np.array(align.RIGHT_EYE) * 200, atol=4)

    out = tmp_path / "out"
    summary = predict.predict(trained_workdir, str(inputs), str(out), target_groups="0,13", paste_back=True)
    assert (summary.done, summary.failed) == (1, 1)  # the noise image has no face
    pasted = np.asarray(Image.open(out / "astronaut_photo_age_101+.png"))
    assert pasted.shape == astronaut.shape
    changed = np.abs(pasted.astype(int) - astronaut).max(axis=-1) > 0
    rows, cols = np.nonzero(changed)
    # Only pixels inside the aligned crop's footprint in the photo may change.
    to_crop = aligner.align(astronaut, 32).to_crop
    corners = np.linalg.inv(to_crop) @ np.array([[0, 0, 1], [32, 0, 1], [0, 32, 1], [32, 32, 1]]).T
    assert changed.sum() > 1000
    assert corners[0].min() - 1 <= cols.min() and cols.max() <= corners[0].max() + 1
    assert corners[1].min() - 1 <= rows.min() and rows.max() <= corners[1].max() + 1
    assert not changed[300:].any()  # the suit and the rest of the photo are untouched


def test_detection_needs_the_extra_or_aligned(trained_workdir, tmp_path, monkeypatch):
    import builtins
    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *a, **k: (
        (_ for _ in ()).throw(ImportError(name)) if name == "dlib" else real_import(name, *a, **k)))
    face().save(tmp_path / "a.jpg")
    with pytest.raises(align.AlignmentUnavailable, match=r"faceaging\[align\].*--aligned"):
        predict.predict(trained_workdir, str(tmp_path / "a.jpg"), str(tmp_path / "out"))


def test_run_load_restores_only_the_ema_generators_and_names_filled_defaults(trained_workdir, tmp_path):
    import json
    import shutil

    import jax

    from faceaging import checkpointing, schedules as schedules_lib, train_state

    trained = run_lib.load(trained_workdir)
    assert trained.step == 2 and set(trained.ema_params) == {"aging"} and trained.defaults_filled == ()
    # The same arrays as a full restore of the train state.
    config = trained.config
    abstract, _ = train_state.abstract_state(
        config, schedules_lib.get_schedule(config.data.schedule).num_groups,
        train_state.make_optimizers(config))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    full, _, _ = checkpointing.restore(
        checkpointing.make_manager(trained.workdir.checkpoints, read_only=True),
        checkpointing.with_shardings(abstract, jax.tree.map(lambda _: device, abstract)))
    assert jax.tree.structure(full.ema_params["aging"]) == jax.tree.structure(trained.params("aging"))
    for a, b in zip(jax.tree.leaves(full.ema_params["aging"]), jax.tree.leaves(trained.params("aging"))):
        np.testing.assert_array_equal(a, b)
    both = run_lib.load(trained_workdir, generators=run_lib.GENERATORS)
    assert set(both.ema_params) == {"aging", "restoring"}
    with pytest.raises(FileNotFoundError, match=r"no checkpoint of step 7 .* saved steps: \[2\]"):
        run_lib.load(trained_workdir, step=7)
    # A run saved before a config field existed (and before checkpoints held their config):
    # config.json is read, the field takes its default and is named.
    old = tmp_path / "old_run"
    shutil.copytree(trained_workdir, old)
    shutil.rmtree(old / "checkpoints" / "2" / checkpointing.CONFIG)
    saved = json.loads((old / "config.json").read_text())
    del saved["eval"]["evaluators"], saved["loss"]["preserve"]
    (old / "config.json").write_text(json.dumps(saved))
    assert run_lib.load(str(old)).defaults_filled == ("eval.evaluators", "loss.preserve")


def test_predict_through_the_cli_exit_codes_and_errors(trained_workdir, tmp_path, capsys):
    from absl import app

    from helpers import main_in_process

    (tmp_path / "in").mkdir()
    face(seed=1).save(tmp_path / "in" / "a.png")
    (tmp_path / "in" / "broken.png").write_bytes(b"")
    good = ["--mode=predict", f"--workdir={trained_workdir}", f"--input={tmp_path / 'in' / 'a.png'}",
            f"--output_dir={tmp_path / 'out'}", "--aligned", "--target_ages=5,70"]
    assert main_in_process(*good) == 0
    assert "done: 1, skipped (outputs exist): 0, failed: 0" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "out")) == ["a_age_0-5.png", "a_age_61-70.png", "a_grid.png"]
    # A broken input (or an existing output) exits 2 after doing the rest.
    code = main_in_process(*good[:2], f"--input={tmp_path / 'in'}", f"--output_dir={tmp_path / 'out2'}", "--aligned")
    assert code == predict.EXIT_SOME_FAILED and "done: 1, skipped (outputs exist): 0, failed: 1" in capsys.readouterr().out
    with pytest.raises(app.UsageError, match="needs --input and --output_dir"):
        main_in_process("--mode=predict", f"--workdir={trained_workdir}", f"--input={tmp_path}")
    step_dir = os.path.join(trained_workdir, "checkpoints", "2")
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    (untrained / "config.json").write_text(open(os.path.join(trained_workdir, "config.json")).read())
    for flags, message in [
            (["--paste_back"], "--paste_back needs detection: drop --aligned"),
            ([f"--checkpoint={trained_workdir}/ckpt/2"], "expected WORKDIR/checkpoints/STEP"),
            ([f"--checkpoint={os.path.dirname(step_dir)}/7"], r"no checkpoint of step 7 .* saved steps: \[2\]"),
            ([f"--workdir={untrained}"], "no checkpoint in .*untrained/checkpoints: train first"),
            ([f"--workdir={tmp_path / 'nothing'}"], "config.json not found")]:
        argv = [a for a in good if not (a.startswith("--workdir") and any(f.startswith("--workdir") for f in flags))]
        assert main_in_process(*argv, f"--output_dir={tmp_path / 'out3'}", *flags) == 1, flags
        assert re.search(message, capsys.readouterr().err), flags
    assert not (tmp_path / "out3").exists()  # errors before any output


def test_batches_are_padded_over_8_devices_without_changing_results(trained_workdir):
    import jax

    trained = run_lib.load(trained_workdir)
    images = np.stack([np.asarray(face((32, 32), seed=s)) for s in range(3)])  # 3: not a multiple of 8
    codes = np.eye(trained.schedule.num_groups, dtype=np.float32)[[0, 13]]
    one, eight = trained.ager(num_devices=1), trained.ager(num_devices=-1)
    assert eight.mesh.size == 8
    expected = one(one.place_params(trained.params()), images, codes)
    # Cross-device programs are not put in the persistent cache (loading them deadlocks on CPU).
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        got = eight(eight.place_params(trained.params()), images, codes)
    finally:
        jax.config.update("jax_enable_compilation_cache", True)
    assert got.shape == (3, 2, 32, 32, 3)
    # The same program up to how XLA:CPU splits each convolution over its threads, which a
    # batch of 1 per device changes: float sums in another order round a few pixels to the next
    # level. Misplaced or leaking padding rows would move whole images.
    difference = np.abs(got.astype(np.int16) - expected.astype(np.int16))
    assert difference.max() <= 1 and np.mean(difference > 0) < 1e-3, (difference.max(),
                                                                       np.mean(difference > 0))
