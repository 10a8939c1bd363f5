"""fp16 vs fp32 I3D through the backbone's device path (I/O binding), on the recipe weights.

The service runs the fp16 variant of each graph when the provider is CUDA. That path (in-memory
fp16 conversion or an exported ``<stream>_fp16`` file, inputs and outputs bound on the
provider's device, batches sized by a setting) is exercised here on the CPU provider, whose
device is ``"cpu"``: the same code, not a copy of it. The fp16 features must stay within the
export tolerance (``RTOL_SCALE_FP16`` x the largest fp32 feature) of the fp32 ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("cv2")

from hamnet.i3d.export import RTOL_SCALE_FP16, export_i3d_onnx  # noqa: E402
from hamnet.i3d.fp16 import to_fp16  # noqa: E402
from hamnet.i3d.model import load_i3d_state_dict  # noqa: E402
from hamnet.i3d.recipe import STREAM_CHANNELS, recipe_state_dict  # noqa: E402
from hamnet.video import device as dev  # noqa: E402
from hamnet.video.backbone import BackboneSpec  # noqa: E402
from hamnet.video.i3d_backbone import I3DBackbone, get_session  # noqa: E402


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> Path:
    """rgb.onnx/flow.onnx (fp32, recipe weights) and rgb_fp16.onnx (its fp16 conversion)."""
    d = tmp_path_factory.mktemp("i3d_fp16")
    for s in ("rgb", "flow"):
        model = load_i3d_state_dict(recipe_state_dict(s), STREAM_CHANNELS[s]).eval()
        export_i3d_onnx(model, d / f"{s}.onnx", s, validate=False)
    onnx.save(to_fp16(onnx.load(str(d / "rgb.onnx"))), str(d / "rgb_fp16.onnx"))
    return d


def _spec(**files: str) -> BackboneSpec:
    return BackboneSpec(name="i3d", flow_method="farneback",
                        files={"rgb": "rgb.onnx", "flow": "flow.onnx", **files})


def clip(n: int = 2, seed: int = 0) -> np.ndarray:
    """uint8 [n,16,224,224,3]: a block moving over a gradient with noise (real flow)."""
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


def test_fp16_features_within_tolerance_of_fp32(graphs) -> None:
    x = clip(2)
    fp32 = I3DBackbone(_spec(), graphs, batch_size=2, threads=1, precision="fp32")
    fp16 = I3DBackbone(_spec(), graphs, batch_size=2, threads=1, precision="fp16")
    auto = I3DBackbone(_spec(), graphs, threads=1)
    assert (fp32.precision, fp16.precision, auto.precision) == ("fp32", "fp16", "fp32")
    assert fp16.device == ("cpu", 0) and auto.batch_size == dev.CPU_BATCH
    inputs = fp32.preprocess(x)  # the same prepared input for both precisions
    a, b = fp32.run(inputs), fp16.run(inputs)
    assert a.shape == b.shape == (2, 2048) and b.dtype == np.float32
    for name, cols in (("rgb", slice(0, 1024)), ("flow", slice(1024, 2048))):
        scale = max(1.0, float(np.abs(a[:, cols]).max()))
        diff = float(np.abs(a[:, cols] - b[:, cols]).max())
        assert 0 < diff <= RTOL_SCALE_FP16 * scale, (name, diff, scale)  # fp16 really ran


def test_exported_fp16_file_is_used_when_listed(graphs) -> None:
    listed = I3DBackbone(_spec(rgb_fp16="rgb_fp16.onnx"), graphs, threads=1, precision="fp16")
    converted = I3DBackbone(_spec(), graphs, threads=1, precision="fp16")
    assert listed._session("rgb") is get_session(graphs / "rgb_fp16.onnx",
                                                 ["CPUExecutionProvider"], 1)
    assert listed._session("rgb") is not converted._session("rgb")
    x = clip(1, seed=1)
    rgb = listed.preprocess(x)["rgb"]
    # the same conversion, once from the file and once in memory: the same numbers
    np.testing.assert_array_equal(listed._run("rgb", rgb), converted._run("rgb", rgb))
    with pytest.raises(Exception, match="fp16 graph .*missing.onnx does not exist"):
        I3DBackbone(_spec(rgb_fp16="missing.onnx"), graphs)


def test_io_binding_takes_device_values_and_batches(graphs) -> None:
    bb = I3DBackbone(_spec(), graphs, batch_size=1, threads=1, precision="fp32")
    x = clip(2, seed=2)
    inputs = bb.preprocess(x)
    split = bb.run(inputs)  # numpy inputs in batches of 1
    on_device = {k: dev.to_device(v, bb.device) for k, v in inputs.items()}
    assert all(dev.is_ortvalue(v) for v in on_device.values())
    assert dev.ortvalue_shape(on_device["flow"]) == (2, 2, 16, 224, 224)
    whole = bb.run(on_device)  # OrtValues: one call, used in place
    np.testing.assert_allclose(whole, split, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(bb.encode(x), split, atol=0, rtol=0)


def test_snippet_batch_setting(monkeypatch) -> None:
    assert dev.free_device_memory("cpu") is None
    monkeypatch.delenv("HAMNET_I3D_BATCH", raising=False)
    assert dev.snippet_batch("cpu", "fp32") == dev.CPU_BATCH
    assert dev.snippet_batch("cpu", "fp32", 3) == 3
    monkeypatch.setenv("HAMNET_I3D_BATCH", "5")
    assert dev.snippet_batch("cuda", "fp16") == 5
    monkeypatch.delenv("HAMNET_I3D_BATCH")
    # on CUDA: half the free memory over the per-snippet need, capped
    monkeypatch.setattr(dev, "free_device_memory", lambda device="cuda": 4 << 30)
    assert dev.snippet_batch("cuda", "fp16") == (2 << 30) // dev.SNIPPET_BYTES["fp16"]
    assert dev.snippet_batch("cuda", "fp32") == (2 << 30) // dev.SNIPPET_BYTES["fp32"]
    monkeypatch.setattr(dev, "free_device_memory", lambda device="cuda": 1 << 40)
    assert dev.snippet_batch("cuda", "fp16") == dev.MAX_DEVICE_BATCH
    with pytest.raises(ValueError, match=">= 1"):
        dev.snippet_batch("cpu", "fp32", 0)


def test_rgb_normalised_on_the_device_gives_the_same_numbers(graphs) -> None:
    """rgb_engine="device" (the CUDA default): uint8 goes up, a small graph computes
    x * (2/255) - 1 there; the values equal numpy's rgb_to_i3d bit for bit."""
    from hamnet.video.i3d_backbone import rgb_to_i3d

    x = clip(2, seed=3)
    on_dev = I3DBackbone(_spec(), graphs, threads=1, precision="fp32", rgb_engine="device")
    on_cpu = I3DBackbone(_spec(), graphs, threads=1, precision="fp32")
    assert on_dev.rgb_on_device and not on_cpu.rgb_on_device  # auto: CPU provider -> numpy
    value = on_dev._rgb_input(x)
    assert dev.is_ortvalue(value) and dev.ortvalue_shape(value) == (2, 3, 16, 224, 224)
    np.testing.assert_array_equal(value.numpy(), rgb_to_i3d(x))
    np.testing.assert_array_equal(on_dev._run("rgb", value),
                                  on_cpu._run("rgb", on_cpu.preprocess(x)["rgb"]))
    with pytest.raises(Exception, match="rgb_engine must be one of"):
        I3DBackbone(_spec(), graphs, rgb_engine="gpu")
