"""Weights files the tests make themselves: a random FID InceptionV3 and a tiny ONNX embedder."""

from flax import nnx
import numpy as np

from faceaging import inception, weight_files

FAKE_SOURCE_SHA256 = "0123abcd" + "0" * 56  # tests pin this prefix instead of 6726825d
FAKE_SOURCE_PREFIX = FAKE_SOURCE_SHA256[:8]

_TORCH_LEAF = {"kernel": "conv.weight", "scale": "bn.weight", "bias": "bn.bias",
               "mean": "bn.running_mean", "var": "bn.running_var"}


def inception_state_dict(seed: int = 0) -> dict:
    """A random InceptionV3 laid out as pytorch-fid's state dict (names, OIHW kernels)."""
    model = inception.InceptionV3(rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    arrays = {}
    for path, variable in nnx.to_flat_state(nnx.state(model)):
        *module, _, leaf = (str(p) for p in path)
        value = np.asarray(variable.get_value())
        if leaf == "kernel":
            value = value.transpose(3, 2, 0, 1)
        elif leaf == "var":
            value = rng.uniform(0.5, 1.5, value.shape).astype(np.float32)
        elif leaf in ("mean", "bias"):
            value = rng.normal(0, 0.1, value.shape).astype(np.float32)
        arrays[".".join(module) + "." + _TORCH_LEAF[leaf]] = value
        if leaf == "var":
            arrays[".".join(module) + ".bn.num_batches_tracked"] = np.array(0)
    arrays["fc.weight"] = np.zeros((1008, 2048), np.float32)  # classifier: unused by FID
    arrays["fc.bias"] = np.zeros(1008, np.float32)
    return arrays


def write_inception_weights(path: str, seed: int = 0) -> dict:
    arrays = inception_state_dict(seed)
    weight_files.write_npz(path, arrays, FAKE_SOURCE_SHA256)
    return arrays


def write_onnx_embedder(path: str, dim: int = 8, size: int = 112, seed: int = 0) -> None:
    """conv 8x8/8 -> ReLU -> global average pool -> flatten: (N, 3, size, size) -> (N, dim)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = np.random.default_rng(seed).normal(0, 0.1, (dim, 3, 8, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["images", "w"], ["c"], strides=[8, 8]),
         helper.make_node("Relu", ["c"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
         helper.make_node("Flatten", ["p"], ["embedding"])],
        "embedder", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", dim])],
        initializer=[numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
