"""The TV-L1 algorithm as one ONNX graph per frame size (see the package docstring)."""

from __future__ import annotations

from typing import Any

import numpy as np

from hamnet.video.tvl1.blocks import (
    _FLT_EPS,
    EPSILON,
    I3D_BOUND,
    INNER,
    LAMBDA,
    MIN_FRAME,
    OPSET,
    OUTER,
    SCALE_STEP,
    TAU,
    THETA,
    WARPS,
    _Builder,
    _onnx,
    centred_gradient,
    divergence,
    forward_gradient,
    median5,
    pyramid_sizes,
    remap_cubic,
    resize_linear,
)


def _one_scale(g: _Builder, i0: str, i1: str, u: str, ones: str, h: int, w: int) -> str:
    """TV-L1 at one pyramid level: images ``[N, 1, h, w]``, flow ``u [N, 2, h, w]`` in/out."""
    lt, taut = LAMBDA * THETA, TAU / THETA
    eps = g.const(np.float32(EPSILON * EPSILON * h * w))
    ix, iy = centred_gradient(g, i1, h, w)
    stack = g.op("Concat", i1, ix, iy, axis=1)  # [N, 3, h, w]
    # dual field, x and y parts: [N, 2, h, w] (two distinct tensors: Loop inputs must not alias)
    p1 = g.op("Mul", u, g.const(0.0))
    p2 = g.op("Sub", u, u)
    tp = _onnx().TensorProto
    types = [tp.FLOAT, tp.FLOAT, tp.FLOAT, tp.BOOL]
    for _ in range(WARPS):
        warped = remap_cubic(g, stack, u, h, w)  # [N, 3, h, w]
        i1w = g.slice(warped, 1, 0, 1)  # [N, 1, h, w]
        grad = g.slice(warped, 1, 1, 3)  # [N, 2, h, w] warped gradient (x, y)
        g2 = g.op("ReduceSum", g.op("Mul", grad, grad), g.ints(1), keepdims=1)  # [N, 1, h, w]
        gu = g.op("ReduceSum", g.op("Mul", grad, u), g.ints(1), keepdims=1)
        rho_c = g.op("Sub", g.op("Sub", i1w, gu), i0)  # [N, 1, h, w]
        # -1/|grad|^2 (where |grad|^2 <= FLT_EPSILON OpenCV leaves v = u; there grad ~ 0 too)
        nig = g.op("Div", g.const(-1.0), g.op("Max", g2, g.const(_FLT_EPS)))

        def inner(ins: list[str], grad=grad, rho_c=rho_c, nig=nig) -> tuple[str, list[str]]:
            uu, q1, q2, act = ins
            rho = g.op(
                "Add", rho_c, g.op("ReduceSum", g.op("Mul", grad, uu), g.ints(1), keepdims=1)
            )
            fi = g.op("Clip", g.op("Mul", rho, nig), g.const(-lt), g.const(lt))
            v = g.op("Add", uu, g.op("Mul", fi, grad))  # [N, 2, h, w]
            div = divergence(g, q1, q2, h, w)
            un = g.op("Add", v, g.op("Mul", div, g.const(THETA)))
            d = g.op("Sub", un, uu)
            err = g.op("ReduceSum", g.op("Mul", d, d), g.ints(1, 2, 3), keepdims=1)  # [N,1,1,1]
            ux, uy = forward_gradient(g, un, h, w)
            mag = g.op("Sqrt", g.op("Add", g.op("Mul", ux, ux), g.op("Mul", uy, uy)))
            ng = g.op("Add", g.op("Mul", mag, g.const(taut)), g.const(1.0))
            n1 = g.op("Div", g.op("Add", q1, g.op("Mul", ux, g.const(taut))), ng)
            n2 = g.op("Div", g.op("Add", q2, g.op("Mul", uy, g.const(taut))), ng)
            out = [
                g.op("Where", act, un, uu),
                g.op("Where", act, n1, q1),
                g.op("Where", act, n2, q2),
            ]
            nact = g.op("And", act, g.op("Greater", err, eps))
            return _any(g, nact), [*out, nact]

        def outer(ins: list[str], grad=grad, rho_c=rho_c, nig=nig) -> tuple[str, list[str]]:
            # Only the pairs still iterating (K of N) enter the median and the inner loop:
            # gather them, iterate, scatter the results back. A batch then costs what its
            # pairs need (to within one outer iteration), not N times its slowest pair.
            uu, q1, q2, act = ins
            idx = g.op("Reshape", g.op("NonZero", g.op("Reshape", act, g.ints(-1))), g.ints(-1))
            sub = [g.op("Gather", x, idx, axis=0) for x in (uu, q1, q2, act, grad, rho_c, nig)]
            su = median5(g, sub[0], h, w)  # [K, 2, h, w]; every gathered pair is active

            def step(ins: list[str]) -> tuple[str, list[str]]:
                return inner(ins, grad=sub[4], rho_c=sub[5], nig=sub[6])

            res = g.loop(INNER, [su, *sub[1:4]], step, types)
            at = g.op("Unsqueeze", idx, g.ints(1))  # [K, 1]
            new = [g.op("ScatterND", x, at, r) for x, r in zip(ins, res, strict=True)]
            return _any(g, new[3]), new

        u, p1, p2, _ = g.loop(OUTER, [u, p1, p2, ones], outer, types)
    return u


def _any(g: _Builder, act: str) -> str:
    """bool ``[N, 1, 1, 1]`` -> bool scalar: is any pair still iterating?"""
    m = g.op("ReduceMax", g.op("Cast", act, to=_onnx().TensorProto.FLOAT), keepdims=0)
    return g.op("Greater", m, g.const(0.5))


def build_model(height: int, width: int) -> Any:
    """The TV-L1 ``ModelProto`` for ``height x width`` frames.

    Inputs ``prev``, ``next``: uint8 ``[N, H, W]`` gray. Outputs ``flow``: float32
    ``[N, H, W, 2]`` (pixels, x then y); ``i3d``: float32 ``[N, 2, H, W]``, the flow stream's
    input convention of :func:`hamnet.video.flow.flow_to_i3d` (clip to +-20 px, 256 levels,
    rescaled to [-1, 1])."""
    onnx = _onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    if height < MIN_FRAME or width < MIN_FRAME:
        raise ValueError(f"TV-L1 needs frames of at least {MIN_FRAME}x{MIN_FRAME} pixels")
    g = _Builder()
    sizes = pyramid_sizes(height, width)
    i0 = g.op("Unsqueeze", g.op("Cast", "prev", to=tp.FLOAT), g.ints(1))  # [N, 1, H, W]
    i1 = g.op("Unsqueeze", g.op("Cast", "next", to=tp.FLOAT), g.ints(1))
    n = g.slice(g.op("Shape", "prev"), 0, 0, 1)  # [1] = N
    act_shape = g.op("Concat", n, g.ints(1, 1, 1), axis=0)
    ones = g.op(
        "ConstantOfShape", act_shape, value=helper.make_tensor("t", tp.BOOL, [1], [True])
    )  # [N, 1, 1, 1]
    levels = [(i0, i1)]
    for s in range(1, len(sizes)):
        a, b = levels[-1]
        levels.append(
            tuple(resize_linear(g, x, sizes[s - 1], sizes[s], SCALE_STEP) for x in (a, b))
        )
    hc, wc = sizes[-1]
    zero = np.zeros((1, 2, hc, wc), np.float32)
    u = g.op("Expand", g.const(zero), g.op("Concat", n, g.ints(2, hc, wc), axis=0))
    for s in range(len(sizes) - 1, -1, -1):
        h, w = sizes[s]
        u = _one_scale(g, levels[s][0], levels[s][1], u, ones, h, w)
        if s:
            up = resize_linear(g, u, sizes[s], sizes[s - 1])
            u = g.op("Mul", up, g.const(np.float32(1.0 / SCALE_STEP)))
    flow = g.op("Transpose", u, perm=[0, 2, 3, 1])  # [N, H, W, 2]
    g.nodes.append(helper.make_node("Identity", [flow], ["flow"]))
    # I3D: 128 + 255/40 * clip(f, -20, 20), rounded and clipped to 0..255, then q/255*2 - 1.
    f = g.op("Clip", u, g.const(-I3D_BOUND), g.const(I3D_BOUND))
    q = g.op("Round", g.op("Add", g.op("Mul", f, g.const(255.0 / (2 * I3D_BOUND))), g.const(128.0)))
    q = g.op("Clip", q, g.const(0.0), g.const(255.0))
    i3d = g.op("Sub", g.op("Mul", q, g.const(2.0 / 255.0)), g.const(1.0))
    g.nodes.append(helper.make_node("Identity", [i3d], ["i3d"]))
    graph = helper.make_graph(
        g.nodes,
        f"tvl1_{height}x{width}",
        [
            helper.make_tensor_value_info(x, tp.UINT8, ["N", height, width])
            for x in ("prev", "next")
        ],
        [
            helper.make_tensor_value_info("flow", tp.FLOAT, ["N", height, width, 2]),
            helper.make_tensor_value_info("i3d", tp.FLOAT, ["N", 2, height, width]),
        ],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model


def build_i3d_layout() -> Any:
    """Small device-side graph: ``q [S*(F-1), 2, H, W]`` (flow of consecutive pairs) and
    ``shape = [S, F-1, 2, H, W]`` -> ``[S, 2, F, H, W]``, the first flow of each snippet
    repeated (the edge convention of :func:`hamnet.video.flow.snippet_flow`)."""
    onnx = _onnx()
    helper, tp = onnx.helper, onnx.TensorProto
    g = _Builder()
    r = g.op("Reshape", "q", "shape")  # [S, F-1, 2, H, W]
    first = g.slice(r, 1, 0, 1)  # [S, 1, 2, H, W]
    full = g.op("Concat", first, r, axis=1)  # [S, F, 2, H, W]
    g.nodes.append(helper.make_node("Transpose", [full], ["out"], perm=[0, 2, 1, 3, 4]))
    graph = helper.make_graph(
        g.nodes,
        "i3d_flow_layout",
        [
            helper.make_tensor_value_info("q", tp.FLOAT, ["B", 2, "H", "W"]),
            helper.make_tensor_value_info("shape", tp.INT64, [5]),
        ],
        [helper.make_tensor_value_info("out", tp.FLOAT, ["S", 2, "F", "H", "W"])],
        g.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model
