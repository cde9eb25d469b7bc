"""InceptionV3 pool features for FID and KID, with the standard FID weights supplied by the user.

The network is the FID variant of InceptionV3 (as in pytorch-fid, ported from TensorFlow's
2015-12-05 graph): branch average pools exclude padding, and the last block max-pools. Its
2048-d global-average-pool output is what FID and KID compare.

Weights are never downloaded. Users convert pytorch-fid's public file
``pt_inception-2015-12-05-6726825d.pth`` once (``python -m faceaging.inception SRC DST``, which
needs torch) into an ``.npz`` of its state dict; the converter checks the source's SHA-256
against the prefix in its name and stores that digest and a digest of the arrays in the file,
and loading verifies both.
"""

from __future__ import annotations

import sys

from flax import nnx
import jax
import jax.numpy as jnp

from faceaging.weight_files import WeightsError, file_sha256, read_verified_npz, write_npz

SOURCE_NAME = "pt_inception-2015-12-05-6726825d.pth"
SOURCE_SHA256_PREFIX = "6726825d"  # torch hub convention: the name carries its SHA-256 prefix
FEATURES = 2048


class BasicConv(nnx.Module):
    """Convolution without bias, batch norm (eps 1e-3, running statistics), ReLU."""

    def __init__(self, cin, cout, kernel, stride=1, padding=(0, 0), *, rngs):
        kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
        self.conv = nnx.Conv(cin, cout, kernel, strides=stride, use_bias=False,
                             padding=((padding[0],) * 2, (padding[1],) * 2), rngs=rngs)
        self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

    def __call__(self, x):
        return jax.nn.relu(self.bn(self.conv(x)))


def _avg_pool_same(x):
    return nnx.avg_pool(x, (3, 3), (1, 1), ((1, 1), (1, 1)), count_include_pad=False)


def _max_pool(x, stride=2, pad=0):
    return nnx.max_pool(x, (3, 3), (stride, stride), ((pad, pad), (pad, pad)))


class InceptionA(nnx.Module):
    def __init__(self, cin, pool_features, *, rngs):
        self.branch1x1 = BasicConv(cin, 64, 1, rngs=rngs)
        self.branch5x5_1 = BasicConv(cin, 48, 1, rngs=rngs)
        self.branch5x5_2 = BasicConv(48, 64, 5, padding=(2, 2), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=(1, 1), rngs=rngs)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, padding=(1, 1), rngs=rngs)
        self.branch_pool = BasicConv(cin, pool_features, 1, rngs=rngs)

    def __call__(self, x):
        return jnp.concatenate([
            self.branch1x1(x), self.branch5x5_2(self.branch5x5_1(x)),
            self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            self.branch_pool(_avg_pool_same(x))], axis=-1)


class InceptionB(nnx.Module):
    def __init__(self, cin, *, rngs):
        self.branch3x3 = BasicConv(cin, 384, 3, stride=2, rngs=rngs)
        self.branch3x3dbl_1 = BasicConv(cin, 64, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv(64, 96, 3, padding=(1, 1), rngs=rngs)
        self.branch3x3dbl_3 = BasicConv(96, 96, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        return jnp.concatenate([
            self.branch3x3(x), self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
            _max_pool(x)], axis=-1)


class InceptionC(nnx.Module):
    def __init__(self, cin, c7, *, rngs):
        self.branch1x1 = BasicConv(cin, 192, 1, rngs=rngs)
        self.branch7x7_1 = BasicConv(cin, c7, 1, rngs=rngs)
        self.branch7x7_2 = BasicConv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7_3 = BasicConv(c7, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_1 = BasicConv(cin, c7, 1, rngs=rngs)
        self.branch7x7dbl_2 = BasicConv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_3 = BasicConv(c7, c7, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7dbl_4 = BasicConv(c7, c7, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7dbl_5 = BasicConv(c7, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch_pool = BasicConv(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        dbl = x
        for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                      self.branch7x7dbl_4, self.branch7x7dbl_5):
            dbl = layer(dbl)
        return jnp.concatenate([
            self.branch1x1(x), self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x))), dbl,
            self.branch_pool(_avg_pool_same(x))], axis=-1)


class InceptionD(nnx.Module):
    def __init__(self, cin, *, rngs):
        self.branch3x3_1 = BasicConv(cin, 192, 1, rngs=rngs)
        self.branch3x3_2 = BasicConv(192, 320, 3, stride=2, rngs=rngs)
        self.branch7x7x3_1 = BasicConv(cin, 192, 1, rngs=rngs)
        self.branch7x7x3_2 = BasicConv(192, 192, (1, 7), padding=(0, 3), rngs=rngs)
        self.branch7x7x3_3 = BasicConv(192, 192, (7, 1), padding=(3, 0), rngs=rngs)
        self.branch7x7x3_4 = BasicConv(192, 192, 3, stride=2, rngs=rngs)

    def __call__(self, x):
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return jnp.concatenate([self.branch3x3_2(self.branch3x3_1(x)), b7, _max_pool(x)], axis=-1)


class InceptionE(nnx.Module):
    """``max_pool=False``: Mixed_7b (average pool); ``True``: Mixed_7c (max pool), as in FID."""

    def __init__(self, cin, max_pool: bool, *, rngs):
        self.max_pool = max_pool
        self.branch1x1 = BasicConv(cin, 320, 1, rngs=rngs)
        self.branch3x3_1 = BasicConv(cin, 384, 1, rngs=rngs)
        self.branch3x3_2a = BasicConv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3_2b = BasicConv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch3x3dbl_1 = BasicConv(cin, 448, 1, rngs=rngs)
        self.branch3x3dbl_2 = BasicConv(448, 384, 3, padding=(1, 1), rngs=rngs)
        self.branch3x3dbl_3a = BasicConv(384, 384, (1, 3), padding=(0, 1), rngs=rngs)
        self.branch3x3dbl_3b = BasicConv(384, 384, (3, 1), padding=(1, 0), rngs=rngs)
        self.branch_pool = BasicConv(cin, 192, 1, rngs=rngs)

    def __call__(self, x):
        b3 = self.branch3x3_1(x)
        dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = _max_pool(x, stride=1, pad=1) if self.max_pool else _avg_pool_same(x)
        return jnp.concatenate([
            self.branch1x1(x), self.branch3x3_2a(b3), self.branch3x3_2b(b3),
            self.branch3x3dbl_3a(dbl), self.branch3x3dbl_3b(dbl), self.branch_pool(pooled)], axis=-1)


class InceptionV3(nnx.Module):
    """Images in [-1, 1], (N, H, W, 3) with H, W >= 75 -> (N, 2048) pool features."""

    def __init__(self, *, rngs: nnx.Rngs):
        self.Conv2d_1a_3x3 = BasicConv(3, 32, 3, stride=2, rngs=rngs)
        self.Conv2d_2a_3x3 = BasicConv(32, 32, 3, rngs=rngs)
        self.Conv2d_2b_3x3 = BasicConv(32, 64, 3, padding=(1, 1), rngs=rngs)
        self.Conv2d_3b_1x1 = BasicConv(64, 80, 1, rngs=rngs)
        self.Conv2d_4a_3x3 = BasicConv(80, 192, 3, rngs=rngs)
        self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
        self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
        self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
        self.Mixed_6a = InceptionB(288, rngs=rngs)
        self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
        self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
        self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
        self.Mixed_7a = InceptionD(768, rngs=rngs)
        self.Mixed_7b = InceptionE(1280, max_pool=False, rngs=rngs)
        self.Mixed_7c = InceptionE(2048, max_pool=True, rngs=rngs)

    def __call__(self, x):
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(_max_pool(x)))
        x = _max_pool(x)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b,
                      self.Mixed_6c, self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b,
                      self.Mixed_7c):
            x = block(x)
        return x.mean(axis=(1, 2))


def pool_features(graph, params, images_uint8, image_size: int = 299):
    """(N, 2048) float32 features of uint8 images, resized bilinearly as pytorch-fid does."""
    x = images_uint8.astype(jnp.float32) / 255.0
    x = jax.image.resize(x, (x.shape[0], image_size, image_size, 3), "bilinear", antialias=False)
    return nnx.merge(graph, params)(2.0 * x - 1.0)


# pytorch state-dict leaf name -> (NNX leaf name, how to lay the array out for Flax)
_LEAVES = {"conv.weight": ("conv", "kernel", (2, 3, 1, 0)), "bn.weight": ("bn", "scale", None),
           "bn.bias": ("bn", "bias", None), "bn.running_mean": ("bn", "mean", None),
           "bn.running_var": ("bn", "var", None)}
_UNUSED = ("num_batches_tracked", "fc.", "AuxLogits.")


def load_inception(path: str, source_sha256_prefix: str = SOURCE_SHA256_PREFIX):
    """(graph, params) of the FID InceptionV3 from a converted weights file, verified."""
    arrays, source = read_verified_npz(path, "FID InceptionV3")
    if not source.startswith(source_sha256_prefix):
        raise WeightsError(f"{path} was converted from a file with SHA-256 {source or '?'}, not "
                           f"{SOURCE_NAME} (SHA-256 {source_sha256_prefix}...)")
    graph, state = nnx.split(nnx.eval_shape(lambda: InceptionV3(rngs=nnx.Rngs(0))))
    flat = dict(nnx.to_flat_state(state))
    loaded = {}
    for name, array in arrays.items():
        if name.startswith(_UNUSED) or name.endswith(_UNUSED):
            continue
        module, leaf = name.rsplit(".", 2)[0], ".".join(name.rsplit(".", 2)[1:])
        if leaf not in _LEAVES:
            raise WeightsError(f"{path}: unexpected entry {name!r}")
        sub, flax_leaf, axes = _LEAVES[leaf]
        key = (*module.split("."), sub, flax_leaf)
        if key not in flat:
            raise WeightsError(f"{path}: entry {name!r} matches no InceptionV3 layer")
        value = array.transpose(axes) if axes else array
        if value.shape != flat[key].get_value().shape:
            raise WeightsError(f"{path}: {name} has shape {array.shape}, expected one that lays "
                               f"out as {flat[key].get_value().shape}")
        loaded[key] = jnp.asarray(value, jnp.float32)
    missing = sorted(".".join(k) for k in flat if k not in loaded)
    if missing:
        raise WeightsError(f"{path}: {len(missing)} InceptionV3 weights missing, e.g. {missing[0]}")
    for key, value in loaded.items():
        flat[key] = flat[key].replace(value)
    return graph, nnx.from_flat_state(flat)


def convert(source: str, destination: str, expected_prefix: str = SOURCE_SHA256_PREFIX) -> str:
    """Converts pytorch-fid's ``.pth`` into the ``.npz`` :func:`load_inception` reads (needs torch)."""
    sha256 = file_sha256(source)
    if not sha256.startswith(expected_prefix):
        raise WeightsError(f"{source}: SHA-256 {sha256} does not start with {expected_prefix}; "
                           f"expected pytorch-fid's {SOURCE_NAME}")
    import torch  # only the one-off conversion needs torch

    state = torch.load(source, map_location="cpu", weights_only=True)
    write_npz(destination, {k: v.numpy() for k, v in state.items()}, sha256)
    return sha256


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(f"usage: python -m faceaging.inception {SOURCE_NAME} fid_inception.npz")
    print(f"converted {sys.argv[1]} (SHA-256 {convert(*sys.argv[1:])}) -> {sys.argv[2]}")
