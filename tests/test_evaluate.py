import dataclasses
import json
import os

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from faceaging import age_estimator, datasets, evaluate, image_metrics, input_pipeline, schedules, train
from faceaging import evaluators, run as run_lib, trait_classifier
from faceaging.datasets import synthfaces
from faceaging.weight_files import WeightsError
from helpers import main_in_process
from weights_fixtures import FAKE_SOURCE_PREFIX, write_onnx_embedder


def test_image_metrics_match_reference_values():
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(0)
    a = rng.integers(10, 246, (2, 32, 32, 3), dtype=np.uint8)
    shifted = a + np.uint8(10)  # every pixel 10 levels brighter
    np.testing.assert_allclose(image_metrics.l1(a, a), 0)
    np.testing.assert_allclose(image_metrics.l1(a, shifted), 10, rtol=1e-5)
    np.testing.assert_allclose(image_metrics.psnr(a, shifted), 20 * np.log10(255 / 10), atol=1e-3)  # 28.13 dB
    np.testing.assert_allclose(image_metrics.psnr(a, shifted), 28.13, atol=0.01)
    noisy = np.clip(a.astype(int) + rng.integers(-30, 31, a.shape), 0, 255).astype(np.uint8)
    # SSIM as scikit-image computes it with the same choices (uniform 7x7 window, population
    # statistics, per channel, mean over the valid region).
    for x, y in ((a, noisy), (a, 255 - a), (a, shifted), (a, a)):
        reference = [structural_similarity(p, q, win_size=7, channel_axis=-1, data_range=255,
                                           gaussian_weights=False, use_sample_covariance=False)
                     for p, q in zip(x, y)]
        np.testing.assert_allclose(image_metrics.ssim(x, y), reference, atol=1e-4)


def test_soft_labels_peak_at_the_age():
    labels = age_estimator.soft_labels(jnp.array([0, 40, 130]), 3.0)
    np.testing.assert_allclose(labels.sum(axis=1), 1, rtol=1e-5)
    assert list(np.argmax(labels, axis=1)) == [0, 40, age_estimator.MAX_AGE]


def test_estimator_and_eval_on_synthfaces(synth_tiny_config, tmp_path, fid_weights, capsys):
    config = synth_tiny_config
    config.train.steps = 4
    config.eval.weights_dir = str(tmp_path / "no_weights_here")
    config.eval.fid_source_sha256_prefix = FAKE_SOURCE_PREFIX
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(config, workdir)
    with pytest.raises(FileNotFoundError, match="no age estimator in .*age_estimator: run --mode=train_estimator first"):
        evaluate.evaluate(workdir)
    # The evaluation networks and the evaluation itself through the CLI, as a user runs them.
    cli_config = ["--config=configs/synthfaces.py:tiny", f"--workdir={workdir}",
                  f"--config.data.manual_dir={config.data.manual_dir}",
                  f"--config.data.data_dir={config.data.data_dir}", "--config.mesh.num_devices=1"]
    capsys.readouterr()
    assert main_in_process("--mode=train_estimator", *cli_config) == 0
    real = json.loads(capsys.readouterr().out)
    assert set(real) == {"estimator_mae_real", "estimator_accuracy_real", "num_images"}
    assert 0 <= real["estimator_accuracy_real"] <= 1 and real["estimator_mae_real"] >= 0

    assert main_in_process("--mode=train_traits", *cli_config) == 0
    traits = json.loads(capsys.readouterr().out)
    assert set(traits) == {f"trait_accuracy_{t}" for t in trait_classifier.TRAITS}

    assert main_in_process("--mode=eval", *cli_config, f"--config.eval.weights_dir={config.eval.weights_dir}") == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith(f"Report: {os.path.join(workdir, 'eval', '4.md')}")
    without_weights = json.load(open(os.path.join(workdir, "eval", "4.json")))
    assert json.loads(printed[:printed.rindex("}") + 1]) == without_weights["mean"]
    assert set(without_weights["skipped"]) == {"fid_kid", "identity_similarity"}
    assert "fid" not in without_weights["mean"] and "Skipped fid_kid: no weights at" in open(
        os.path.join(workdir, "eval", "4.md")).read()

    only_cycle = config.eval.copy_and_resolve_references()
    only_cycle.evaluators = "cycle"  # the config picks the evaluators; nothing else runs
    report = evaluate.evaluate(workdir, only_cycle)
    assert set(report["mean"]) == {"cycle_l1", "cycle_psnr", "cycle_ssim"} and not report["skipped"]
    assert report["mean"] == {k: without_weights["mean"][k] for k in report["mean"]}
    only_cycle.evaluators = "cycle,fidd"
    with pytest.raises(ValueError, match="evaluators='cycle,fidd': unknown fidd"):
        evaluate.evaluate(workdir, only_cycle)

    missing = config.eval.copy_and_resolve_references()
    missing.fid_weights = str(tmp_path / "typo.npz")  # named explicitly: an error, not a skip
    with pytest.raises(WeightsError, match="typo.npz"):
        evaluate.evaluate(workdir, missing)

    write_onnx_embedder(str(tmp_path / "arcface.onnx"))
    eval_config = config.eval.copy_and_resolve_references()
    eval_config.fid_weights, eval_config.identity_weights = fid_weights[0], str(tmp_path / "arcface.onnx")
    report = evaluate.evaluate(workdir, eval_config)
    assert report["step"] == 4 and len(report["groups"]) == 6 and not report["skipped"]
    assert report["split"] == "validation" and report["num_images"] == 8
    for row in report["groups"].values():
        assert 0 <= row["age_group_accuracy"] <= 1 and row["cycle_psnr"] > 0
        assert row["gt_l1"] > 0 and row["gt_l1_baseline_input"] >= 0 and row["gt_l1_baseline_mean"] > 0
        assert 0 <= row["trait_agreement"] <= 1
        assert row["fid"] > 0 and np.isfinite(row["kid"]) and -1 <= row["identity_similarity"] <= 1
    for key in without_weights["mean"]:  # the weights add metrics, they change none
        assert report["mean"][key] == without_weights["mean"][key]
    # The ground-truth path finds each file's identity: re-rendered at its own age, it is the input.
    builder = datasets.prepare(config)
    source = input_pipeline.open_split(builder, report["split"], schedules.get_schedule(config.data.schedule))
    for i in range(3):
        record = source.record(i)
        identity = synthfaces.make_identity(0, synthfaces.identity_index(record["file_name"]))
        rendered = np.asarray(Image.fromarray(synthfaces.render(identity, int(record["age"]))).resize((32, 32), Image.BICUBIC))
        decoded = input_pipeline.decode_image(record["image"], 32)
        assert image_metrics.l1(decoded[None], rendered[None])[0] < 6
    saved = json.load(open(os.path.join(workdir, "eval", "4.json")))
    assert saved["mean"] == report["mean"]
    table = open(os.path.join(workdir, "eval", "4.md")).read()
    assert "| 70+ |" in table and "gt_l1_baseline_mean" in table and "| fid | kid |" in table

    # Known answers through the evaluators themselves.
    trained = run_lib.load(workdir, generators=run_lib.GENERATORS)
    ctx = evaluate.make_context(trained, eval_config)
    k_groups = trained.schedule.num_groups
    unchanged = dataclasses.replace(ctx, aged=np.repeat(ctx.images[:, None], k_groups, axis=1))
    truth = evaluators.get("synthfaces_truth")(unchanged)
    identity = evaluators.get("identity")(unchanged)
    for k in range(k_groups):  # a generator that returns its input...
        row = truth.group_metrics(k, unchanged.aged[:, k])
        assert row["gt_l1"] == row["gt_l1_baseline_input"] > 0  # ...is the input baseline
        similarity = identity.group_metrics(k, unchanged.aged[:, k])["identity_similarity"]
        assert similarity == pytest.approx(1.0, abs=1e-5)  # ...and keeps identity perfectly
    # An estimator that reads each aged image as its target group's representative age.
    age = evaluators.get("age")(ctx)
    for k in range(k_groups):
        age.estimate = lambda images, k=k: np.full(len(images), trained.schedule.representative_age(k), np.float32)
        assert age.group_metrics(k, ctx.aged[:, k]) == {"age_group_accuracy": 1.0, "age_mae": 0.0}
        other = (k + 1) % k_groups
        assert age.group_metrics(other, ctx.aged[:, other])["age_group_accuracy"] == 0.0

    # A target group with fewer than 2 real images has no FID/KID: None, shown as n/a.
    fid = evaluators.get("fid_kid")(ctx)
    reals = ctx.training_images(None)
    ctx._cache[("training_images", None)] = [reals[0][:1], *reals[1:]]
    assert fid.group_metrics(0, ctx.aged[:, 0]) == {"fid": None, "kid": None}
    assert fid.group_metrics(1, ctx.aged[:, 1])["fid"] > 0
    table = evaluate.markdown({"step": 4, "num_images": 8, "split": "validation", "skipped": {},
                               "groups": {"0-9": {"fid": None}}, "mean": {"fid": None}}, ["fid"])
    assert "| 0-9 | n/a |" in table and "| mean | n/a |" in table
