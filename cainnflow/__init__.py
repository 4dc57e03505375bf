"""CAINNFlow: CBAM-embedded invertible neural network flows for image anomaly detection."""

__version__ = "0.1.0"
