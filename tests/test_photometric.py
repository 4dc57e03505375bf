"""Per-image photometric standardisation (cainnflow.photometric)."""

import pytest
import torch
from PIL import Image

from cainnflow.config import CAINNFlowConfig
from cainnflow.detector import Detector
from cainnflow.photometric import TARGET_MEAN, TARGET_STD, PhotometricStandardization, photometric_step

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _normalise(pixels: torch.Tensor) -> torch.Tensor:
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _pixels(images: torch.Tensor) -> torch.Tensor:
    return images * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)


def test_every_image_gets_the_target_grey_level_and_contrast():
    pixels = torch.rand(3, 3, 32, 40) * torch.tensor([0.2, 0.5, 1.0]).view(3, 1, 1, 1) + torch.tensor(
        [0.0, 0.3, 0.0]
    ).view(3, 1, 1, 1)
    out = _pixels(PhotometricStandardization(MEAN, STD)(_normalise(pixels)))
    grey = out.mean(dim=1)
    assert torch.allclose(grey.mean(dim=(1, 2)), torch.full((3,), TARGET_MEAN), atol=1e-5)
    assert torch.allclose(grey.std(dim=(1, 2)), torch.full((3,), TARGET_STD), atol=1e-5)


def test_exposure_changes_nothing_and_a_local_defect_survives():
    torch.manual_seed(0)
    pixels = 0.2 + 0.1 * torch.rand(1, 3, 64, 64)
    step = PhotometricStandardization(MEAN, STD)
    darker_flatter = 0.5 * pixels + 0.05
    assert torch.allclose(step(_normalise(pixels)), step(_normalise(darker_flatter)), atol=1e-4)
    defect = pixels.clone()
    defect[..., 30:34, 30:34] = 0.9
    diff = (step(_normalise(defect)) - step(_normalise(pixels))).abs().mean(dim=1)[0]
    # The defect stands out several times more than the rest moves (a bright spot in a flat image
    # raises its contrast, so the rest is scaled down a little).
    assert diff[30:34, 30:34].min() > 5 * diff[:20, :20].max()


def test_a_flat_image_stays_finite():
    out = PhotometricStandardization(MEAN, STD)(_normalise(torch.full((1, 3, 8, 8), 0.3)))
    assert torch.isfinite(out).all()


def test_the_mode_is_a_checked_setting_and_old_checkpoints_load_without_it():
    assert CAINNFlowConfig().photometric == "auto"
    assert isinstance(photometric_step("none", MEAN, STD), torch.nn.Identity)
    assert isinstance(photometric_step("auto", MEAN, STD), torch.nn.Identity)  # until fitted
    assert CAINNFlowConfig.from_dict({}).photometric == "none"
    with pytest.raises(ValueError, match="photometric"):
        CAINNFlowConfig(photometric="equalize")
    with pytest.raises(ValueError, match="photometric"):
        photometric_step("equalize", MEAN, STD)


def _fit(tmp_path, levels):
    from PIL import Image

    from cainnflow.data import CategoryData, Sample
    from cainnflow.detector import Detector
    from cainnflow.training import TrainConfig

    noise = 0.05 * torch.randn(32, 32, generator=torch.Generator().manual_seed(0))
    samples = []
    for i, level in enumerate(levels):  # dark, low-contrast good images at the given grey levels
        pixels = (level + noise.roll(i, dims=1)).clamp(0, 1)
        path = tmp_path / f"{i}.png"
        Image.fromarray((pixels * 255).round().byte().numpy()).convert("RGB").save(path)
        samples.append(Sample(path=path, label=0, defect_type="good"))
    detector = Detector.create(CAINNFlowConfig(out_indices=(1, 2), image_size=32), device="cpu")
    detector.fit(CategoryData("dark", tmp_path, tuple(samples), ()), TrainConfig(max_steps=2, batch_size=4))
    return detector


def test_good_images_of_one_exposure_stay_as_they_are(tmp_path):
    detector = _fit(tmp_path, [0.2] * 6)
    assert detector.config.photometric == "none" and detector.config.photometric_target is None
    assert isinstance(detector.model.photometric, torch.nn.Identity)


def test_varied_exposure_is_standardised_to_the_training_images_own(tmp_path):
    detector = _fit(tmp_path, [0.15, 0.18, 0.2, 0.22, 0.25, 0.2, 0.17, 0.23])
    assert detector.config.photometric == "standardize"
    mean, std = detector.config.photometric_target
    assert mean == pytest.approx(0.2, abs=0.02) and std == pytest.approx(0.05, abs=0.01)
    # The decision and the target are saved with the model and restored on load.
    loaded = Detector.load(detector.save(tmp_path / "m.safetensors"))
    assert loaded.config.photometric == "standardize"
    assert loaded.config.photometric_target == detector.config.photometric_target
    bright = loaded.preprocess([Image.new("RGB", (32, 32), (200, 200, 200))])
    bright[..., :16] += 0.5
    grey = _pixels_of(loaded, loaded.model.photometric(bright)).mean(dim=1)
    assert float(grey.mean()) == pytest.approx(mean, abs=1e-4) and float(grey.std()) == pytest.approx(
        std, abs=1e-3
    )


def _pixels_of(detector, images):
    b = detector.backbone
    return images * torch.tensor(b.std).view(1, 3, 1, 1) + torch.tensor(b.mean).view(1, 3, 1, 1)
