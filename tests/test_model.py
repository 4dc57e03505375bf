import threading

import pytest
import torch

from cainnflow.errors import TrainingCancelled, TrainingError
from cainnflow.model import CAINNFlow, CAINNFlowConfig, negative_log_likelihood
from cainnflow.subnet import VARIANTS
from cainnflow.training import TrainConfig, fit_flows

IMAGE = 32


def _model(backbone, **kw):
    cfg = CAINNFlowConfig(backbone="tf_efficientnet_lite0", image_size=IMAGE, reduction=2, **kw)
    return CAINNFlow(backbone, cfg)


def _features(backbone, n=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return backbone(torch.randn(n, 3, IMAGE, IMAGE, generator=g))


def test_forward_shapes_and_exact_inverse(tiny_backbone):
    model = _model(tiny_backbone)
    feats = _features(tiny_backbone, 4)
    model.fit_standardizers(feats)
    out = model(feats)
    assert [z.shape for z in out.z] == [f.shape for f in feats]
    assert all(j.shape == (4,) for j in out.log_jac_det)
    back = model.inverse(out.z)
    for f, b in zip(feats, back, strict=True):
        torch.testing.assert_close(b, f, atol=1e-4, rtol=1e-4)
    assert model.inverse([None, out.z[1]])[0] is None


def test_log_det_with_standardizer_matches_autograd(tiny_backbone):
    torch.manual_seed(0)
    feats = [f.double() for f in _features(tiny_backbone, 6)]
    model = _model(tiny_backbone, steps=2).double()
    model.fit_standardizers(feats)
    with torch.no_grad():
        for p in model.flow_parameters():
            p.add_(0.1 * torch.randn_like(p))
    x = feats[1][:1]  # (1, 8, 4, 4): 128 dims
    c, h, w = x.shape[1:]

    def f(flat):
        return model.flows[1](flat.view(1, c, h, w))[0].reshape(-1)  # the flow opens with its standardizer

    _, logabsdet = torch.linalg.slogdet(torch.autograd.functional.jacobian(f, x.reshape(-1)))
    jac = model([feats[0][:1], x]).log_jac_det[1][0]
    torch.testing.assert_close(jac, logabsdet, atol=1e-6, rtol=1e-6)


def test_nll_is_standard_normal_nll_for_identity_flow(tiny_backbone):
    model = _model(tiny_backbone)
    feats = [torch.randn(5, 6, 8, 8), torch.randn(5, 8, 4, 4)]
    out = model.__class__.forward(model, feats)  # standardizer is identity before fitting
    expected = sum(
        (
            0.5 * z.pow(2).sum(dim=(1, 2, 3)) + 0.5 * z[0].numel() * torch.log(torch.tensor(2 * torch.pi))
        ).mean()
        / z[0].numel()
        for z in out.z
    )
    torch.testing.assert_close(negative_log_likelihood(out), expected)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_variant_trains_and_lowers_loss(tiny_backbone, variant):
    torch.manual_seed(0)
    model = _model(tiny_backbone, variant=variant)
    feats = _features(tiny_backbone, 16)
    val = _features(tiny_backbone, 4, seed=1)
    history = fit_flows(model, feats, val, TrainConfig(epochs=6, batch_size=8, lr=2e-3))
    losses = [e.train_loss for e in history.epochs]
    assert losses[-1] < losses[0]
    assert history.best_epoch is not None and history.best_val_loss is not None


def test_attention_maps_retrievable(tiny_backbone):
    model = _model(tiny_backbone, variant="CAC", steps=2)
    feats = _features(tiny_backbone, 2)
    maps = model.attention_maps(feats)
    # 2 scales × 2 steps × 2 GLOW subnets
    assert len(maps) == 8
    for m in maps:
        assert m.channel.ndim == 2 and m.channel.shape[0] == 2
        assert m.spatial.shape[1:] == feats[m.scale].shape[2:]
        assert torch.all((m.spatial > 0) & (m.spatial < 1))
    assert _model(tiny_backbone, variant="CC").attention_maps(feats) == []
    # Recording is switched off again afterwards.
    assert not any(getattr(m, "record", False) for m in model.modules())


def test_cancel_keeps_best_state(tiny_backbone):
    model = _model(tiny_backbone)
    feats = _features(tiny_backbone, 16)
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(TrainingCancelled):
        fit_flows(model, feats, None, TrainConfig(epochs=3, batch_size=8), cancel=cancel)

    calls = []

    def callback(p):
        calls.append(p)
        if p.epoch == 2:
            cancel.set()

    cancel.clear()
    history = fit_flows(
        model, feats, None, TrainConfig(epochs=5, batch_size=8), callback=callback, cancel=cancel
    )
    assert history.cancelled and len(history.epochs) == 1
    # honoured within one batch of being set
    assert sum(1 for p in calls if p.epoch == 2) == 1


def test_nan_loss_is_a_clear_error_and_keeps_state(tiny_backbone):
    model = _model(tiny_backbone)
    feats = _features(tiny_backbone, 8)
    before = {k: v.clone() for k, v in model.flows.state_dict().items()}
    bad = [f.clone() for f in feats]
    bad[0][3] = float("nan")
    with pytest.raises(TrainingError, match="became nan"):
        fit_flows(model, bad, None, TrainConfig(epochs=2, batch_size=4))
    for k, v in model.flows.state_dict().items():
        torch.testing.assert_close(v, before[k], equal_nan=True)


def test_config_round_trip_and_validation():
    cfg = CAINNFlowConfig(out_indices=(1, 2), variant="CA", steps=3)
    assert CAINNFlowConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="variant"):
        CAINNFlowConfig(variant="XX")


def test_positions_per_step_gives_fine_scales_fewer_images():
    config = TrainConfig(positions_per_step=8192)
    # 256 px Lite0 stages 1-4: 64², 32², 16², 8² positions per image
    assert config.scale_batch_sizes(16, [4096, 1024, 256, 64]) == [2, 8, 16, 16]
    assert TrainConfig(positions_per_step=None).scale_batch_sizes(16, [4096, 64]) == [16, 16]
    assert config.scale_batch_sizes(3, [4096, 64]) == [2, 3]  # never more than the batch
    with pytest.raises(ValueError, match="positions_per_step"):
        TrainConfig(positions_per_step=0)


def test_training_feeds_each_scale_its_own_number_of_images(tiny_backbone):
    torch.manual_seed(0)
    model = _model(tiny_backbone)
    feats = _features(tiny_backbone, 16)
    positions = [f.shape[-2] * f.shape[-1] for f in feats]
    seen: list[list[int]] = []
    forward = model.forward

    def spy(batch):
        seen.append([f.shape[0] for f in batch])
        return forward(batch)

    model.forward = spy
    config = TrainConfig(max_steps=4, batch_size=8, positions_per_step=positions[0] * 2, patience=None)
    history = fit_flows(model, feats, None, config)
    assert history.steps == 4
    expected = config.scale_batch_sizes(8, positions)
    assert expected[0] == 2 and expected[-1] == 8  # the finest scale really gets fewer images
    assert seen[:4] == [expected] * 4
