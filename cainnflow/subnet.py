"""Coupling subnets of CAINNFlow: 3×3 convolutions with CBAM (paper §3.3).

The subnet predicts the affine coefficients ``[s, t]`` of a coupling block from the passive
half of the features, keeping the spatial layout (no flattening to 1-D):

=========  ===========================================  ==================
variant    arrangement                                  paper
=========  ===========================================  ==================
``CA``     conv3×3 → CBAM                               Eq. 9, Fig. 7
``AC``     CBAM → conv3×3                               Eq. 10, Fig. 8
``CAC``    conv3×3 → CBAM → conv3×3                     Eq. 11, Fig. 9
``CC``     conv3×3 → ReLU → conv3×3 (ablation)          Eq. 12, Fig. 10
=========  ===========================================  ==================

:func:`create_subnet` returns a FrEIA subnet constructor ``(c_in, c_out) -> nn.Module``.
The last convolution starts at zero, so every coupling block starts as the identity.

Non-linearity. ``CAC`` with ``relu=False`` is Eq. 11 as printed: CBAM between the two
convolutions multiplies the features by sigmoid gates computed from them (channel gates from
pooled statistics, spatial gates from a 7×7 convolution), so conv → CBAM → conv is already a
non-linear map of its input. ``relu=True`` adds a ReLU after its first convolution (as
FastFlow's and CS-Flow's two-convolution subnets have); it measured better and is the model's
default (:class:`cainnflow.config.CAINNFlowConfig` ``subnet_relu``, the figures there), so the
paper's model is ``CAINNFlowConfig(variant="CAC", subnet_relu=False)``. ``CC`` is different: Eq. 12
composes two convolutions directly, which with nothing between them is one linear map (a
single 5×5 convolution), not the two-layer ablation the paper describes — so ``CC`` always
has the ReLU. ``CA`` and ``AC`` have one convolution and no ReLU.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

from .attention import CBAM, DEFAULT_REDUCTION, SPATIAL_KERNEL_SIZE
from .config import ATTENTION_NEGATIVE_SLOPE, MIN_HIDDEN, VARIANTS, SubnetVariant

__all__ = ["VARIANTS", "CouplingSubnet", "SubnetVariant", "create_subnet", "subnet_parameter_counts"]


def _conv(c_in: int, c_out: int, kernel_size: int, zero: bool = False) -> nn.Conv2d:
    conv = nn.Conv2d(c_in, c_out, kernel_size, padding=kernel_size // 2)
    if zero:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
    return conv


class CouplingSubnet(nn.Module):
    """One of the four subnet arrangements, mapping (N, c_in, H, W) → (N, c_out, H, W).

    Args:
        c_in: channels of the passive half fed to the subnet.
        c_out: channels of the predicted coefficients (2 × the active half).
        variant: ``"CA"``, ``"AC"``, ``"CAC"`` or ``"CC"``.
        hidden_ratio: hidden width of two-convolution variants as a multiple of ``c_in``.
        reduction: CBAM channel-MLP reduction ratio ``r``.
        kernel_size: convolution size (3 in the paper).
        spatial_kernel_size: CBAM spatial-attention convolution size (7 in the paper).
        min_hidden: floor on CBAM's channel-MLP hidden width (see :data:`cainnflow.config.MIN_HIDDEN`).
        relu: a ReLU after ``CAC``'s first convolution (not in Eq. 11; see the module notes).
        attention_slope: negative slope of CBAM's channel-MLP activation (0: the paper's ReLU;
            :mod:`cainnflow.attention`).
    """

    def __init__(
        self,
        c_in: int,
        c_out: int,
        variant: SubnetVariant = "CAC",
        hidden_ratio: float = 1.0,
        reduction: int = DEFAULT_REDUCTION,
        kernel_size: int = 3,
        spatial_kernel_size: int = SPATIAL_KERNEL_SIZE,
        min_hidden: int = MIN_HIDDEN,
        relu: bool = False,
        attention_slope: float = ATTENTION_NEGATIVE_SLOPE,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise ValueError(f"unknown subnet variant {variant!r}; choose one of {', '.join(VARIANTS)}")
        self.variant = variant
        hidden = max(1, round(c_in * hidden_ratio))
        layers: list[nn.Module]
        if variant == "CA":
            # A zero conv gives zero coefficients; the CBAM gates (0.5 at zero input) still
            # pass gradients back to it.
            layers = [
                _conv(c_in, c_out, kernel_size, zero=True),
                CBAM(c_out, reduction, spatial_kernel_size, min_hidden, attention_slope),
            ]
        elif variant == "AC":
            layers = [
                CBAM(c_in, reduction, spatial_kernel_size, min_hidden, attention_slope),
                _conv(c_in, c_out, kernel_size, zero=True),
            ]
        elif variant == "CAC":
            layers = [
                _conv(c_in, hidden, kernel_size),
                *([nn.ReLU(inplace=True)] if relu else []),
                CBAM(hidden, reduction, spatial_kernel_size, min_hidden, attention_slope),
                _conv(hidden, c_out, kernel_size, zero=True),
            ]
        else:  # CC
            layers = [
                _conv(c_in, hidden, kernel_size),
                nn.ReLU(inplace=True),
                _conv(hidden, c_out, kernel_size, zero=True),
            ]
        self.layers = nn.Sequential(*layers)

    @property
    def cbam(self) -> CBAM | None:
        """The subnet's CBAM module, or None for ``CC``."""
        return next((m for m in self.layers if isinstance(m, CBAM)), None)

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)


def create_subnet(
    variant: SubnetVariant = "CAC",
    hidden_ratio: float = 1.0,
    reduction: int = DEFAULT_REDUCTION,
    kernel_size: int = 3,
    min_hidden: int = MIN_HIDDEN,
    relu: bool = False,
    attention_slope: float = ATTENTION_NEGATIVE_SLOPE,
) -> Callable[[int, int], nn.Module]:
    """Returns a FrEIA subnet constructor ``(c_in, c_out) -> CouplingSubnet``."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown subnet variant {variant!r}; choose one of {', '.join(VARIANTS)}")

    def constructor(c_in: int, c_out: int) -> nn.Module:
        return CouplingSubnet(
            c_in,
            c_out,
            variant,
            hidden_ratio,
            reduction,
            kernel_size,
            min_hidden=min_hidden,
            relu=relu,
            attention_slope=attention_slope,
        )

    return constructor


def subnet_parameter_counts(
    channels: int, hidden_ratio: float = 1.0, reduction: int = 16, kernel_size: int = 3
) -> dict[str, int]:
    """Trainable parameters of the two subnets of one GLOW coupling block, per variant.

    A block splits ``C`` channels into ``C₁ = C // 2`` and ``C₂ = C − C₁``; one subnet maps
    ``C₁ → 2·C₂`` coefficients, the other ``C₂ → 2·C₁``.
    """
    if channels < 2:
        raise ValueError(f"a coupling block needs at least 2 channels, got {channels}")
    c1 = channels // 2
    c2 = channels - c1
    counts = {}
    for variant in VARIANTS:
        total = 0
        for c_in, c_out in ((c1, 2 * c2), (c2, 2 * c1)):
            subnet = CouplingSubnet(c_in, c_out, variant, hidden_ratio, reduction, kernel_size)
            total += sum(p.numel() for p in subnet.parameters() if p.requires_grad)
        counts[variant] = total
    return counts
