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
from helpers import SMALLEST_MODEL, main_in_process
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
    assert image_metrics.psnr(a, a).tolist() == [image_metrics.MAX_PSNR] * 2  # finite for identical
    # SSIM as scikit-image computes it with the papers' choices (Gaussian 11x11 window, sigma 1.5,
    # population statistics, per channel, mean over the valid region).
    for x, y in ((a, noisy), (a, 255 - a), (a, shifted), (a, a)):
        reference = [structural_similarity(p, q, win_size=11, channel_axis=-1, data_range=255,
                                           gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False)
                     for p, q in zip(x, y)]
        np.testing.assert_allclose(image_metrics.ssim(x, y), reference, atol=1e-4)


def test_soft_labels_peak_at_the_age():
    labels = age_estimator.soft_labels(jnp.array([0, 40, 130]), 3.0)
    np.testing.assert_allclose(labels.sum(axis=1), 1, rtol=1e-5)
    assert list(np.argmax(labels, axis=1)) == [0, 40, age_estimator.MAX_AGE]


def test_estimator_and_eval_on_synthfaces(synth_tiny_config, tmp_path, fid_weights, capsys):
    config = synth_tiny_config
    config.model.update(SMALLEST_MODEL)
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
    assert set(traits) == {f"trait_accuracy_{t}" for t in trait_classifier.TRAITS} | {"landmark_error_pixels"}

    # Without weights (the evaluators that need none, beside the two that are skipped).
    assert main_in_process("--mode=eval", *cli_config, f"--config.eval.weights_dir={config.eval.weights_dir}",
                           "--config.eval.evaluators=age,cycle,identity,fid_kid") == 0
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
    missing.evaluators = "fid_kid"
    missing.fid_weights = str(tmp_path / "typo.npz")  # named explicitly: an error, not a skip
    with pytest.raises(WeightsError, match="typo.npz"):
        evaluate.evaluate(workdir, missing)

    write_onnx_embedder(str(tmp_path / "arcface.onnx"))
    eval_config = config.eval.copy_and_resolve_references()
    eval_config.fid_weights, eval_config.identity_weights = fid_weights[0], str(tmp_path / "arcface.onnx")
    report = evaluate.evaluate(workdir, eval_config)
    assert report["step"] == 4 and len(report["groups"]) == 6 and not report["skipped"]
    # 8 fresh identities x one input per group; 5 target != source cells per input.
    assert report["split"] == "fresh" and report["num_images"] == 48 and report["num_identities"] == 8
    assert report["num_cells"] == 48 * 5 and report["num_adult_child_cells"] == 8 * 4 * 2
    for label, row in report["groups"].items():
        assert 0 <= row["age_group_accuracy"] <= 1 and row["cycle_psnr"] > 0
        assert row["gt_l1"] > 0 and row["gt_l1_baseline_input"] >= 0 and row["gt_l1_baseline_mean"] > 0
        assert 0 <= row["trait_agreement"] <= 1
        assert row["fid"] > 0 and np.isfinite(row["kid"]) and -1 <= row["identity_similarity"] <= 1
        low, high = report["groups_ci"][label]["gt_l1"]
        assert low <= row["gt_l1"] <= high
    matrix = report["age_accuracy_matrix"]["values"]
    assert [matrix[i][i] for i in range(6)] == [None] * 6
    assert report["mean"]["age_group_accuracy"] == pytest.approx(
        np.mean([v for row in matrix for v in row if v is not None]))  # equal cells per pair
    by_source = report["trait_agreement_by_source_group"]  # equal cells per source group
    assert set(by_source) == set(report["groups"]) and set(by_source["70+"]) == set(trait_classifier.TRAITS)
    assert report["mean"]["trait_agreement"] == pytest.approx(
        np.mean([list(kept.values()) for kept in by_source.values()]))
    assert report["mean"]["gt_l1_ratio"] == pytest.approx(
        report["mean"]["gt_l1"] / report["mean"]["gt_l1_baseline_input"])
    for key in without_weights["mean"]:  # the weights add metrics, they change none
        assert report["mean"][key] == without_weights["mean"][key]
    saved = json.load(open(os.path.join(workdir, "eval", "4.json")))
    assert saved["mean"] == report["mean"]
    table = open(os.path.join(workdir, "eval", "4.md")).read()
    assert "| 70+ |" in table and "gt_l1_baseline_mean" in table and "| fid | kid |" in table
    assert "| adult<->child |" in table and "source \\ target" in table

    # The fresh faces: identities of no dataset, each at one age of every group, rendered as the
    # dataset's images are (JPEG, decoded at image_size).
    trained = run_lib.load(workdir, generators=run_lib.GENERATORS)
    ctx = evaluate.make_context(trained, eval_config)
    dataset_identities = {row["identity"] for row in synthfaces.read_index(config.data.manual_dir)}
    assert set(ctx.units) == set(synthfaces.EVAL_IDENTITY_BASE + np.arange(8))
    assert not set(ctx.units) & dataset_identities
    for unit in set(ctx.units):
        assert sorted(ctx.source_groups[ctx.units == unit]) == list(range(6))
    for i in (0, 7, 40):
        identity = synthfaces.make_identity(0, synthfaces.identity_index(ctx.records[i]["file_name"]))
        rendered = np.asarray(Image.fromarray(synthfaces.render(identity, ctx.records[i]["age"])).resize((32, 32), Image.BICUBIC))
        assert identity.index == ctx.units[i] and image_metrics.l1(ctx.images[i:i + 1], rendered[None])[0] < 6

    # Known answers through the evaluators themselves.
    k_groups = trained.schedule.num_groups
    unchanged = dataclasses.replace(ctx, aged=np.repeat(ctx.images[:, None], k_groups, axis=1))
    truth = evaluators.get("synthfaces_truth")(unchanged)
    identity = evaluators.get("identity")(unchanged)
    geometry = evaluators.get("geometry")(unchanged)
    for k in range(k_groups):  # a generator that returns its input...
        row = truth.per_image(k, unchanged.aged[:, k])
        np.testing.assert_array_equal(row["gt_l1"], row["gt_l1_baseline_input"])  # ...is the input baseline
        assert row["gt_l1"].mean() > 0
        if "female_stubble" in row:
            np.testing.assert_array_equal(row["female_stubble"], row["female_stubble_input"])
        shape = geometry.per_image(k, unchanged.aged[:, k])
        np.testing.assert_allclose(shape["geometry_error"], shape["geometry_error_baseline_input"], rtol=1e-5)
        similarity = identity.per_image(k, unchanged.aged[:, k])["identity_similarity"]
        np.testing.assert_allclose(similarity, 1.0, atol=1e-5)  # ...and keeps identity perfectly
    perfect = dataclasses.replace(ctx, aged=np.stack([ctx.true_renders(k) for k in range(k_groups)], axis=1))
    perfect._cache = ctx._cache
    for k in range(k_groups):  # a generator that returns the true render...
        row = truth.per_image(k, perfect.aged[:, k])
        assert row["gt_l1"].max() == 0  # ...has no ground-truth error
        if "female_stubble" in row:  # ...paints no stubble on women
            assert np.nansum(row["female_stubble"]) == 0 and np.isfinite(row["female_stubble"]).any()
        shape = geometry.per_image(k, perfect.aged[:, k])  # ...and the reader's own error
        np.testing.assert_allclose(shape["geometry_error"], shape["geometry_error_truth"], rtol=1e-5)
    # An estimator that reads each aged image as its target group's representative age.
    age = evaluators.get("age")(ctx)
    for k in range(k_groups):
        age.estimate = lambda images, k=k: np.full(len(images), trained.schedule.representative_age(k), np.float32)
        row = age.per_image(k, ctx.aged[:, k])
        assert row["age_group_accuracy"].tolist() == [1.0] * 48 and row["age_mae"].max() == 0
        other = (k + 1) % k_groups
        assert age.per_image(other, ctx.aged[:, other])["age_group_accuracy"].max() == 0.0

    # The held-out split instead of fresh identities: its first num_images images.
    held_out = eval_config.copy_and_resolve_references()
    held_out.fresh_identities = 0
    validation = evaluate.make_context(trained, held_out)
    assert validation.split == "validation" and len(validation.images) == 8
    assert set(validation.units) <= dataset_identities

    # A target group with fewer than 2 real images has no FID/KID: None, shown as n/a.
    fid = evaluators.get("fid_kid")(ctx)
    reals = ctx.training_images(None)
    ctx._cache[("training_images", None)] = [reals[0][:1], *reals[1:]]
    assert fid.per_group(0, ctx.aged[:, 0]) == {"fid": None, "kid": None}
    assert fid.per_group(1, ctx.aged[:, 1])["fid"] > 0
    report["groups"]["0-9"]["fid"] = None
    assert "| 0-9 | n/a |" in evaluate.markdown(report)


def _two_sample_context(aged_from):
    """A context of 24 identities x 3 groups whose 'aged' images are ``aged_from(inputs)``."""
    import types

    import ml_collections

    rng = np.random.default_rng(0)
    identities, groups = 24, 3
    shades = np.array([60, 130, 200])  # each group has its own brightness; identities vary a bit
    images = np.stack([np.clip(rng.normal(shades[g], 12, (16, 16, 3)), 0, 255)
                       for _ in range(identities) for g in range(groups)]).astype(np.uint8)
    sources = np.tile(np.arange(groups), identities)
    units = np.repeat(np.arange(identities), groups)
    # Each input "aged" to group k: another real image of group k, or a doctored one.
    real_of_group = np.stack([images[sources == k] for k in range(groups)], axis=1)  # (ids, K, ...)
    aged = aged_from(np.repeat(real_of_group, groups, axis=0)[:, :, ::-1])  # mirrored: not the input
    eval_config = ml_collections.ConfigDict(dict(batch_size=16, two_sample_steps=150,
                                                 two_sample_channels=(8, 16)))
    return types.SimpleNamespace(images=images, aged=aged, source_groups=sources, units=units,
                                 eval_config=eval_config, config=ml_collections.ConfigDict({"seed": 0}))


def test_two_sample_classifier_tells_doctored_faces_and_not_real_ones():
    honest = evaluators.get("two_sample")(_two_sample_context(lambda real: real)).summary()
    assert honest["two_sample_test_identities"] == 12 and honest["two_sample_test_images"] == 72
    assert 0.3 <= honest["two_sample_accuracy"] <= 0.7  # real vs real: chance

    def streaked(real):
        out = real.copy()
        out[..., 6:8, :, :] = (255, 120, 0)  # an orange streak no real image has
        return out

    caught = evaluators.get("two_sample")(_two_sample_context(streaked)).summary()
    assert caught["two_sample_accuracy"] >= 0.95
    low, high = caught["two_sample_accuracy_ci"]
    assert low <= caught["two_sample_accuracy"] <= high


def test_a_trait_classifier_without_landmark_outputs_is_refused_with_the_fix(synth_tiny_config, tmp_path):
    from flax import nnx

    from faceaging import small_models
    from faceaging.workdir import Workdir

    c = synth_tiny_config
    older = small_models.ConvNet(c.traits.channels, trait_classifier.NUM_CLASSES, c.traits.strides,
                                 rngs=nnx.Rngs(0))  # traits only, as faceaging trained it before
    small_models.save_params(Workdir(str(tmp_path)).trait_classifier, 20, nnx.state(older))
    with pytest.raises(FileNotFoundError, match="has no landmark outputs .* run --mode=train_traits again"):
        trait_classifier.load_trait_classifier(c, str(tmp_path))
