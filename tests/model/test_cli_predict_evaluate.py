"""`hamnet predict` / `hamnet evaluate` and the ONNX head runner, end to end on the fixtures."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hamnet.cli import main
from hamnet.errors import CheckpointError, DataError
from hamnet.localize import HeadSession

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "hamnet"
E2E = json.loads((FIX / "predict_e2e.json").read_text())
E2E_NPZ = np.load(FIX / "predict_e2e.npz")
CLASSES = ",".join(E2E["classes"])


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


needs_checkpoint = pytest.mark.skipif(
    not _has("hamnet.nn.checkpoint"), reason="hamnet.nn.checkpoint not importable yet"
)


def _predict_json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    rc = main(["predict", *argv, "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    return json.loads(out)


def _assert_matches(segs: list[dict], want: list[dict], score_atol: float = 1e-5) -> None:
    assert len(segs) == len(want)
    assert [s["label"] for s in segs] == [w["label"] for w in want]
    np.testing.assert_allclose([[s["start"], s["end"]] for s in segs],
                               [w["segment"] for w in want], atol=1e-6, rtol=0)
    np.testing.assert_allclose([s["score"] for s in segs], [w["score"] for w in want],
                               atol=score_atol, rtol=0)


def _tiny_head(path: Path, d: int = 8, c: int = 3, seed: int = 0) -> tuple[Path, np.ndarray,
                                                                          np.ndarray]:
    """features @ W -> cas, sigmoid(features @ w) -> attention: the export's graph interface."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w_cas = rng.normal(0, 0.5, (d, c + 1)).astype(np.float32)
    w_atn = rng.normal(0, 0.5, (d, 1)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "w_cas"], ["cas"]),
         helper.make_node("MatMul", ["features", "w_atn"], ["logit"]),
         helper.make_node("Sigmoid", ["logit"], ["attention"])],
        "tiny_head",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["B", "T", d])],
        [helper.make_tensor_value_info("cas", TensorProto.FLOAT, ["B", "T", c + 1]),
         helper.make_tensor_value_info("attention", TensorProto.FLOAT, ["B", "T", 1])],
        initializer=[numpy_helper.from_array(w_cas, "w_cas"),
                     numpy_helper.from_array(w_atn, "w_atn")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    entry = model.metadata_props.add()
    entry.key, entry.value = "hamnet.classes", json.dumps([f"act{i}" for i in range(c)])
    onnx.save(model, str(path))
    return path, w_cas, w_atn


# ----------------------------------------------------------------------------- HeadSession


def test_head_session_lazy_shapes_and_validation(tmp_path: Path) -> None:
    path, w_cas, w_atn = _tiny_head(tmp_path / "head.onnx")
    head = HeadSession(path, providers=["CPUExecutionProvider"])
    assert head._session is None  # nothing is loaded before the first use
    x = np.random.default_rng(1).normal(size=(2, 30, 8)).astype(np.float32)
    elem, atn = head.run(x)
    assert head.provider == "CPUExecutionProvider"
    assert elem.shape == (2, 30, 4) and atn.shape == (2, 30, 1)
    np.testing.assert_allclose(elem, x @ w_cas, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(atn, 1 / (1 + np.exp(-(x @ w_atn))), rtol=1e-5, atol=1e-6)
    e1, a1 = head.run(x[1].astype(np.float64))  # [T, D] in, [T, ...] out; float64 accepted
    np.testing.assert_allclose(e1, elem[1], atol=1e-5)
    assert a1.shape == (30, 1) and head.feature_dim == 8 and head.num_classes == 3
    assert head.classes == ["act0", "act1", "act2"]
    with pytest.raises(DataError, match="feature dimension 5 does not match the model"):
        head.run(np.zeros((10, 5), np.float32), name="clip.npy")
    bad = x[0].copy()
    bad[2, 3] = np.nan
    with pytest.raises(DataError, match="NaN"):
        head.run(bad)
    with pytest.raises(DataError, match="real numbers"):
        head.run(np.array([["a"]]))
    with pytest.raises(DataError, match=r"\[T, D\]"):
        head.run(np.zeros(8, np.float32))


def test_head_session_default_provider_and_bad_files(tmp_path: Path) -> None:
    path, _, _ = _tiny_head(tmp_path / "head.onnx")
    head = HeadSession(path)  # CUDA preferred when present, CPU otherwise
    import onnxruntime as ort

    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in \
        ort.get_available_providers() else "CPUExecutionProvider"
    head.run(np.zeros((3, 8), np.float32))
    assert head.provider in (expected, "CPUExecutionProvider")
    with pytest.raises(CheckpointError, match="not found"):
        HeadSession(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx file")
    with pytest.raises(CheckpointError, match="junk.onnx"):
        HeadSession(junk).run(np.zeros((3, 8), np.float32))


# ----------------------------------------------------------------------------- predict


@needs_checkpoint
@pytest.mark.parametrize("name", sorted(E2E["videos"]))
def test_predict_checkpoint_reproduces_official_e2e(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    feats = tmp_path / f"{name}.npy"
    np.save(feats, E2E_NPZ[name])
    out = _predict_json(capsys, "--checkpoint", str(FIX / "model_small.npz"),
                        "--features", str(feats), "--classes", CLASSES)
    _assert_matches(out["segments"], E2E["videos"][name]["proposals"])
    assert out["profile"] == "official" and out["snippet_seconds"] == 0.64


@needs_checkpoint
def test_predict_checkpoint_anet_preset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = json.loads((FIX / "anet" / "predict_e2e_anet.json").read_text())
    z = np.load(FIX / "anet" / "predict_e2e_anet.npz")
    feats = tmp_path / "vid1.npy"
    np.save(feats, z["vid1"])
    out = _predict_json(capsys, "--checkpoint", str(FIX / "anet" / "model_small_anet.npz"),
                        "--preset", "ActivityNet1.2", "--features", str(feats),
                        "--classes", ",".join(ref["classes"]))
    _assert_matches(out["segments"], ref["videos"]["vid1"]["proposals"])


@needs_checkpoint
def test_predict_checkpoint_input_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    feats = tmp_path / "wide.npy"
    np.save(feats, np.zeros((12, 32), np.float32))  # the model expects D = 64
    ck = str(FIX / "model_small.npz")
    assert main(["predict", "--checkpoint", ck, "--features", str(feats)]) == 2
    err = capsys.readouterr().err
    assert "wide.npy" in err and "feature_size 64" in err and "Traceback" not in err
    np.save(feats, E2E_NPZ["vid0"])
    assert main(["predict", "--checkpoint", ck, "--features", str(feats), "--classes", "a,b"]) == 2
    assert "2 class names" in capsys.readouterr().err
    assert main(["predict", "--checkpoint", str(tmp_path / "nope.ckpt"), "--features",
                 str(feats)]) == 2
    assert "nope.ckpt" in capsys.readouterr().err
    out = _predict_json(capsys, "--checkpoint", ck, "--features", str(feats))
    assert {s["label"] for s in out["segments"]} <= {f"class_{i}" for i in range(5)}


@pytest.mark.skipif(not _has("hamnet.nn.export") or not _has("hamnet.nn.checkpoint"),
                    reason="hamnet.nn.export not importable yet")
def test_predict_onnx_matches_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from hamnet.nn.checkpoint import load_checkpoint
    from hamnet.nn.export import export_onnx

    onnx_path = tmp_path / "head.onnx"
    export_onnx(load_checkpoint(FIX / "model_small.npz").model, onnx_path, validate=False)
    feats = tmp_path / "vid2.npy"
    np.save(feats, E2E_NPZ["vid2"])
    out = _predict_json(capsys, "--onnx", str(onnx_path), "--features", str(feats),
                        "--classes", CLASSES)
    _assert_matches(out["segments"], E2E["videos"]["vid2"]["proposals"])
    assert out["model"]["provider"].endswith("ExecutionProvider")


def test_predict_onnx_profiles_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = _tiny_head(tmp_path / "head.onnx")
    feats = tmp_path / "f.npy"
    rng = np.random.default_rng(5)
    x = rng.normal(size=(200, 8)).astype(np.float32)
    x[60:90] += 2.0
    np.save(feats, x)
    official = _predict_json(capsys, "--onnx", str(path), "--features", str(feats))
    assert {s["label"] for s in official["segments"]} <= {"act0", "act1", "act2"}  # stored names
    fixed = _predict_json(capsys, "--onnx", str(path), "--features", str(feats),
                          "--profile", "fixed", "--fps", "30", "--snippet-frames", "8")
    assert fixed["profile"] == "fixed" and fixed["snippet_seconds"] == 8 / 30
    assert len(fixed["segments"]) <= len(official["segments"])
    assert all(s["score"] >= 1e-3 for s in fixed["segments"])
    assert main(["predict", "--onnx", str(path), "--features", str(feats), "--top", "3"]) == 0
    table = capsys.readouterr().out
    assert "video classes" in table and "start s" in table


@pytest.mark.parametrize("problem", ["missing", "shape", "nan", "dim", "classes", "no_features"])
def test_predict_input_errors_exit_2(problem: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = _tiny_head(tmp_path / "head.onnx")
    feats = tmp_path / "bad.npy"
    x = np.zeros((20, 8), np.float32)
    classes = "a,b,c"
    if problem == "shape":
        x = np.zeros((1, 20, 8), np.float32)
    elif problem == "nan":
        x[4, 4] = np.nan
    elif problem == "dim":
        x = np.zeros((20, 6), np.float32)
    elif problem == "classes":
        classes = "a,b"
    if problem != "missing":
        np.save(feats, x)
    argv = ["predict", "--onnx", str(path), "--classes", classes]
    if problem != "no_features":
        argv += ["--features", str(feats)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if problem in ("missing", "shape", "nan", "dim"):
        assert "bad.npy" in err
    expected = {"missing": "not found", "shape": "[T, D]", "nan": "NaN", "dim": "(8)",
                "classes": "2 class names", "no_features": "--features"}[problem]
    assert expected in err


# ----------------------------------------------------------------------------- evaluate


def _write_case(tmp_path: Path, case: dict) -> tuple[Path, Path]:
    gt, pred = tmp_path / "gt.json", tmp_path / "pred.json"
    gt.write_text(json.dumps(case["gt"]))
    pred.write_text(json.dumps(case["pred"]))
    return gt, pred


def test_evaluate_cli_matches_official(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cases = json.loads((FIX / "eval_cases.json").read_text())
    case = cases["cases"][1]
    gt, pred = _write_case(tmp_path, case)
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tiou"] == cases["tiou_thresholds"]
    np.testing.assert_allclose(out["mAP"], case["official"]["mAP_per_tiou"], atol=1e-12)
    assert out["average_mAP"] == pytest.approx(case["official"]["average_mAP"], abs=1e-12)
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--tiou", "0.1,0.7",
                 "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tiou"] == [0.1, 0.7]
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--per-class"]) == 0
    assert "BasketballDunk" in capsys.readouterr().out


def test_evaluate_cli_errors_and_skip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    no_gt, unknown = json.loads((FIX / "eval_cases.json").read_text())["error_cases"]
    gt, pred = _write_case(tmp_path, unknown)
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred)]) == 2
    assert "'Diving'" in capsys.readouterr().err
    gt, pred = _write_case(tmp_path, no_gt)
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred)]) == 2
    assert "CliffDiving" in capsys.readouterr().err
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--skip-classes-without-gt",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped_classes"] == ["CliffDiving"]
    assert main(["evaluate", "--gt", str(gt), "--pred", str(pred), "--tiou", "0.7:0.1:0.1"]) == 2
    assert "--tiou" in capsys.readouterr().err


def test_evaluate_subprocess_anet(tmp_path: Path) -> None:
    case = json.loads((FIX / "anet" / "eval_cases_anet.json").read_text())["cases"][0]
    gt, pred = _write_case(tmp_path, case)
    proc = subprocess.run(
        [sys.executable, "-m", "hamnet", "evaluate", "--gt", str(gt), "--pred", str(pred),
         "--preset", "ActivityNet1.2", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["average_mAP"] == pytest.approx(0.321, abs=1e-12)
    assert len(out["tiou"]) == 10


def test_predict_bundle_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The video path: bundle (weight-free motion backbone + tiny head) on a synthetic clip."""
    pytest.importorskip("av")
    pytest.importorskip("cv2")
    from hamnet.bundle import write_bundle
    from hamnet.video.motion import default_spec

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "video"))
    from vidgen import write_video

    spec = default_spec()
    head, _, _ = _tiny_head(tmp_path / "head.onnx", d=spec.feature_dim, c=2)
    bundle = write_bundle(tmp_path / "bundle", head, ["wave", "clap"], spec, name="toy")
    frames = []
    for i in range(75):  # 3 s: a bright square moves during the middle second
        f = np.full((48, 64, 3), 30, np.uint8)
        x = 4 + (i - 25) * 2 if 25 <= i < 50 else 4
        f[16:32, x:x + 12] = 220
        frames.append(f)
    video = write_video(tmp_path / "clip.mp4", frames, fps=25)
    out = _predict_json(capsys, "--bundle", str(bundle), "--video", str(video))
    assert out["video"]["duration"] == pytest.approx(3.0, abs=0.05)
    assert out["num_snippets"] >= 4 and len(out["attention"]) == out["num_snippets"]
    for s in out["segments"]:
        assert s["label"] in ("wave", "clap") and 0 <= s["start"] < s["end"] <= 3.0 + 1e-6
    assert main(["predict", "--bundle", str(bundle), "--video", str(tmp_path / "none.mp4")]) == 2
    assert "none.mp4" in capsys.readouterr().err
    assert main(["predict", "--bundle", str(bundle), "--features", "x.npy"]) == 2
    assert "--video" in capsys.readouterr().err
