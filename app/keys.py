"""Every session-state key the app names: the one place they are defined.

Plain strings, no imports: any module of the app (and the tests) may read them. What a key
holds is said beside it. Keys that only name a widget inside one panel (``key="train_steps"``)
stay with the widget; a key that another module reads, restores or resets is named here.
"""

from __future__ import annotations

# ----------------------------------------------------------------- the session (app.state)
MODEL = "cf_model"  # app.state.ModelEntry | None
DATA = "cf_data"  # app.state.DataEntry | None
TRAIN_JOB = "cf_train_job"  # app.jobs.TrainingJob | None
EVALUATION = "cf_evaluation"  # EvaluationResult | None (for the current model + data)
EVAL_OWNER = "cf_eval_owner"  # app.state.evaluation_owner() of the stored evaluation
DEVICE_CHOICE = "cf_device"  # one of cainnflow.device.DEVICE_CHOICES
TOKEN = "cf_session_token"  # this session's token (also in the URL)
RESTORED = "cf_restored"  # a one-line note about what came back after a reload, or None
NOTICE = "cf_notice"  # (kind, text) of the last load / save action, shown once on Train / load
UPLOADS = "cf_uploads"  # {name: bytes} images uploaded on any page, kept for the session
SCORE_CACHE = "cf_score_cache"  # OrderedDict[(model version, digest), scored image]
PENDING_DATA = "cf_pending_data"  # DataRef of demo data still being generated, to become current
ROUTED = "cf_routed"  # True once the router (streamlit_app.py) has run in this session
FIELDS_WRITTEN = "cf_fields_written"  # the form fields last written to the session's fields file
OPEN_PAGE = "page"  # query parameter: the page a bookmark asked for, carried through require_router

# ----------------------------------------------------------------- Train / load
KEEP = "session"  # not a key: the persist_state of widgets whose values survive page switches
K_SOURCE = "train_source"
K_DEMO_CATEGORY = "train_demo_category"
K_MVTEC_ROOT = "train_mvtec_root"
K_MVTEC_CATEGORY = "train_mvtec_category"
K_CUSTOM_GOOD = "train_custom_good"
K_CUSTOM_TEST_GOOD = "train_custom_test_good"
K_CUSTOM_DEFECT = "train_custom_defect"
K_CUSTOM_MASKS = "train_custom_masks"
K_UPLOAD_NAME = "train_upload_name"
K_DATA_UPLOAD = "train_data_upload"
K_UPLOAD_NOTE = "train_upload_note"  # what an upload left out (non-images), shown once
K_CKPT_UPLOAD = "train_ckpt_upload"
K_LAST_CKPT_UPLOAD = "train_last_upload_id"
K_SAVED_CKPT = "train_saved_ckpt"
K_SAVE_NAME = "train_save_name"
K_AUTO = "train_auto"  # "choose settings for me"
K_RAY_ADDRESS = "train_ray_address"  # a Ray cluster to train on (not offered on a hosted server)
K_EXPORT_ZIP = "export_view_zip"  # (model, format) → the last export zip built

# ----------------------------------------------------------------- Inspect
K_DETAIL = "inspect_detail"
K_INSPECT_THRESHOLD = "inspect_threshold_"  # + model version: the image threshold slider
K_INSPECT_UPLOADS = "inspect_uploads"
K_BATCH = "inspect_batch_result"  # BatchResult of the last batch run
K_BATCH_UNPACKED = "inspect_batch_unpacked"  # {upload id: (folder, [(name, path)], skipped)}
K_BATCH_FOLDER = "inspect_batch_folder"
FEEDBACK = "cf_feedback"  # (model version, cainnflow.feedback.FeedbackSet) of the current model
FEEDBACK_LAST = "cf_feedback_last"  # (model version, app.feedback_view.Change) of the last mark
FEEDBACK_VALIDATION = "cf_feedback_validation"  # {model version: validation normal scores (V,)}
K_CAMERA = "inspect_camera"
K_WATCH_FOLDER = "inspect_watch_folder"
K_WATCH_ON = "inspect_watch_on"
K_WATCH_LOG = "inspect_watch_log"  # app.camera_view.WatchLog of the watched folder

# ----------------------------------------------------------------- Evaluate & threshold
EVAL_SYNTHETIC_NOTE = "cf_eval_synthetic_note"  # (owner, text) of the last threshold from synthetic anomalies
EVAL_THRESHOLD = "cf_eval_threshold"  # slider value
EVAL_THRESHOLD_OWNER = "cf_eval_threshold_owner"
EVAL_THRESHOLD_ORIGIN = "cf_eval_threshold_origin"  # (value, origin: cainnflow.record.THRESHOLD_ORIGINS)
EVAL_CALIBRATED = "cf_eval_calibrated"  # {model version: threshold from validation normals}
EVAL_GOOD_PERCENTILE = "cf_eval_good_percentile"
EVAL_N_EXAMPLES = "cf_eval_n_examples"
EVAL_COMPARE = "cf_eval_compare"  # (owner, other name, EvaluationResult) of the last comparison

# ----------------------------------------------------------------- Compare models
K_COMPARE_SOURCE = "compare_source"
K_COMPARE_FILE = "compare_file"
K_COMPARE_UPLOAD = "compare_upload"
K_COMPARE_METRIC = "compare_metric"
K_COMPARE_BACKBONE = "compare_backbone"
K_COMPARE_SESSION = "cf_compare_session"  # (data owner, {(name, version): (ComparisonFigures, settings)})
K_COMPARE_SESSION_CHOICE = "compare_session_models"

# ----------------------------------------------------------------- Learn & latent space
LEARN_ATTENTION = "cf_learn_attention"  # (version, id(analysis)) -> list[AttentionMaps]
LEARN_TOY = "cf_learn_toy"  # app.toy_view.ToySession
LATENT_ANALYSES = "cf_latent_cache"  # OrderedDict[(version, digest), LatentAnalysis]
LATENT_EXPERIMENTS = "cf_latent_experiments"  # OrderedDict[params, PerturbationResult]
LATENT_POINTS = "cf_latent_points"  # {scale: list[(row, col)]}
LATENT_CLICK_GEN = "cf_latent_click_gen"  # bumps to reset the click chart's selection
LATENT_LAST_CLICK = "cf_latent_last_click"  # (scale, row, col) last copied into the Row / Column inputs

#: Form fields a reload brings back (text and choices of Train / load and Inspect's batch folder).
REMEMBERED_FIELDS = (
    K_SOURCE,
    K_DEMO_CATEGORY,
    K_MVTEC_ROOT,
    K_MVTEC_CATEGORY,
    K_CUSTOM_GOOD,
    K_CUSTOM_TEST_GOOD,
    K_CUSTOM_DEFECT,
    K_CUSTOM_MASKS,
    K_UPLOAD_NAME,
    K_BATCH_FOLDER,
    K_WATCH_FOLDER,
)

#: What a new session starts with.
DEFAULTS = {
    MODEL: None,
    DATA: None,
    TRAIN_JOB: None,
    EVALUATION: None,
    DEVICE_CHOICE: "auto",
    RESTORED: None,
    NOTICE: None,
}
