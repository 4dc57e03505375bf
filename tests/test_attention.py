import pytest
import torch

from cainnflow.attention import CBAM, MIN_HIDDEN, ChannelAttention, SpatialAttention


def test_gates_in_unit_interval_and_shapes_kept():
    torch.manual_seed(0)
    x = torch.randn(3, 16, 9, 7) * 5
    ca, sa = ChannelAttention(16, reduction=4), SpatialAttention()
    mc, ms = ca(x), sa(x)
    assert mc.shape == (3, 16, 1, 1) and ms.shape == (3, 1, 9, 7)
    for gate in (mc, ms):
        assert torch.all(gate > 0) and torch.all(gate < 1)
    cbam = CBAM(16, reduction=4)
    assert cbam(x).shape == x.shape


def test_cbam_is_channel_then_spatial_gating():
    torch.manual_seed(1)
    x = torch.randn(2, 8, 5, 5)
    cbam = CBAM(8, reduction=2)
    cbam.record = True
    out = cbam(x)
    f1 = cbam.channel_attention(x) * x
    expected = cbam.spatial_attention(f1) * f1
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(cbam.last_channel_gate, cbam.channel_attention(x))
    assert cbam.last_spatial_gate.shape == (2, 1, 5, 5)


def test_channel_attention_uses_shared_mlp_on_avg_and_max():
    ca = ChannelAttention(4, reduction=2)
    x = torch.zeros(1, 4, 2, 2)
    x[0, 0, 0, 0] = 8.0  # avg 2, max 8 for channel 0
    avg = x.mean(dim=(2, 3), keepdim=True)
    mx = x.amax(dim=(2, 3), keepdim=True)
    expected = torch.sigmoid(ca.mlp(avg) + ca.mlp(mx))
    torch.testing.assert_close(ca(x), expected)
    # hidden width C // r, floored at MIN_HIDDEN (and at most C) so the gate cannot go dead
    assert ca.mlp[0].out_channels == 4
    assert ChannelAttention(64, reduction=2).mlp[0].out_channels == 32
    assert ChannelAttention(24, reduction=16).mlp[0].out_channels == MIN_HIDDEN


def test_spatial_attention_kernel_is_7x7_on_two_maps():
    sa = SpatialAttention()
    assert sa.conv.in_channels == 2 and sa.conv.kernel_size == (7, 7)


def test_trained_gates_vary_across_channels_and_positions(tmp_path):
    """No CBAM gate of a trained model is a constant (a dead channel MLP gives 0.5). With the
    paper's ReLU (``attention_negative_slope=0``) this seeded training kills one (module notes)."""
    from cainnflow.data import load_mvtec_category
    from cainnflow.demo_data import make_demo_dataset
    from cainnflow.detector import Detector
    from cainnflow.model import CAINNFlowConfig
    from cainnflow.training import TrainConfig

    make_demo_dataset(
        tmp_path, categories=("metal_plate",), image_size=96, n_train=10, n_test_good=1, n_test_per_defect=1
    )
    data = load_mvtec_category(tmp_path, "metal_plate")
    det = Detector.create(CAINNFlowConfig(image_size=64), device="cpu")
    det.fit(data, TrainConfig(max_steps=60, min_steps=60, batch_size=4))
    features = det.model.extract_features(det.preprocess([s.path for s in data.train[:2]]))
    maps = det.model.attention_maps(features)
    assert len(maps) == 2 * det.model.num_scales  # two GLOW subnets per scale, one step
    channel_spread = [float(m.channel.std(dim=1).min()) for m in maps]
    assert min(channel_spread) > 1e-3, f"constant channel gate: {channel_spread}"
    for m in maps:
        assert float(m.spatial.flatten(1).std(dim=1).min()) > 1e-3, (
            f"constant spatial gate at scale {m.scale}"
        )


@pytest.mark.parametrize("slope", [0.0, 0.1])
def test_channel_mlp_unit_below_zero_for_every_input_gets_a_gradient_only_when_leaky(slope):
    """The paper's ReLU (slope 0) leaves a unit that is negative for every input without a
    gradient, so training can never revive it: the dead-gate bug. The leaky default does not."""
    torch.manual_seed(0)
    ca = ChannelAttention(16, reduction=2, negative_slope=slope)
    with torch.no_grad():
        ca.mlp[0].weight.copy_(-ca.mlp[0].weight.abs())  # every unit negative on non-negative input
    x = torch.rand(4, 16, 5, 5)  # post-ReLU features are non-negative
    gate = ca(x)
    gate.square().sum().backward()
    grad = ca.mlp[0].weight.grad
    if slope == 0.0:
        assert torch.count_nonzero(grad) == 0
        torch.testing.assert_close(gate, torch.full_like(gate, 0.5))  # the constant dead gate
    else:
        assert bool((grad.abs().sum(dim=1) > 0).all()), "a hidden unit got no gradient"
        assert float(gate.detach().std(dim=1).min()) > 1e-4


def test_negative_slope_setting_bounds_and_old_configs(tiny_backbone):
    from cainnflow.config import CAINNFlowConfig
    from cainnflow.model import CAINNFlow

    assert CAINNFlowConfig().attention_negative_slope == pytest.approx(0.1)
    # A configuration written before the setting keeps the ReLU it was trained with.
    old = {k: v for k, v in CAINNFlowConfig().to_dict().items() if k != "attention_negative_slope"}
    assert CAINNFlowConfig.from_dict(old).attention_negative_slope == 0.0
    for bad in (-0.1, 1.0, float("nan"), True, "0.1"):
        with pytest.raises(ValueError, match="attention_negative_slope"):
            CAINNFlowConfig(attention_negative_slope=bad)
    with pytest.raises(ValueError, match="negative_slope"):
        ChannelAttention(8, negative_slope=1.5)
    # The setting reaches every CBAM of the model.
    for slope in (0.0, 0.25):
        cfg = CAINNFlowConfig(image_size=64, attention_negative_slope=slope)
        model = CAINNFlow(tiny_backbone, cfg)
        slopes = {m.negative_slope for m in model.modules() if isinstance(m, ChannelAttention)}
        assert slopes == {slope}
