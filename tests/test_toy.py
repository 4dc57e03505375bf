"""toy: the 2-D teaching flow learns, inverts exactly, and its density integrates to about 1."""

import numpy as np
import pytest

from cainnflow.toy import TOY_DATASETS, ToyFlow, make_toy_data


@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_data_is_standardised_and_deterministic(name):
    pts = make_toy_data(name, 400, seed=3)
    assert pts.shape == (400, 2) and pts.dtype == np.float32
    np.testing.assert_allclose(pts.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(pts.std(0), 1, atol=1e-4)
    np.testing.assert_array_equal(pts, make_toy_data(name, 400, seed=3))
    with pytest.raises(ValueError, match="unknown toy dataset"):
        make_toy_data("spirals", 10)


def test_toy_flow_inverts_and_learns():
    data = make_toy_data("moons", 512)
    flow = ToyFlow(steps=4, hidden_ratio=32)
    before = float(flow.nll(data).detach())
    flow.train_steps(data, 150, batch_size=128)
    after = float(flow.nll(data).detach())
    assert after < before - 0.2
    z, jac = flow.forward(data[:50])
    np.testing.assert_allclose(flow.inverse(z), data[:50], atol=1e-4)
    assert jac.shape == (50,) and len(flow.losses) == 1


def test_density_grid_integrates_to_about_one():
    flow = ToyFlow(steps=2, hidden_ratio=8)
    xs, ys, p = flow.density_grid(lim=5.0, resolution=120)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert p.shape == (120, 120) and (p >= 0).all()
    assert abs(float(p.sum() * cell) - 1.0) < 0.05
