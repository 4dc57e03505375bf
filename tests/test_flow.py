import pytest
import torch

from cainnflow.config import CAINNFlowConfig
from cainnflow.flow import COUPLINGS, build_flow
from cainnflow.subnet import VARIANTS, CouplingSubnet, create_subnet


def _perturb(flow, scale=0.05):
    torch.manual_seed(3)
    with torch.no_grad():
        for p in flow.parameters():
            if p.requires_grad:
                p.add_(scale * torch.randn_like(p))


@pytest.mark.parametrize("coupling", COUPLINGS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_round_trip_and_inverse_log_det(variant, coupling):
    flow = build_flow(8, 6, 5, steps=2, variant=variant, coupling=coupling, reduction=2)
    _perturb(flow)
    x = torch.randn(3, 8, 6, 5) * 2
    z, jac = flow(x)
    assert z.shape == x.shape and jac.shape == (3,)
    x_back, jac_rev = flow(z, rev=True)
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=0)
    torch.testing.assert_close(jac, -jac_rev, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("coupling", COUPLINGS)
@pytest.mark.parametrize("variant", ["CAC", "CC"])
def test_log_det_matches_autograd_jacobian(variant, coupling):
    torch.manual_seed(0)
    c, h, w = 4, 3, 3
    flow = build_flow(c, h, w, steps=2, variant=variant, coupling=coupling, reduction=2).double()
    _perturb(flow, 0.2)
    x = torch.randn(1, c, h, w, dtype=torch.float64)
    _, jac = flow(x)

    def f(flat):
        return flow(flat.view(1, c, h, w))[0].reshape(-1)

    jacobian = torch.autograd.functional.jacobian(f, x.reshape(-1))
    sign, logabsdet = torch.linalg.slogdet(jacobian)
    assert sign.item() != 0
    torch.testing.assert_close(jac[0], logabsdet, atol=1e-6, rtol=1e-6)


def test_flow_runs_on_other_spatial_sizes():
    flow = build_flow(6, 8, 8, steps=1)
    z, _ = flow(torch.randn(2, 6, 11, 13))
    assert z.shape == (2, 6, 11, 13)


def test_flow_is_identity_at_init_for_glow():
    flow = build_flow(6, 4, 4, steps=2, coupling="glow")
    x = torch.randn(2, 6, 4, 4)
    z, jac = flow(x)
    # Zero-initialised last convolutions: couplings start as identity, only permutations act.
    torch.testing.assert_close(z.pow(2).sum(), x.pow(2).sum())
    torch.testing.assert_close(jac, torch.zeros(2))


def test_same_seed_same_flow():
    a = build_flow(6, 4, 4, steps=2, seed=5)
    b = build_flow(6, 4, 4, steps=2, seed=5)
    assert list(a.state_dict()) == list(b.state_dict())
    x = torch.randn(1, 6, 4, 4)
    torch.testing.assert_close(a(x)[0], b(x)[0])


@pytest.mark.parametrize("variant", VARIANTS)
def test_subnet_shapes_and_structure(variant):
    net = create_subnet(variant, hidden_ratio=2.0, reduction=2)(5, 12)
    assert isinstance(net, CouplingSubnet)
    assert net(torch.randn(2, 5, 7, 7)).shape == (2, 12, 7, 7)
    kinds = [type(m).__name__ for m in net.layers]
    expected = {
        "CA": ["Conv2d", "CBAM"],
        "AC": ["CBAM", "Conv2d"],
        "CAC": ["Conv2d", "CBAM", "Conv2d"],  # Eq. 11: CBAM's gates are the non-linearity
        "CC": ["Conv2d", "ReLU", "Conv2d"],
    }[variant]
    assert kinds == expected
    assert all(m.kernel_size == (3, 3) for m in net.layers if isinstance(m, torch.nn.Conv2d))
    assert (net.cbam is None) == (variant == "CC")


def test_bad_arguments():
    with pytest.raises(ValueError, match="variant"):
        create_subnet("XYZ")
    with pytest.raises(ValueError, match="steps"):
        build_flow(4, 2, 2, steps=0)
    with pytest.raises(ValueError, match="coupling"):
        build_flow(4, 2, 2, coupling="nope")


def test_cac_relu_option_and_old_configs():
    net = create_subnet("CAC", relu=True)(4, 8)
    assert [type(m).__name__ for m in net.layers] == ["Conv2d", "ReLU", "CBAM", "Conv2d"]
    # A configuration written before the ReLU was a setting keeps the subnet it was trained with.
    old = {k: v for k, v in CAINNFlowConfig().to_dict().items() if k != "subnet_relu"}
    assert CAINNFlowConfig.from_dict(old).subnet_relu is True
    assert CAINNFlowConfig.from_dict({**old, "subnet_relu": False}).subnet_relu is False
    with pytest.raises(ValueError, match="subnet_relu"):
        CAINNFlowConfig(subnet_relu="yes")


def test_coarsest_map_weight_setting_and_old_configs():
    assert CAINNFlowConfig().coarsest_map_weight is None  # decided when training
    assert CAINNFlowConfig(coarsest_map_weight=1).coarsest_map_weight == 1.0
    # A configuration written before the setting keeps the equal-weight map it was calibrated on.
    old = {k: v for k, v in CAINNFlowConfig().to_dict().items() if k != "coarsest_map_weight"}
    assert CAINNFlowConfig.from_dict(old).coarsest_map_weight == 1.0
    assert CAINNFlowConfig.from_dict({**old, "coarsest_map_weight": None}).coarsest_map_weight is None
    for bad in (-0.1, 1.5, "half", True, float("nan")):
        with pytest.raises(ValueError, match="coarsest_map_weight"):
            CAINNFlowConfig(coarsest_map_weight=bad)


def test_cac_without_relu_is_not_linear():
    # Eq. 11 composes conv → CBAM → conv; CBAM's sigmoid gates make the map non-linear:
    # f(a + b) != f(a) + f(b) - f(0) once the last convolution is no longer zero.
    torch.manual_seed(0)
    net = create_subnet("CAC", reduction=1)(4, 8)
    torch.nn.init.normal_(net.layers[-1].weight)
    a, b = torch.randn(1, 4, 6, 6), torch.randn(1, 4, 6, 6)
    zero = torch.zeros_like(a)
    with torch.no_grad():
        gap = (net(a + b) - net(a) - net(b) + net(zero)).abs().max().item()
    assert gap > 1e-2
