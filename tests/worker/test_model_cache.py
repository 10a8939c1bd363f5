"""The worker's registry-model cache (hamnet_worker.models through Runtime.bundle_for) with a
real Redis, local storage, real bundles and real ONNX Runtime head sessions: a version
published after the runtime was created loads on first use, the least recently used bundle is
dropped from the pipeline's session caches, a deleted version or a wrong checksum is refused,
and the default model stays loaded."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "model"))  # headgen
pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from hamnet import pipeline  # noqa: E402
from hamnet.bundle import write_bundle  # noqa: E402
from hamnet.video import backbone as bb  # noqa: E402
from hamnet.video.backbone import BackboneSpec, register_backbone  # noqa: E402
from hamnet_jobs.registry import ModelNotFound  # noqa: E402
from hamnet_worker.runtime import Runtime  # noqa: E402
from hamnet_worker.settings import WorkerSettings  # noqa: E402
from headgen import write_head  # noqa: E402

SPEC = BackboneSpec("cachetest", fps=25.0, snippet_frames=4, resize_shorter=8, crop=8,
                    streams=("rgb",), normalisation="none", flow_method=None, feature_dim=1)
OWNER = "kcache000000000000000000000"


class Mean:
    spec, provider, feature_dim = SPEC, "numpy", 1

    def encode(self, frames: np.ndarray) -> np.ndarray:
        return frames.reshape(frames.shape[0], -1).mean(1, keepdims=True).astype(np.float32)


def _bundle(root: Path, seed: int, name: str) -> Path:
    head = write_head(root / f"head-{seed}.onnx", 1, 2, seed=seed)
    return write_bundle(root / name, head, ["wave", "clap"], SPEC, name=name, version="1")


@pytest.fixture()
def runtime(redis_url: str, tmp_path: Path):
    register_backbone("cachetest", lambda spec, d, p: Mean())
    pipeline.clear_caches()
    default = _bundle(tmp_path, 0, "default-bundle")
    rt = Runtime(WorkerSettings(redis_url=redis_url, data_dir=tmp_path / "data",
                                bundle=default, model_cache_size=1,
                                providers="CPUExecutionProvider"))
    rt.store.r.flushdb()
    yield rt
    bb._REGISTRY.pop("cachetest", None)
    pipeline.clear_caches()


def test_lazy_load_bounded_eviction_and_refusals(runtime: Runtime, tmp_path: Path) -> None:
    rt = runtime
    default = rt.bundle_for(None, OWNER)
    assert rt.bundle_for({"ref": "default"}, OWNER) is default
    # published after the runtime exists: served on first use
    v1 = rt.registry.publish(OWNER, "m1", _bundle(tmp_path, 1, "one"))
    v2 = rt.registry.publish(OWNER, "m2", _bundle(tmp_path, 2, "two"))
    b1 = rt.bundle_for(v1.job_ref(), OWNER)
    assert b1.checksum == v1.checksum and b1.root == rt.storage.root / v1.location
    assert rt.bundle_for(v1.job_ref(), OWNER) is b1  # cached
    assert {default.checksum, v1.checksum} <= pipeline.cached_checksums()
    assert str(b1.head_path) in pipeline._heads

    b2 = rt.bundle_for(v2.job_ref(), OWNER)  # cache size 1: m1 is dropped, sessions too
    assert b2.checksum == v2.checksum
    assert v1.checksum not in pipeline.cached_checksums()
    assert str(b1.head_path) not in pipeline._heads
    assert {default.checksum, v2.checksum} <= pipeline.cached_checksums()  # default stays
    assert [m["ref"] for m in rt.model_info()["registry_models"]] == ["m2@1"]
    assert rt.models.loads == 2 and rt.models.evictions == 1

    wrong = {**v1.job_ref(), "checksum": "0" * 64}
    with pytest.raises(ModelNotFound):
        rt.bundle_for(wrong, OWNER)
    with pytest.raises(ModelNotFound):  # another owner's model
        rt.bundle_for(v1.job_ref(), "kother00000000000000000000")
    rt.registry.delete(OWNER, "m1", 1)
    with pytest.raises(ModelNotFound):
        rt.bundle_for(v1.job_ref(), OWNER)
