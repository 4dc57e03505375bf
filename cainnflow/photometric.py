"""Per-image photometric standardisation in front of the backbone.

A camera's exposure and a part's finish change the brightness and contrast of whole images;
a flow trained on a few good images learns their exposure as part of "normal", and flags every
good image that is lit differently. On magnetic tile's first 20 good images (grey levels
49–82; the test's good images 50–191) the false alarms were the bright good images
(benchmarks/README.md). Standardising each image's grey level to one mean and contrast before
the backbone removes what a whole image's exposure says, and keeps what a region says against
the rest of its image — a local defect moves an image's grey-level mean and spread little. The
target is the training images' own typical exposure (:func:`measure_exposure`), so images are
not pushed far from what the features were trained on.

Whether to standardise is learnt from the good images (``"auto"``, the default): when their
grey-level mean or contrast varies between images by more than :data:`EXPOSURE_SPREAD` of its
level, exposure is a nuisance and every image is standardised; when they share one exposure
(a studio-lit part), an image's brightness is itself evidence (a missing part, a stain) and the
images stay as they are. Measured (coefficient of variation over at most 32 training images):
bottle 0.9–1.0 %, the synthetic demo categories 3.8–10.5 %, magnetic tile 12–25 %.

The step works on the normalised input tensor (``(pixel − mean_c) / std_c``), so every path
that feeds the backbone — training, scoring, the latent views and the exported graph — shares
it: with ``g`` the image's grey level (the channel mean of its pixels), each image becomes
``(pixel − mean(g)) · target_std / std(g) + target_mean``, the same affine map on every
channel (colour ratios are kept).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .config import PHOTOMETRIC_MODES

EXPOSURE_SPREAD = 0.025
"""``"auto"`` standardises when the training images' grey-level means or contrasts vary by more
than this fraction of their mean (coefficient of variation): bottle's 1 % stays as it is,
magnetic tile's 12 % and more is standardised (benchmarks/README.md)."""
TARGET_MEAN = 0.45
"""Grey-level mean, in [0, 1] pixel units, of a model not fitted yet (a fitted model brings
every image to its training images' typical exposure: :func:`measure_exposure`)."""
TARGET_STD = 0.225
"""Grey-level standard deviation of a model not fitted yet."""
EXPOSURE_IMAGES = 32
"""Training images (at most) whose exposure sets the target."""
MIN_STD = 1.0 / 255.0
"""A flat image's contrast is not amplified past ``TARGET_STD / MIN_STD``."""


class PhotometricStandardization(nn.Module):
    """Normalised images (N, 3, H, W) → the same images at one grey-level mean and contrast.

    Args:
        mean: the per-channel normalisation mean the images were normalised with.
        std: the per-channel normalisation standard deviation.
        target_mean: grey-level mean after standardisation (pixel units in [0, 1]).
        target_std: grey-level standard deviation after standardisation.
    """

    def __init__(
        self,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        target_mean: float = TARGET_MEAN,
        target_std: float = TARGET_STD,
    ) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError("mean and std must have one entry per channel, std positive")
        # Constants, not buffers: nothing to save (they follow from the backbone and the config).
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.target_mean = float(target_mean)
        self.target_std = float(target_std)

    def forward(self, images: Tensor) -> Tensor:
        c = len(self.mean)
        mean = images.new_tensor(self.mean).view(1, c, 1, 1)
        std = images.new_tensor(self.std).view(1, c, 1, 1)
        pixels = images * std + mean
        grey = pixels.mean(dim=1, keepdim=True)
        mu = grey.mean(dim=(2, 3), keepdim=True)
        sigma = grey.std(dim=(2, 3), keepdim=True).clamp_min(MIN_STD)
        pixels = (pixels - mu) * (self.target_std / sigma) + self.target_mean
        return (pixels - mean) / std

    def extra_repr(self) -> str:
        return f"target_mean={self.target_mean:g}, target_std={self.target_std:g}"


def photometric_step(
    mode: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    target: tuple[float, float] | None = None,
) -> nn.Module:
    """The step for a config's ``photometric`` mode and target: the standardisation, or the identity."""
    if mode not in PHOTOMETRIC_MODES:
        raise ValueError(f"unknown photometric mode {mode!r}; choose one of {', '.join(PHOTOMETRIC_MODES)}")
    if mode != "standardize":  # "none", and "auto" until fitted (measure_exposure)
        return nn.Identity()
    target_mean, target_std = target if target is not None else (TARGET_MEAN, TARGET_STD)
    return PhotometricStandardization(mean, std, target_mean, target_std)


class Exposure(NamedTuple):
    """What the good images say about exposure.

    Attributes:
        mode: ``"standardize"`` or ``"none"`` (what ``"auto"`` resolves to).
        target: the typical grey-level (mean, std): each image's own, averaged, clipped to
            [:data:`MIN_STD`, 1] so that black or flat images still give a valid target.
        spread: the larger coefficient of variation of the images' grey-level means and stds.
    """

    mode: str
    target: tuple[float, float]
    spread: float


@torch.no_grad()
def measure_exposure(
    images: Tensor, mean: tuple[float, ...], std: tuple[float, ...], mode: str = "auto"
) -> Exposure:
    """Exposure of normalised good images (N, 3, H, W), and the mode it calls for.

    ``mode`` ``"auto"`` resolves by :data:`EXPOSURE_SPREAD`; ``"standardize"`` and ``"none"``
    are kept as asked.
    """
    if mode not in PHOTOMETRIC_MODES:
        raise ValueError(f"unknown photometric mode {mode!r}; choose one of {', '.join(PHOTOMETRIC_MODES)}")
    c = len(mean)
    scale, shift = images.new_tensor(std).view(1, c, 1, 1), images.new_tensor(mean).view(1, c, 1, 1)
    grey = (images.float() * scale + shift).mean(dim=1).flatten(1)
    means, stds = grey.mean(dim=1), grey.std(dim=1)
    target = (float(means.mean().clamp(MIN_STD, 1.0)), float(stds.mean().clamp(MIN_STD, 1.0)))
    spread = 0.0
    if len(means) > 1:
        spread = max(float(v.std() / v.mean().clamp_min(MIN_STD)) for v in (means, stds))
    if mode == "auto":
        mode = "standardize" if spread > EXPOSURE_SPREAD else "none"
    return Exposure(mode, target, spread)
