"""A training without ``epochs`` gets a length that fits its dataset: the two settings chosen on
validation seeds (240 videos -> 20 epochs, 80 videos -> 60) and sane bounds around them."""

from __future__ import annotations

from hamnet_service.services.trainings import default_epochs


def test_default_epochs_follow_the_dataset_size() -> None:
    assert default_epochs(80) == 60
    assert default_epochs(240) == 20
    assert default_epochs(12) == 100  # tiny datasets: capped
    assert default_epochs(100_000) == 10  # huge ones: at least 10 epochs
    assert default_epochs(0) == 100
