"""Optical flow methods recover known motion; I3D flow quantisation is exact."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")

from hamnet.video.flow import (  # noqa: E402
    compute_flow,
    flow_to_i3d,
    flow_to_uint8,
    snippet_flow,
    to_gray,
)


def _textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random texture (flow needs gradients at every scale)."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.random((h // 4, w // 4)).astype(np.float32)
    img = cv2.resize(noise, (w, h), interpolation=cv2.INTER_CUBIC)
    img = (img - img.min()) / (img.max() - img.min()) * 200 + 25
    return np.repeat(img[..., None], 3, axis=2).astype(np.uint8)


@pytest.mark.parametrize("method", ["tvl1", "tvl1-opencv", "farneback", "dis"])
def test_recovers_known_translation(method: str) -> None:
    base = _textured(72, 72)
    shifted = np.roll(base, shift=(1, 3), axis=(0, 1))  # 3 px right, 1 px down
    flow = compute_flow(base, shifted, method)
    assert flow.shape == (72, 72, 2) and flow.dtype == np.float32
    inner = flow[16:-16, 16:-16]
    assert np.median(inner[..., 0]) == pytest.approx(3.0, abs=0.3)  # x first
    assert np.median(inner[..., 1]) == pytest.approx(1.0, abs=0.3)
    still = np.abs(compute_flow(base, base, method))
    assert np.median(still) < 0.02 and still.max() < 0.5


def test_rejects_unknown_method_and_size_mismatch() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="unknown flow method 'raft'"):
        compute_flow(a, a, "raft")
    with pytest.raises(ValueError, match="differ in size"):
        compute_flow(a, np.zeros((8, 9, 3), np.uint8), "dis")
    with pytest.raises(ValueError, match="differ in size"):
        snippet_flow(
            np.zeros((2, 16, 16, 3), np.uint8), "tvl1", prev=np.zeros((16, 17, 3), np.uint8)
        )
    with pytest.raises(ValueError, match="unknown flow method"):
        snippet_flow(np.zeros((2, 16, 16, 3), np.uint8), "raft")
    with pytest.raises(ValueError, match="RGB or"):
        to_gray(np.zeros((4, 4, 4), np.uint8))


def test_i3d_quantisation_convention() -> None:
    flow = np.array([-100.0, -20.0, -10.0, 0.0, 0.05, 10.0, 20.0, 100.0], np.float32)
    q = flow_to_uint8(flow)
    # 128 + 255/40 * f, rounded, after clipping to [-20, 20]; 255.5 rounds to 256 -> 255.
    assert q.tolist() == [0, 0, 64, 128, 128, 192, 255, 255]
    x = flow_to_i3d(flow)
    assert x.dtype == np.float32 and x.min() == -1.0 and x.max() == 1.0
    np.testing.assert_allclose(x, q / 255.0 * 2 - 1, atol=1e-7)
    assert len(np.unique(flow_to_i3d(np.linspace(-30, 30, 10001)))) == 256


def test_snippet_flow_layout() -> None:
    base = _textured(48, 48)
    frames = np.stack([np.roll(base, 2 * i, axis=1) for i in range(4)])  # 2 px/frame right
    flow = snippet_flow(frames, "farneback")
    assert flow.shape == (4, 48, 48, 2)
    centre = flow[:, 12:-12, 12:-12, 0]
    assert np.median(centre[1:]) == pytest.approx(2.0, abs=0.3)
    np.testing.assert_array_equal(flow[0], flow[1])  # no prev: edge duplicated
    prev = np.roll(base, -5, axis=1)  # 5 px before frame 0
    with_prev = snippet_flow(frames, "farneback", prev=prev)
    assert np.median(with_prev[0, 12:-12, 12:-12, 0]) == pytest.approx(5.0, abs=0.5)
    np.testing.assert_array_equal(with_prev[1:], flow[1:])
    assert np.abs(snippet_flow(frames[:1], "dis")).max() == 0  # single frame: no motion


def test_tiny_frames_do_not_crash() -> None:
    a = np.zeros((2, 2, 3), np.uint8)
    b = np.full((2, 2, 3), 50, np.uint8)
    for method in ("tvl1", "tvl1-opencv", "farneback", "dis"):
        for size in (1, 2, 11):
            flow = compute_flow(
                a[:1, :1].repeat(size, 0).repeat(size, 1),
                b[:1, :1].repeat(size, 0).repeat(size, 1),
                method,
            )
            assert flow.shape == (size, size, 2)
            assert not flow.any()  # below MIN_SIDE pixels flow is defined as zero
        big = np.zeros((13, 13, 3), np.uint8)  # one pyramid level (OpenCV drops < 16 px)
        assert not compute_flow(big, big, method).any()


def test_snippet_flow_tvl1_batches_like_pairs() -> None:
    """The ONNX TV-L1 path batches all pairs of a snippet; each flow equals the pair computed
    alone (with and without the frame before the snippet)."""
    base = _textured(40, 40, seed=3)
    frames = np.stack([np.roll(base, (i, 2 * i), axis=(0, 1)) for i in range(3)])
    prev = np.roll(base, -1, axis=1)
    flow = snippet_flow(frames, "tvl1", prev=prev)
    assert flow.shape == (3, 40, 40, 2)
    np.testing.assert_allclose(flow[0], compute_flow(prev, frames[0], "tvl1"), atol=1e-4)
    np.testing.assert_allclose(flow[2], compute_flow(frames[1], frames[2], "tvl1"), atol=1e-4)
    assert np.median(flow[1:, 10:-10, 10:-10, 0]) == pytest.approx(2.0, abs=0.3)
    no_prev = snippet_flow(frames, "tvl1")
    np.testing.assert_array_equal(no_prev[0], no_prev[1])
    np.testing.assert_allclose(no_prev[1:], flow[1:], atol=1e-4)
