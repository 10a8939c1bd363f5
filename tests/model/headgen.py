"""A tiny HAM-Net-shaped ONNX head built with ``onnx.helper`` (no torch export needed).

Input ``features`` [B, T, D]; outputs ``cas`` = features @ W  ([B, T, C+1]) and
``attention`` = sigmoid(features @ w + b) ([B, T, 1]) -- the graph interface of
``hamnet.nn.export.export_onnx``, so bundles and the pipeline can be tested without torch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_head(
    path: Path, feature_dim: int, num_classes: int, seed: int = 0, weights=None,
    atn_bias: float = 0.0,
) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    if weights is None:
        w_cas = rng.normal(0, 0.5, (feature_dim, num_classes + 1)).astype(np.float32)
        w_atn = rng.normal(0, 0.5, (feature_dim, 1)).astype(np.float32)
    else:
        w_cas, w_atn = (np.asarray(x, np.float32) for x in weights)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["features", "w_cas"], ["cas"]),
            helper.make_node("MatMul", ["features", "w_atn"], ["logit0"]),
            helper.make_node("Add", ["logit0", "b_atn"], ["logit"]),
            helper.make_node("Sigmoid", ["logit"], ["attention"]),
        ],
        "tiny_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["B", "T", feature_dim])],
        [
            helper.make_tensor_value_info("cas", TensorProto.FLOAT, ["B", "T", num_classes + 1]),
            helper.make_tensor_value_info("attention", TensorProto.FLOAT, ["B", "T", 1]),
        ],
        initializer=[
            numpy_helper.from_array(w_cas, "w_cas"),
            numpy_helper.from_array(w_atn, "w_atn"),
            numpy_helper.from_array(np.array([atn_bias], np.float32), "b_atn"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # readable by every onnxruntime >= 1.10
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
