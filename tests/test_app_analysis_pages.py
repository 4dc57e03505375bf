"""The Evaluate, Latent space and Learn pages, driven with Streamlit's AppTest (no browser).

A tiny real model (EfficientNet-Lite0 at 64 px, one coupling step, one epoch on a small
generated dataset) is built once per module and put into session state directly.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from app import keys, state
from cainnflow.data import CategoryData, load_mvtec_category
from cainnflow.demo_data import make_demo_dataset
from cainnflow.detector import Detector
from cainnflow.evaluation import comparison_figures
from cainnflow.model import CAINNFlowConfig
from cainnflow.training import TrainConfig
from tests.app_support import APP, ROOT, app_home, button, home, navigation_not_pages_folder  # noqa: F401

TIMEOUT_S = 60
CATEGORY = "carpet_weave"
IMAGE_SIZE = 64
TOY_TEST_STEPS = 50  # the smallest choice of toy_view.TOY_STEP_CHOICES


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Detector, CategoryData, Path]:
    root = make_demo_dataset(
        tmp_path_factory.mktemp("demo"),
        categories=[CATEGORY],
        image_size=IMAGE_SIZE,
        n_train=10,
        n_test_good=3,
        n_test_per_defect=1,
    )
    data = load_mvtec_category(root, CATEGORY)
    detector = Detector.create(CAINNFlowConfig(image_size=IMAGE_SIZE, steps=1), weights="auto", device="cpu")
    detector.fit(data, TrainConfig(epochs=1, batch_size=8))
    return detector, data, root


def open_page(page: str, tiny: tuple[Detector, CategoryData, Path] | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    if tiny is not None:
        detector, data, root = tiny
        at.session_state[keys.MODEL] = state.ModelEntry(detector, "test model", 1)
        at.session_state[keys.DATA] = state.DataEntry(data, "demo", str(root))
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("page", ["pages/evaluate.py", "pages/latent.py", "pages/learn.py"])
def test_pages_without_model(page: str) -> None:
    at = open_page(page)
    infos = " ".join(i.value for i in at.info)
    assert "Train / load" in infos


def test_evaluate_page(tiny: tuple[Detector, CategoryData, Path]) -> None:
    detector, data, root = tiny
    at = open_page("pages/evaluate.py", tiny)
    button(at, "Evaluate on test split").click().run()
    assert not at.exception, at.exception
    result = at.session_state[keys.EVALUATION]
    assert result is not None and result.n_test == len(data.test)
    assert "Image AUROC" in at.table[0].value.index.tolist()

    slider = at.slider(key=keys.EVAL_THRESHOLD)
    low, high = slider.min, slider.max
    target = float(low + 0.3 * (high - low))
    slider.set_value(target).run()
    assert not at.exception, at.exception
    assert at.slider(key=keys.EVAL_THRESHOLD).value == pytest.approx(target, rel=1e-3)
    assert any(m.label == "Precision" for m in at.metric)

    button(at, "F1-optimal on test").click().run()
    assert not at.exception, at.exception
    assert at.slider(key=keys.EVAL_THRESHOLD).value == pytest.approx(result.f1_threshold, rel=1e-3)

    button(at, "Use percentile").click().run()
    assert not at.exception, at.exception

    button(at, "Save threshold with the model").click().run()
    assert not at.exception, at.exception
    assert detector.threshold == pytest.approx(at.slider(key=keys.EVAL_THRESHOLD).value)
    assert detector.record.threshold_origin == "test_split"  # the button read the test split
    at.slider(key=keys.EVAL_THRESHOLD).set_value(target).run()  # moved by hand, then saved
    button(at, "Save threshold with the model").click().run()
    assert detector.threshold == pytest.approx(target, rel=1e-3)
    assert detector.record.threshold_origin == "user"
    # The stored evaluation is reused: no "Evaluate on test split" button any more.
    assert not any(b.label == "Evaluate on test split" for b in at.button)

    # Data without a test split: a clear message instead of the button.
    no_test = CategoryData(data.name, data.root, data.train, ())
    at = AppTest.from_file(APP, default_timeout=TIMEOUT_S)
    at.session_state[keys.MODEL] = state.ModelEntry(detector, "test model", 1)
    at.session_state[keys.DATA] = state.DataEntry(no_test, "demo", str(root))
    at.switch_page("pages/evaluate.py").run()
    assert not at.exception, at.exception
    assert any("no test images" in i.value for i in at.info)


def test_latent_page(tiny: tuple[Detector, CategoryData, Path]) -> None:
    at = open_page("pages/latent.py", tiny)
    at.radio(key="cf_latent_scale").set_value(1).run()
    assert not at.exception, at.exception
    at.slider(key="cf_latent_channel").set_value(3).run()
    assert not at.exception, at.exception

    # Inverse generation: a manual point, then a rectangle, then random points.
    at.radio(key="cf_latent_inv_scale").set_value(0).run()
    at.number_input(key="cf_latent_row").set_value(2).run()
    at.number_input(key="cf_latent_col").set_value(5).run()
    button(at, "Add point").click().run()
    assert not at.exception, at.exception
    assert (2, 5) in at.session_state[keys.LATENT_POINTS][0]
    at.slider(key="cf_latent_amp").set_value(12.0).run()
    assert not at.exception, at.exception
    score = next(m for m in at.metric if m.label == "Image score")
    assert score.delta is not None
    # The verdict of the injected anomaly: its score against the model's threshold.
    detector = tiny[0]
    verdicts = [e.value for e in [*at.success, *at.error] if "threshold" in e.value]
    assert len(verdicts) == 1 and f"threshold {detector.threshold:.4g}" in verdicts[0], verdicts
    assert verdicts[0].startswith(("**good**", "**anomalous**"))
    button(at, "Clear points").click().run()
    assert not at.exception, at.exception
    assert at.session_state[keys.LATENT_POINTS][0] == []
    at.radio(key="cf_latent_mode").set_value("Rectangle").run()
    assert not at.exception, at.exception
    at.radio(key="cf_latent_mode").set_value("Random points").run()
    assert not at.exception, at.exception

    # Sampling has its own image picker (not the Latents tab's image).
    picker = at.selectbox(key="cf_latent_sample_image_index")
    picker.set_value(len(picker.options) - 1).run()
    assert not at.exception, at.exception
    at.slider(key="cf_latent_temp").set_value(1.0).run()
    assert not at.exception, at.exception
    assert any("picked image" in c.value for c in at.caption)


def test_learn_page(tiny: tuple[Detector, CategoryData, Path]) -> None:
    at = open_page("pages/learn.py", tiny)
    at.select_slider(key="cf_learn_toy_steps").set_value(TOY_TEST_STEPS).run()
    button(at, f"Train {TOY_TEST_STEPS} steps").click().run()
    assert not at.exception, at.exception
    assert len(at.session_state[keys.LEARN_TOY].step_losses) == TOY_TEST_STEPS
    at.selectbox(key="cf_learn_toy_data").set_value("circles").run()
    assert not at.exception, at.exception

    at.slider(key="cf_learn_s0").set_value(1.0).run()
    assert not at.exception, at.exception
    ratio = next(m for m in at.metric if m.label == "Area after / before")
    assert float(ratio.value) > 1.0

    at.radio(key="cf_learn_att_scale").set_value(2).run()
    assert not at.exception, at.exception
    # CBAM: the input image beside the gates, and what the gate's range means.
    assert any(c.value == "the input image" for c in at.caption)
    assert any("Inside the border the gate lies between" in c.value for c in at.caption)
    # The subnet equations are whole (the CAC one was cut to "(1").
    assert any(m.value == r"$\mathrm{Con}(\mathrm{CBAM}(\mathrm{Con}(F)))$" for m in at.markdown)
    assert any(c.value == "paper Eq. 11" for c in at.caption)
    at.number_input(key="cf_learn_channels").set_value(32).run()
    assert not at.exception, at.exception


def test_compare_two_checkpoints_on_the_same_data(tiny: tuple[Detector, CategoryData, Path]) -> None:
    _, data, _ = tiny
    at = open_page("pages/evaluate.py", tiny)
    button(at, "Evaluate on test split").click().run()
    other = Detector.create(
        CAINNFlowConfig(image_size=IMAGE_SIZE, steps=1, variant="CC"), weights="auto", device="cpu"
    )
    other.fit(data, TrainConfig(epochs=1, batch_size=8))
    at.file_uploader(key="cf_eval_compare_upload").set_value(
        ("other.safetensors", other.to_bytes(), "application/octet-stream")
    ).run()
    button(at, "Compare on this test split").click().run()
    assert not at.exception, at.exception
    _, name, result = at.session_state[keys.EVAL_COMPARE]
    assert name == "other.safetensors" and result.n_test == len(data.test)
    table = at.table[-1].value
    assert list(table.columns) == ["A (current): test model", "B: other"]
    ours = at.session_state[keys.EVALUATION]
    assert table.loc["Image AUROC"].tolist() == [f"{ours.image_auroc:.3f}", f"{result.image_auroc:.3f}"]
    # Verdict figures at each model's own threshold, computed by the library.
    for column, evaluated, threshold in ((0, ours, tiny[0].threshold), (1, result, result.threshold)):
        figures = comparison_figures(evaluated, threshold)
        assert table.iloc[:, column]["Own threshold (score ≥ it: defective)"] == f"{threshold:.4g}"
        for row, value in (
            ("Precision at its own threshold", figures.precision),
            ("Recall at its own threshold", figures.recall),
            ("False positive rate at its own threshold", figures.fpr),
        ):
            assert table.iloc[:, column][row] == ("n/a" if value is None else f"{value:.3f}")


def test_compare_models_page_scores_this_sessions_models(tiny: tuple[Detector, CategoryData, Path]) -> None:
    """Compare models lists the session's checkpoints and the current model, scores them on the
    current test split, each at its own threshold (#19)."""
    from app import loaders

    detector, data, _ = tiny
    at = open_page("pages/compare.py", tiny)
    folder = loaders.sessions_dir() / at.session_state[keys.TOKEN]
    twin = Detector.load(detector.to_bytes(), device="cpu")
    twin.threshold = float(detector.threshold) + 0.05  # the same model, deciding at another threshold
    twin.save(folder / "stricter.safetensors")
    at.run()
    assert not at.exception, at.exception
    assert at.radio(key=keys.K_COMPARE_SOURCE).value == "session"
    assert at.multiselect[0].value == ["current model: test model", "stricter"]
    button(at, "Score 2 model(s)").click().run()
    assert not at.exception, at.exception
    table = at.table[-1].value
    for name, model in (("current model: test model", detector), ("stricter", twin)):
        expected = comparison_figures(model.evaluate(data), model.threshold)
        column = table[name]
        assert column["own threshold"] == f"{model.threshold:.4g}"
        assert column["image AUROC"] == f"{expected.image_auroc:.3f}"
        for row, value in (
            ("precision", expected.precision),
            ("recall", expected.recall),
            ("false positive rate", expected.fpr),
        ):
            assert column[row] == ("n/a" if value is None else f"{value:.3f}")
    assert len(at.get("plotly_chart")) == 1


def test_compare_models_page_offers_the_shipped_example_sweep() -> None:
    at = open_page("pages/compare.py")
    assert any("No models in this session yet" in i.value for i in at.info)
    button(at, "Show the example sweep").click().run()
    assert not at.exception, at.exception
    assert at.radio(key=keys.K_COMPARE_SOURCE).value == "example"
    assert len(at.get("plotly_chart")) == 2 and not at.error
    assert any("| **mean** |" in m.value for m in at.markdown)
