"""I3DBackbone: uint8 snippets through ONNX Runtime equal the torch I3D on the same input.

The graphs are exported once per module from the recipe weights (random, not pretrained: the
check is that preprocessing, batching and RGB|flow assembly are right, not what they mean).
Flow uses Farneback here because TV-L1 costs ~1 s per frame pair; the method only changes the
flow values, which the reference below recomputes with the same function.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from hamnet.errors import BundleError, DataError  # noqa: E402
from hamnet.i3d.export import FeatureGraph, export_i3d_onnx  # noqa: E402
from hamnet.i3d.model import load_i3d_state_dict  # noqa: E402
from hamnet.i3d.recipe import STREAM_CHANNELS, recipe_state_dict  # noqa: E402
from hamnet.video.backbone import Backbone, BackboneSpec, load_backbone  # noqa: E402
from hamnet.video.flow import snippet_flow_i3d  # noqa: E402
from hamnet.video.i3d_backbone import I3DBackbone, get_session  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models():
    return {
        s: load_i3d_state_dict(recipe_state_dict(s), STREAM_CHANNELS[s]).eval()
        for s in ("rgb", "flow")
    }


@pytest.fixture(scope="module")
def backbone_dir(tmp_path_factory, models) -> Path:
    d = tmp_path_factory.mktemp("i3d_backbone")
    for s, m in models.items():  # validated in tests/i3d; here only the files are needed
        export_i3d_onnx(m, d / f"{s}.onnx", s, validate=False)
    BackboneSpec(
        name="i3d", flow_method="farneback", files={"rgb": "rgb.onnx", "flow": "flow.onnx"}
    ).write(d)
    return d


def synthetic_clip(n: int = 2, seed: int = 0) -> np.ndarray:
    """uint8 [n,16,224,224,3]: a bright square moving right over a colour gradient + noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:224, 0:224]
    base = np.stack([xx, yy, (xx + yy) // 2], axis=-1).astype(np.float32) * (200 / 448)
    frames = []
    for t in range(16 * n):
        img = base + rng.normal(0, 3, base.shape)
        x0, y0 = 30 + 4 * t, 60 + 2 * t
        img[y0 : y0 + 50, x0 : x0 + 50] = (240, 220, 30)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames).reshape(n, 16, 224, 224, 3)


def test_encode_equals_torch_on_the_same_preprocessed_input(backbone_dir, models) -> None:
    spec = BackboneSpec.read(backbone_dir)
    bb = I3DBackbone(spec, backbone_dir, batch_size=1, threads=1)  # 2 snippets -> 2 batches
    assert isinstance(bb, Backbone)
    assert bb.feature_dim == 2048 and bb.provider == "CPUExecutionProvider"
    clip = synthetic_clip(2)
    got = bb.encode(clip)
    assert got.shape == (2, 2048) and got.dtype == np.float32

    rgb = torch.from_numpy(clip.astype(np.float32) / 255 * 2 - 1).permute(0, 4, 1, 2, 3)
    flow = np.stack([snippet_flow_i3d(s, "farneback") for s in clip])  # [2,16,224,224,2]
    assert flow.min() >= -1 and flow.max() <= 1 and np.abs(flow).max() > 0.05  # real motion
    flow_t = torch.from_numpy(np.ascontiguousarray(flow.transpose(0, 4, 1, 2, 3)))
    with torch.no_grad():
        ref_rgb = FeatureGraph(models["rgb"])(rgb.contiguous()).numpy()
        ref_flow = FeatureGraph(models["flow"])(flow_t).numpy()
    np.testing.assert_allclose(got[:, :1024], ref_rgb, atol=1e-4, rtol=1e-4)  # RGB first
    np.testing.assert_allclose(got[:, 1024:], ref_flow, atol=1e-4, rtol=1e-4)  # then flow
    # encode is a pure function of its input: one snippet alone gives the same row (RGB-only
    # backbone on the same file: shares the cached session, skips the flow cost).
    rgb_only = BackboneSpec(
        name="i3d", streams=("rgb",), flow_method=None, feature_dim=1024, files={"rgb": "rgb.onnx"}
    )
    alone = I3DBackbone(rgb_only, backbone_dir, threads=1).encode(clip[1:])
    np.testing.assert_allclose(alone, got[1:, :1024], atol=1e-5, rtol=0)


def test_registry_builds_it_and_sessions_are_shared(backbone_dir) -> None:
    a = load_backbone(backbone_dir)
    b = load_backbone(backbone_dir / "backbone.json")
    assert isinstance(a, I3DBackbone) and a.spec.name == "i3d"
    assert a.provider == "CPUExecutionProvider"  # no CUDA here: CPU fallback
    assert a._session("rgb") is b._session("rgb")  # created once per process
    assert get_session(backbone_dir / "flow.onnx", ["CPUExecutionProvider"]) is a._session("flow")


def test_rgb_only_spec(backbone_dir) -> None:
    spec = BackboneSpec(
        name="i3d", streams=("rgb",), flow_method=None, feature_dim=1024, files={"rgb": "rgb.onnx"}
    )
    bb = I3DBackbone(spec, backbone_dir)
    assert bb.feature_dim == 1024
    assert bb.encode(np.zeros((0, 16, 224, 224, 3), np.uint8)).shape == (0, 1024)


def test_bad_inputs_and_specs(backbone_dir) -> None:
    bb = load_backbone(backbone_dir)
    with pytest.raises(
        DataError,
        match=r"expects uint8 snippets \[N, 16, 224, 224, 3\], got "
        r"uint8 \[1, 16, 256, 256, 3\]",
    ):
        bb.encode(np.zeros((1, 16, 256, 256, 3), np.uint8))
    with pytest.raises(DataError, match="got float32"):
        bb.encode(np.zeros((1, 16, 224, 224, 3), np.float32))
    spec = BackboneSpec(
        name="i3d", files={"rgb": "rgb.onnx", "flow": "missing.onnx"}, snippet_frames=8
    )
    with pytest.raises(BundleError) as e:
        I3DBackbone(spec, backbone_dir)
    assert "snippet_frames must be 16, got 8" in str(e.value)
    assert "missing.onnx does not exist" in str(e.value)


def test_module_never_imports_torch() -> None:
    code = (
        "import sys, hamnet.video.i3d_backbone, hamnet.video.backbone; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


@pytest.mark.slow
def test_onnx_tvl1_flow_reaches_the_flow_network_on_the_device(backbone_dir) -> None:
    """flow_engine="onnx": TV-L1 runs as an ONNX graph (hamnet.video.tvl1) and its output, an
    OrtValue on the provider's device ("cpu" here, "cuda" on a GPU), is bound to the flow
    network as is; the features equal those of the same values passed from the host."""
    pytest.importorskip("onnx")
    pytest.importorskip("hamnet.video.tvl1")
    from hamnet.video.device import is_ortvalue, ortvalue_shape

    spec = BackboneSpec(name="i3d", flow_method="tvl1", files={"rgb": "rgb.onnx",
                                                               "flow": "flow.onnx"})
    auto = I3DBackbone(spec, backbone_dir, threads=2)
    assert auto.flow_engine == "opencv"  # CPU provider: OpenCV unless asked
    bb = I3DBackbone(spec, backbone_dir, threads=2, flow_engine="onnx")
    assert bb.flow_engine == "onnx"
    clip = synthetic_clip(1)
    prepared = bb.prepare(clip)
    flow = prepared["flow"]
    assert is_ortvalue(flow) and flow.device_name() == "cpu"
    assert ortvalue_shape(flow) == (1, 2, 16, 224, 224)
    host = flow.numpy()
    assert host.min() >= -1 and host.max() <= 1 and np.abs(host).max() > 0.05  # real motion
    np.testing.assert_array_equal(host[:, :, 0], host[:, :, 1])  # first field repeated
    got = bb.run(prepared)
    ref = bb.run({"rgb": prepared["rgb"], "flow": host})
    np.testing.assert_allclose(got, ref, atol=1e-5, rtol=0)
    with pytest.raises(BundleError, match="flow_engine must be one of"):
        I3DBackbone(spec, backbone_dir, flow_engine="cuda")
