"""float32 -> float16 conversion of an exported I3D graph (onnx + numpy, no torch).

Why not export a half-precision PyTorch model: CPU PyTorch has poor float16 convolution
support, and the service wants float32 input/output regardless of precision so callers never
change. Converting the finished graph keeps one export path and lets torch-free tools (the GPU
benchmark, :mod:`hamnet.i3d.export`) produce the fp16 variant from the fp32 file.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_fp16(model_proto: Any) -> Any:
    """Convert a float32 graph to float16 compute with float32 ``frames``/``features`` I/O."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = model_proto.graph
    for init in graph.initializer:
        if init.data_type == TensorProto.FLOAT:
            arr = numpy_helper.to_array(init).astype(np.float16)
            init.CopyFrom(numpy_helper.from_array(arr, init.name))
    for node in graph.node:
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT:
                attr.t.CopyFrom(
                    numpy_helper.from_array(numpy_helper.to_array(attr.t).astype(np.float16))
                )
        node.input[:] = ["frames_fp16" if i == "frames" else i for i in node.input]
        node.output[:] = ["features_fp16" if o == "features" else o for o in node.output]
    graph.node.insert(
        0,
        helper.make_node(
            "Cast", ["frames"], ["frames_fp16"], to=TensorProto.FLOAT16, name="frames_to_fp16"
        ),
    )
    graph.node.append(
        helper.make_node(
            "Cast", ["features_fp16"], ["features"], to=TensorProto.FLOAT, name="features_to_fp32"
        )
    )
    del graph.value_info[:]  # stale float32 annotations of intermediates
    onnx.checker.check_model(model_proto)
    return model_proto
