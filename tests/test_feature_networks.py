"""FID InceptionV3 and face-embedding loaders on weights files the tests write; FID/KID maths."""

import os

from flax import nnx
import jax
import numpy as np
import pytest

from faceaging import config as config_lib, face_embedding, feature_metrics, inception, weight_files
from weights_fixtures import FAKE_SOURCE_SHA256, FAKE_SOURCE_PREFIX as PREFIX
from weights_fixtures import inception_state_dict, write_inception_weights, write_onnx_embedder


def test_inception_loads_converted_weights(fid_weights):
    path, arrays = fid_weights
    graph, params = inception.load_inception(path, PREFIX)
    flat = dict(nnx.to_flat_state(params))
    np.testing.assert_array_equal(flat[("Mixed_6b", "branch7x7_2", "conv", "kernel")].get_value(),
                                  arrays["Mixed_6b.branch7x7_2.conv.weight"].transpose(2, 3, 1, 0))
    np.testing.assert_array_equal(flat[("Mixed_7c", "branch_pool", "bn", "var")].get_value(),
                                  arrays["Mixed_7c.branch_pool.bn.running_var"])
    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    features = np.asarray(jax.jit(lambda x: inception.pool_features(graph, params, x, 75))(images))
    assert features.shape == (3, inception.FEATURES) and np.isfinite(features).all()
    assert np.all(features >= 0) and np.abs(features[0] - features[1]).max() > 0  # after ReLU; per image


def _rewrite(path, arrays, source=FAKE_SOURCE_SHA256, keep_digest_of=None):
    """Writes ``arrays``; with ``keep_digest_of``, stores that (stale) content digest instead."""
    weight_files.write_npz(path, arrays, source)
    if keep_digest_of is not None:
        with np.load(path) as data:
            stored = {k: data[k] for k in data.files}
        stored[weight_files.META_CONTENT] = np.array(weight_files.content_digest(keep_digest_of))
        np.savez(path, **stored)


def test_inception_rejects_bad_weights_files(fid_weights, tmp_path):
    _, arrays = fid_weights
    bad = str(tmp_path / "bad.npz")
    with pytest.raises(weight_files.WeightsError, match="not found"):
        inception.load_inception(str(tmp_path / "missing.npz"), PREFIX)
    with open(bad, "wb") as f:
        f.write(b"not a zip file")
    with pytest.raises(weight_files.WeightsError, match="bad.npz: not a readable .npz"):
        inception.load_inception(bad, PREFIX)
    edited = dict(arrays, **{"Conv2d_1a_3x3.bn.running_mean": arrays["Conv2d_1a_3x3.bn.running_mean"] + 1})
    _rewrite(bad, edited, keep_digest_of=arrays)
    with pytest.raises(weight_files.WeightsError, match="bad.npz: content checksum mismatch"):
        inception.load_inception(bad, PREFIX)
    _rewrite(bad, arrays, source="ffff" + "0" * 60)
    with pytest.raises(weight_files.WeightsError, match="not pt_inception-2015-12-05"):
        inception.load_inception(bad, PREFIX)
    _rewrite(bad, {k: v for k, v in arrays.items() if k != "Mixed_5b.branch1x1.conv.weight"})
    with pytest.raises(weight_files.WeightsError, match="1 InceptionV3 weights missing, e.g. Mixed_5b.branch1x1.conv.kernel"):
        inception.load_inception(bad, PREFIX)
    _rewrite(bad, dict(arrays, **{"Mixed_5b.branch1x1.conv.weight": np.zeros((64, 192, 3, 3), np.float32)}))
    with pytest.raises(weight_files.WeightsError, match="Mixed_5b.branch1x1.conv.weight has shape"):
        inception.load_inception(bad, PREFIX)


def test_inception_converter_checks_the_source_checksum(tmp_path):
    source = tmp_path / inception.SOURCE_NAME
    source.write_bytes(b"some other file")
    with pytest.raises(weight_files.WeightsError, match="does not start with 6726825d"):
        inception.convert(str(source), str(tmp_path / "out.npz"))
    assert not os.path.exists(tmp_path / "out.npz")


def reference_fid(a, b):
    """pytorch-fid's formula: scipy's sqrtm of the covariance product, 1e-6 added if singular."""
    import scipy.linalg

    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(cov_a @ cov_b)
    if not np.isfinite(covmean).all():
        offset = np.eye(a.shape[1]) * 1e-6
        covmean = scipy.linalg.sqrtm((cov_a + offset) @ (cov_b + offset))
    diff = a.mean(0) - b.mean(0)
    return diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2 * np.trace(covmean.real)


@pytest.mark.parametrize("sizes", [(500, 300, 32), (20, 40, 96)], ids=["full-rank", "singular"])
def test_fid_equals_the_reference_formula(sizes):
    rng = np.random.default_rng(1)
    a = rng.normal(size=sizes[::2]) @ rng.normal(size=(sizes[2], sizes[2]))
    b = 1.3 * rng.normal(size=sizes[1:]) + 0.2
    np.testing.assert_allclose(feature_metrics.frechet_distance(a, b), reference_fid(a, b),
                               rtol=1e-10 if sizes[0] > sizes[2] else 1e-6)


def test_fid_and_kid():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 16))
    shift = np.full(16, 0.5)
    assert abs(feature_metrics.frechet_distance(a, a)) < 1e-6
    np.testing.assert_allclose(feature_metrics.frechet_distance(a, a + shift), shift @ shift, rtol=1e-6)
    b = rng.normal(size=(400, 16))
    same = feature_metrics.kernel_inception_distance(a, b, num_subsets=20, subset_size=200)
    shifted = feature_metrics.kernel_inception_distance(a, b + 1.0, num_subsets=20, subset_size=200)
    assert abs(same) < 0.02 and shifted > 0.2
    with pytest.raises(ValueError, match="at least 2"):
        feature_metrics.frechet_distance(a[:1], a)


def test_face_embedder(tmp_path):
    path = str(tmp_path / "arcface.onnx")
    write_onnx_embedder(path)
    c = config_lib.base_config().eval
    embed = face_embedding.FaceEmbedder(path, c)
    assert embed.size == (112, 112) and embed.channels_first
    rng = np.random.default_rng(0)
    faces = rng.integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    e = embed(faces)
    assert e.shape == (4, 8)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, rtol=1e-6)
    np.testing.assert_allclose(face_embedding.cosine_similarity(e, embed(faces)), 1, rtol=1e-6)
    assert face_embedding.cosine_similarity(e, embed(faces[::-1]))[0] < 0.9999
    c.identity_channels = "BGR"
    assert np.abs(face_embedding.FaceEmbedder(path, c)(faces) - e).max() > 1e-4

    c.identity_weights_sha256 = weight_files.file_sha256(path)
    face_embedding.FaceEmbedder(path, c)
    c.identity_weights_sha256 = "0" * 64
    with pytest.raises(weight_files.WeightsError, match="arcface.onnx: SHA-256 .* does not match"):
        face_embedding.FaceEmbedder(path, c)
    c.identity_weights_sha256 = ""
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\x00" * 100)
    with pytest.raises(weight_files.WeightsError, match="garbage.onnx: not an ONNX model"):
        face_embedding.FaceEmbedder(str(garbage), c)
    with pytest.raises(weight_files.WeightsError, match="not found"):
        face_embedding.FaceEmbedder(str(tmp_path / "none.onnx"), c)


def test_inception_matches_pytorch_fid(tmp_path, monkeypatch):
    """Where torch and pytorch-fid are installed: same weights, same features as pytorch-fid."""
    torch = pytest.importorskip("torch")
    pytorch_fid = pytest.importorskip("pytorch_fid.inception")
    arrays = write_inception_weights(str(tmp_path / "w.npz"), seed=1)
    state = {k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}
    monkeypatch.setattr(pytorch_fid, "load_state_dict_from_url", lambda *a, **k: state)
    reference = pytorch_fid.InceptionV3([3]).eval()  # resize to 299 and scale to [-1, 1] inside
    images = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    with torch.no_grad():
        ref = reference(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)[0][:, :, 0, 0].numpy()
    graph, params = inception.load_inception(str(tmp_path / "w.npz"), PREFIX)
    ours = np.asarray(inception.pool_features(graph, params, images))
    np.testing.assert_allclose(ours, ref, atol=1e-4 * np.abs(ref).max())


def test_inception_converter_writes_what_the_loader_reads(tmp_path, monkeypatch):
    """convert(): checksum -> torch.load -> verified .npz, with torch replaced by a stand-in that
    returns the state dict (CI has no torch); then the errors a user can meet."""
    import sys
    import types

    from faceaging.weight_files import file_sha256

    state = inception_state_dict(seed=2)
    source = tmp_path / "pt_inception.pth"
    source.write_bytes(b"stand-in for pytorch-fid's weights")
    fake_torch = types.SimpleNamespace(load=lambda path, map_location, weights_only: {
        k: types.SimpleNamespace(numpy=lambda v=v: np.asarray(v)) for k, v in state.items()})
    monkeypatch.setitem(sys.modules, "torch", fake_torch)
    prefix = file_sha256(str(source))[:8]
    out = tmp_path / "weights" / "fid_inception.npz"
    assert inception.convert(str(source), str(out), expected_prefix=prefix).startswith(prefix)
    _, params = inception.load_inception(str(out), prefix)
    write_inception_weights(str(tmp_path / "reference.npz"), seed=2)  # the same state dict
    _, reference = inception.load_inception(str(tmp_path / "reference.npz"), PREFIX)
    assert jax.tree.structure(params) == jax.tree.structure(reference)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference)):
        np.testing.assert_array_equal(a, b)
    assert os.listdir(out.parent) == ["fid_inception.npz"]  # written atomically: no temp left
    with pytest.raises(weight_files.WeightsError, match="was converted from a file with SHA-256"):
        inception.load_inception(str(out), "00000000")  # not the file the config pins
    with pytest.raises(FileNotFoundError):
        inception.convert(str(tmp_path / "missing.pth"), str(tmp_path / "x.npz"), expected_prefix=prefix)
