"""The training record: round trip, the format-2 upgrade on real old files, hostile fields in one line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from cainnflow.checkpoint import FORMAT_VERSION, read_checkpoint, write_checkpoint
from cainnflow.detector import Detector
from cainnflow.errors import CheckpointError
from cainnflow.record import AutoCandidate, AutoReport, DataReference, Timings, TrainingRecord

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).resolve().parent / "fixtures"
APP_AUTO = FIXTURES / "v2_app_auto.safetensors"
CLI_SWEEP = FIXTURES / "v2_cli_sweep.safetensors"
DEMO_CHECKPOINT = ROOT / "assets" / "demo_carpet_weave.safetensors"


def _full_record() -> TrainingRecord:
    candidate = AutoCandidate((1, 2), 4.0, "coarse", 0.9, 0.95, 0.925, lead_low=0.004, aupro=0.85)
    return TrainingRecord(
        data=DataReference("custom", "/data/parts/good", "good", test_good="/data/parts/ok", masks="m"),
        n_train=40,
        n_val=8,
        train_config={"epochs": None, "lr": 0.002, "augment": "none", "grad_clip": None, "seed": 0},
        timings=Timings(1.5, 20.25, 300, True),
        auto=AutoReport(candidate, (candidate,), 30, 10, 90, ("crack", "noise"), 0.61, 55.0),
        threshold_origin="synthetic_f1",
        sweep_key="CAC_s1_bottle",
    )


def test_a_record_round_trips_through_json():
    record = _full_record()
    again = TrainingRecord.from_dict(json.loads(json.dumps(record.to_dict())))
    assert again == record
    assert again.auto.chosen.stages == (1, 2) and again.timings.total_seconds == 21.75
    assert again.auto.chosen.lead_low == 0.004 and not again.auto.kept_defaults
    assert again.auto.chosen.aupro == 0.85
    assert TrainingRecord.from_dict(TrainingRecord().to_dict()) == TrainingRecord()


def test_the_largest_feedback_set_fits_in_a_record():
    from cainnflow.feedback import DEFECTIVE, MAX_ITEMS, FeedbackItem, FeedbackSet

    marks = FeedbackSet()
    for i in range(MAX_ITEMS):
        item = FeedbackItem.create(
            "x" * 300 + f"{i}.png", str(i).encode(), DEFECTIVE, "dataset", score=0.1 + i
        )
        marks = marks.mark(item, base_threshold=0.5)
    record = replace(_full_record(), feedback=marks.to_dict())
    assert TrainingRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record


def test_replace_checks_like_a_file():
    with pytest.raises(ValueError, match=r"record\.threshold_origin must be one of"):
        replace(TrainingRecord(), threshold_origin="guess")
    with pytest.raises(ValueError, match=r"record\.data has the wrong type"):
        replace(TrainingRecord(), data={"source": "demo", "root": "", "category": "x"})


@pytest.mark.parametrize(
    ("category", "root", "expected"),
    [("bottle", "mvtec_ad", ("mvtec_ad", "bottle")), ("bottle", "/", ("", "bottle")), ("a/b", "", None)],
)
def test_the_library_records_names_never_paths(category, root, expected):
    ref = DataReference.of_category(category, root=root)
    assert (ref.root, ref.category) == expected if expected else ref is None


# --------------------------------------------------------------------------- the upgrade of real old files


@pytest.fixture(scope="module")
def app_auto() -> Detector:
    return Detector.load(APP_AUTO, device="cpu")


def test_an_old_app_checkpoint_with_auto_configuration_and_feedback_upgrades(app_auto):
    _, doc = read_checkpoint(APP_AUTO)
    info, history = doc["info"], doc["history"]
    assert doc["format_version"] == 2 and "record" not in doc  # the fixture really is the old format
    record = app_auto.record
    assert record.data == DataReference("demo", "", "carpet_weave") and record.data.reopenable
    assert (record.n_train, record.n_val) == (info["n_train"], info["n_val"])
    assert record.train_config == info["train_config"]
    assert record.timings == Timings(
        history["feature_seconds"], history["train_seconds"], history["steps"], history["stopped_early"]
    )
    assert record.auto.to_dict() == info["auto"]
    assert record.auto.chosen.stages == app_auto.config.out_indices
    assert record.feedback == info["feedback"] and len(record.feedback["items"]) == 1
    assert record.threshold_origin is None and record.sweep_key is None  # format 2 did not say


def test_an_old_cli_and_sweep_checkpoint_upgrades():
    detector = Detector.load(CLI_SWEEP, device="cpu")
    record = detector.record
    assert record.data == DataReference("folder", "mvtec_ad", "carpet_weave") and not record.data.reopenable
    assert record.sweep_key == "CAC_s1_e2" and record.auto is None and record.feedback is None
    assert record.data.describe() == "mvtec_ad / carpet_weave"


@pytest.mark.skipif(not DEMO_CHECKPOINT.exists(), reason="the demo checkpoint is missing")
def test_the_shipped_demo_checkpoint_has_a_record():
    detector = Detector.load(DEMO_CHECKPOINT, device="cpu")
    assert detector.record.data == DataReference("demo", "", "carpet_weave")
    assert detector.record.n_train is not None and detector.record.timings is not None


def test_an_upgraded_record_is_saved_in_the_new_format_and_reads_back(app_auto, tmp_path):
    path = app_auto.save(tmp_path / "upgraded.safetensors")
    _, doc = read_checkpoint(path)
    assert doc["format_version"] == FORMAT_VERSION == 3 and "info" not in doc
    again = Detector.load(path, device="cpu")
    assert again.record == app_auto.record
    assert again.threshold == app_auto.threshold


def test_setting_the_threshold_records_its_origin(app_auto, tmp_path):
    detector = Detector.load(APP_AUTO, device="cpu")
    detector.threshold = 0.5
    assert detector.record.threshold_origin == "user"
    detector.set_threshold(0.7, "feedback")
    loaded = Detector.load(detector.save(tmp_path / "t.safetensors"), device="cpu")
    assert (loaded.threshold, loaded.record.threshold_origin) == (0.7, "feedback")
    with pytest.raises(ValueError, match="threshold_origin"):
        detector.set_threshold(0.9, "a hunch")
    assert detector.threshold == 0.7  # left as it was
    with pytest.raises(AttributeError, match=r"detector\.record"):
        _ = detector.info


# --------------------------------------------------------------------------- hostile records


def _rewritten(source: Path, tmp_path: Path, change) -> Path:
    """``source`` with its document changed, in its own format version."""
    tensors, doc = read_checkpoint(source)
    change(doc)
    body = {k: v for k, v in doc.items() if k != "format"}  # its format_version overrides the writer's
    return write_checkpoint(tmp_path / "hostile.safetensors", tensors, body)


@pytest.fixture(scope="module")
def new_file(app_auto, tmp_path_factory) -> Path:
    return app_auto.save(tmp_path_factory.mktemp("record") / "new.safetensors")


def _record(**changes):
    def change(doc):
        for key, value in changes.items():
            target = doc["record"]
            *path, last = key.split("__")
            for part in path:
                target = target[part]
            target[last] = value

    return change


HOSTILE_RECORDS = {
    "not an object": (lambda d: d.update(record=[1, 2]), "record must be an object"),
    "unknown field": (_record(owner="mallory"), "record has an unknown field 'owner'"),
    "count as text": (_record(n_train="40"), "record.n_train has the wrong type"),
    "count as bool": (_record(n_val=True), "record.n_val has the wrong type"),
    "negative count": (_record(n_train=-3), r"record.n_train must be a count in \[0"),
    "NaN seconds": (
        _record(timings__train_seconds=float("nan")),
        "record.timings.train_seconds must be a finite",
    ),
    "inf setting": (_record(train_config__lr=float("inf")), "record.train_config.lr must be a finite"),
    "nested setting": (_record(train_config__lr={"a": 1}), "record.train_config.lr has the wrong type"),
    "huge sweep key": (_record(sweep_key="k" * 100_000), "record.sweep_key is too long"),
    "huge record": (_record(train_config__augment="x" * 2_000_000), "record is larger than"),
    "control characters": (_record(sweep_key="a\x1b[31mb"), "record.sweep_key holds control characters"),
    "category path": (
        _record(data__category="/etc"),
        "record.data.category must be a folder name, not a path",
    ),
    "category dots": (_record(data__category=".."), "record.data.category must be a folder name"),
    "upload root path": (
        _record(data={"source": "upload", "root": "../../x", "category": "c"}),
        "record.data.root must be a folder name",
    ),
    "library root path": (
        _record(data={"source": "folder", "root": "/home/someone/data", "category": "c"}),
        "record.data.root must be a folder name",
    ),
    "unknown source": (_record(data__source="ftp"), "record.data.source must be one of"),
    "unknown origin": (_record(threshold_origin="oracle"), "record.threshold_origin must be one of"),
    "stage out of range": (_record(auto__chosen__stages=[1, 10**9]), "record.auto candidate stage must lie"),
    "auroc out of range": (
        _record(auto__chosen__image_auroc=7.0),
        r"record.auto candidate image_auroc must lie",
    ),
    "feedback text": (_record(feedback="yes"), "record.feedback must be an object"),
    "lead out of range": (_record(auto__chosen__lead_low=5.0), r"record.auto candidate lead_low must lie"),
    "lead as text": (_record(auto__chosen__lead_low="big"), r"record.auto candidate lead_low"),
    "aupro out of range": (_record(auto__chosen__aupro=-0.5), r"record.auto candidate aupro must lie"),
    "aupro not finite": (_record(auto__chosen__aupro=float("inf")), r"record.auto candidate aupro"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_RECORDS))
def test_a_hostile_record_is_one_checkpoint_error_line(new_file, tmp_path, name):
    change, message = HOSTILE_RECORDS[name]
    with pytest.raises(CheckpointError, match=message) as caught:
        Detector.load(_rewritten(new_file, tmp_path, change), device="cpu")
    text = str(caught.value)
    assert text.startswith("checkpoint field ") and "\n" not in text and len(text) < 300


HOSTILE_INFOS = {
    "info a list": (lambda d: d.update(info=[1, 2]), "info must be an object"),
    "dataset path": (
        lambda d: d["info"].update(dataset={"source": "mvtec", "root": "/", "category": "/etc"}),
        "info.dataset.category must be a folder name",
    ),
    "category path": (
        lambda d: d["info"].pop("dataset") and d["info"].update(category="../x"),
        "info.category",
    ),
    "counts as text": (lambda d: d["info"].update(n_train="ten"), "info.n_train has the wrong type"),
    "auto garbage": (lambda d: d["info"].update(auto={"chosen": 1}), "info.auto has no"),
    "NaN history seconds": (
        lambda d: d["history"].update(feature_seconds=float("nan")),
        "history.feature_seconds must be a finite",
    ),
}


@pytest.mark.parametrize("name", sorted(HOSTILE_INFOS))
def test_a_hostile_old_info_is_one_checkpoint_error_line(tmp_path, name):
    change, message = HOSTILE_INFOS[name]
    path = _rewritten(APP_AUTO, tmp_path, change)
    assert read_checkpoint(path)[1]["format_version"] == 2
    with pytest.raises(CheckpointError, match=message) as caught:
        Detector.load(path, device="cpu")
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


def test_an_old_info_with_keys_nobody_reads_still_loads(tmp_path):
    """Format 2's info was a free dict: keys the record does not know are dropped, not refused."""
    path = _rewritten(APP_AUTO, tmp_path, lambda d: d["info"].update(note="my own key", image_size=64))
    assert Detector.load(path, device="cpu").record.n_train is not None
