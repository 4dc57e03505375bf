"""Export for deployment: the detector's scoring graph as a zip for ONNX Runtime or OpenVINO.

``render_export(detector)`` draws a format choice, an export button and a download button.
The zip unpacks to a folder that ``python -m cainnflow evaluate/predict --checkpoint DIR`` and
:func:`cainnflow.runtime.load_export` run without PyTorch.
"""

from __future__ import annotations

import importlib.util

import streamlit as st

from cainnflow.detector import Detector
from cainnflow.errors import CainnflowError

from . import keys

__all__ = ["render_export"]

_FORMATS = {"ONNX (ONNX Runtime)": "onnx", "OpenVINO IR": "openvino"}
_ENGINE_PACKAGES = {"onnx": ("onnx",), "openvino": ("onnx", "openvino")}


def _missing(fmt: str) -> list[str]:
    return [name for name in _ENGINE_PACKAGES[fmt] if importlib.util.find_spec(name) is None]


def render_export(detector: Detector) -> None:
    """Format choice, export and a zip download of the scoring graph plus ``export.json``."""
    st.subheader("Export for deployment")
    if not detector.is_trained:
        st.info("Train or load a model first: an export needs its score statistics and threshold.")
        return
    label = st.radio("Format", list(_FORMATS), horizontal=True, key="export_view_format")
    fmt = _FORMATS[label]
    missing = _missing(fmt)
    if missing:
        st.warning(f"Exporting to {label} needs {', '.join(missing)}: `pip install 'cainnflow[deploy]'`.")
        return
    st.caption(
        f"Whole scoring graph (backbone → flows → anomaly map → score) at "
        f"{detector.config.image_size} px, dynamic batch; the threshold stays editable in export.json."
    )
    key = (fmt, id(detector), detector.threshold)
    if st.button("Export", key="export_view_button"):
        from cainnflow.export import export_zip_bytes

        with st.spinner("Tracing and converting the graph…"):
            try:
                st.session_state[keys.K_EXPORT_ZIP] = (key, export_zip_bytes(detector, format=fmt))
            except CainnflowError as exc:
                st.error(str(exc))
                return
    stored = st.session_state.get(keys.K_EXPORT_ZIP)
    if stored is not None and stored[0] == key:
        category = detector.record.category or "model"
        st.download_button(
            "Download export (.zip)",
            data=stored[1],
            file_name=f"cainnflow_{category}_{fmt}.zip",
            mime="application/zip",
            key="export_view_download",
        )
        st.caption(
            "The zip holds the graph, `export.json` (preprocessing, thresholds and the decision rule: "
            "image score ≥ threshold → anomalous) and a `README.md` with scripts that run it on ONNX Runtime "
            "or OpenVINO with only numpy and pillow. With cainnflow: `python -m cainnflow predict "
            "--checkpoint DIR images… --out preds`."
        )
