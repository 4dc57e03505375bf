"""CAINNFlow: CBAM-embedded invertible neural network flows for image anomaly detection.

    from cainnflow.detector import Detector
    detector = Detector.create(device="auto"); detector.fit(load_mvtec_category(root, "bottle"))
    detector.predict(["part.png"]).scores

Importing the package sets OpenMP's wait policy for shared machines before PyTorch loads
(:mod:`cainnflow.threads`); import ``cainnflow`` before ``torch`` to get it.
"""

from .threads import configure_openmp

configure_openmp()

__version__ = "0.1.0"
__all__ = ["__version__"]
