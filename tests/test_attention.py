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
