"""Out-of-domain score: training ranges, threshold from held-out in-domain data, storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hamnet import domain
from hamnet.errors import BundleError, DataError

D = 500


def videos(rng: np.random.Generator, n: int, shift: float = 0.0, scale: float = 1.0,
           lengths: tuple[int, int] = (20, 60), dims: slice = slice(None)) -> list[np.ndarray]:
    """Sparse, heavy-tailed features like the motion backbone's: most values are exactly 0
    (nothing moves there), the others exponential; ``shift``/``scale`` alter ``dims``."""
    out = []
    for _ in range(n):
        t = int(rng.integers(*lengths))
        x = rng.exponential(0.1, (t, D)) * (rng.random((t, D)) < 0.4)
        x[:, dims] = x[:, dims] * scale + shift
        out.append(x.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def model() -> domain.DomainModel:
    rng = np.random.default_rng(0)
    return domain.choose_threshold(domain.fit(videos(rng, 60)), videos(rng, 30))


def test_threshold_comes_from_the_heldout_scores(model) -> None:
    info = model.info
    assert info["videos"] == 60 and info["heldout_videos"] == 30
    assert model.threshold == pytest.approx(1.25 * info["heldout_quantile"], abs=1e-5)
    assert info["heldout_flagged"] <= 0.01
    # the training range holds ~99.8 % of the training values
    train = videos(np.random.default_rng(0), 60)
    assert np.mean([model.score(f) for f in train]) < 0.004


def test_fresh_in_domain_passes_and_shifted_or_noisier_is_flagged(model) -> None:
    rng = np.random.default_rng(1)
    fresh = [model.check(f) for f in videos(rng, 100)]
    assert sum(not c["in_distribution"] for c in fresh) <= 5
    short = [model.check(f) for f in videos(rng, 100, lengths=(3, 6))]  # short clips too
    assert sum(not c["in_distribution"] for c in short) <= 5
    for kind in ({"shift": 0.5, "dims": slice(0, 100)}, {"scale": 4.0, "dims": slice(0, 150)},
                 {"shift": 1.0}):
        odd = [model.check(f) for f in videos(rng, 20, **kind)]
        assert all(not c["in_distribution"] for c in odd), kind
    c = fresh[0]
    assert set(c) == {"in_distribution", "score", "threshold"}
    assert c["threshold"] == pytest.approx(model.threshold, abs=1e-5)


def test_one_odd_dimension_does_not_flag_a_video(model) -> None:
    f = videos(np.random.default_rng(2), 1)[0]
    f[:, 3] += 100.0  # far off, but in one dimension out of 500
    assert model.check(f)["in_distribution"]
    f[:, :50] += 100.0  # a tenth of the dimensions off
    assert not model.check(f)["in_distribution"]


def test_manifest_round_trip_is_small_and_exact(model) -> None:
    d = json.loads(json.dumps(model.to_dict()))
    assert len(json.dumps(d)) < 3500  # 2 x 500 float16 + metadata
    back = domain.from_dict(d)
    f = videos(np.random.default_rng(3), 1)[0]
    assert back.score(f) == model.score(f)  # the threshold was chosen on the stored ranges
    assert back.threshold == model.threshold
    for bad, msg in [
        ({**d, "low": d["low"][:-8]}, "values for dim"),
        ({**d, "low": "***"}, "base64"),
        ({**d, "low": d["high"], "high": d["low"]}, "must not exceed"),
        ({**d, "threshold": 2}, "threshold"),
        ({**d, "format": "x"}, "format"),
        ({**d, "dim": 0}, "dim"),
    ]:
        with pytest.raises(BundleError, match=msg):
            domain.from_dict(bad)


def test_input_errors(model) -> None:
    with pytest.raises(DataError, match=r"\[T, 500\]"):
        model.score(np.zeros((4, 31)))
    with pytest.raises(DataError, match="NaN"):
        model.score(np.full((4, D), np.nan))
    with pytest.raises(DataError, match="at least 2 videos"):
        domain.fit([np.zeros((3, D))])
    with pytest.raises(BundleError, match="no threshold"):
        domain.fit(videos(np.random.default_rng(4), 3)).check(np.zeros((2, D)))
