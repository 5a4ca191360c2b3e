"""Demo dataset and detector: the detector is validated on freshly generated training data."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lib_upsample_guidance.demo import dataset, detector

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("size", [16, 24, 32, 48])
def test_detector_finds_exactly_one_object_on_training_data(size: int) -> None:
    imgs, infos = dataset.sample_batch(300, size, torch.Generator().manual_seed(1000 + size))
    dets = detector.detect_batch(imgs)
    rate = sum(d.ok for d in dets) / len(dets)
    assert rate >= 0.99
    # the detected area matches the drawn one (anti-aliased edge: within 0.03 of the image area)
    err = [abs(d.areas[0] - i.area_fraction) for d, i in zip(dets, infos, strict=True) if d.ok]
    assert float(np.mean(err)) < 0.03


def test_dataset_is_deterministic_and_in_range() -> None:
    a, ia = dataset.sample_batch(8, 16, torch.Generator().manual_seed(3))
    b, ib = dataset.sample_batch(8, 16, torch.Generator().manual_seed(3))
    c, _ = dataset.sample_batch(8, 16, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and ia == ib
    assert not torch.equal(a, c)
    assert a.shape == (8, 3, 16, 16) and a.min() >= -1 and a.max() <= 1


def test_expected_area_matches_the_generator() -> None:
    _, infos = dataset.sample_batch(4000, 16, torch.Generator().manual_seed(5))
    empirical = np.mean([i.area_fraction for i in infos])
    assert math.isclose(empirical, dataset.expected_area_fraction(), rel_tol=0.03)


def _canvas(size: int, bg: float = -0.6) -> torch.Tensor:
    return torch.full((3, size, size), bg)


def test_detector_counts_two_objects_and_none() -> None:
    img = _canvas(32)
    img[:, 4:10, 4:10] = 0.8
    img[:, 20:28, 18:26] = 0.8
    d = detector.detect(img)
    assert d.count == 2 and not d.ok
    assert sorted(d.areas) == pytest.approx([36 / 1024, 64 / 1024])
    assert detector.detect(_canvas(32)).count == 0


def test_detector_ignores_specks_and_handles_gradients() -> None:
    size = 32
    ramp = torch.linspace(-1, 1, size)
    img = torch.stack(
        [ramp[None, :].expand(size, size), ramp[:, None].expand(size, size), torch.zeros(size, size)]
    )
    assert detector.detect(img).count == 0  # a pure linear gradient is background
    img[:, 12:20, 12:20] = torch.tensor([1.0, -1.0, 1.0])[:, None, None]
    img[:, 2, 28] = 1.0  # one-pixel speck: below MIN_AREA_FRACTION
    assert detector.detect(img).count == 1


def test_object_touching_the_border_is_still_one_object() -> None:
    img = _canvas(16, bg=0.5)
    img[:, 0:7, 0:7] = -0.9  # corner object covering part of the border ring
    d = detector.detect(img)
    assert d.count == 1 and d.areas[0] == pytest.approx(49 / 256)
