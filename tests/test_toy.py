"""toy: the 2-D teaching flow learns, inverts exactly, and its density integrates to about 1."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_moons
from torch import nn

from cainnflow.toy import TOY_DATASETS, TOY_NOISE, PointwiseConv2d, ToyFlow, gaussian_nll, make_toy_data


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
    flow = ToyFlow(variant="CC", steps=4, hidden_ratio=32)
    before = float(flow.nll(data).detach())
    flow.train_steps(data, 150, batch_size=128)
    after = float(flow.nll(data).detach())
    assert after < before - 0.2
    per_point = flow.point_nll(data)
    assert per_point.shape == (512,) and per_point.mean() == pytest.approx(after, abs=1e-4)
    z, jac = flow.forward(data[:50])
    np.testing.assert_allclose(flow.inverse(z), data[:50], atol=1e-4)
    assert jac.shape == (50,) and len(flow.losses) == 1


def test_density_grid_integrates_to_about_one():
    flow = ToyFlow(steps=2, hidden_ratio=8)
    xs, ys, p = flow.density_grid(lim=5.0, resolution=120)
    cell = (xs[1] - xs[0]) * (ys[1] - ys[0])
    assert p.shape == (120, 120) and (p >= 0).all()
    assert abs(float(p.sum() * cell) - 1.0) < 0.05


# --------------------------------------------------------------------------- the Learn page's default run

APP_POINTS = 1500  # app.learn_view.TOY_POINTS: the app trains on these and holds out as many again
MOON_TOLERANCE = 0.2  # a sample "lands on a moon" within this distance of a noiseless moon arc
GAUSSIAN_MARGIN_NATS = 0.8  # the trained flow beats one Gaussian by at least this on held-out moons
ON_MOONS_FRACTION = 0.85  # ... and this many of its samples land on a moon (a Gaussian: ~0.43)


def _on_moons(points: np.ndarray, n: int) -> float:
    """Fraction of standardised points (as make_toy_data("moons", n) scales them) near a moon arc."""
    raw, _ = make_moons(n, noise=TOY_NOISE, random_state=0)
    x = points * raw.std(0) + raw.mean(0)
    t = np.linspace(0, np.pi, 400)
    arcs = np.concatenate(
        [np.stack([np.cos(t), np.sin(t)], 1), np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)]
    )
    distance = np.sqrt(((x[:, None, :] - arcs[None]) ** 2).sum(-1)).min(1)
    return float((distance < MOON_TOLERANCE).mean())


def test_default_toy_flow_separates_the_two_moons():
    """The Learn page's default click (learn_view: 300 steps, CAC) learns two moons, not one blob."""
    from app.toy_view import TOY_DEFAULT_STEPS, TOY_DEFAULT_VARIANT

    points = make_toy_data("moons", 2 * APP_POINTS)
    data, held_out = points[:APP_POINTS], points[APP_POINTS:]
    assert _on_moons(data, 2 * APP_POINTS) > 0.99  # the measure itself
    flow = ToyFlow(variant=TOY_DEFAULT_VARIANT)
    baseline = gaussian_nll(data, held_out)
    flow.train_steps(data, TOY_DEFAULT_STEPS)
    assert flow.held_out_nll(held_out) < baseline - GAUSSIAN_MARGIN_NATS
    z = np.random.default_rng(0).normal(size=(2000, 2)).astype(np.float32)
    assert _on_moons(flow.inverse(z), 2 * APP_POINTS) > ON_MOONS_FRACTION
    assert _on_moons(z, 2 * APP_POINTS) < 0.5  # what one Gaussian's samples score


def test_a_run_split_into_chunks_is_the_same_run():
    """The app redraws every few steps: chunks follow one learning-rate schedule and batch stream."""
    data = make_toy_data("moons", 400)
    whole, chunked = ToyFlow(steps=2, hidden_ratio=8), ToyFlow(steps=2, hidden_ratio=8)
    whole.train_steps(data, 30, batch_size=64)
    for offset in (0, 10, 20):
        chunked.train_steps(data, 10, batch_size=64, schedule_steps=30, schedule_offset=offset)
    np.testing.assert_allclose(chunked.forward(data)[0], whole.forward(data)[0], atol=1e-5)


def test_pointwise_convolution_is_the_convolution():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 5, 7, padding=3)
    pointwise = PointwiseConv2d(3, 5, 7, padding=3)
    pointwise.load_state_dict(conv.state_dict())
    x = torch.randn(4, 3, 1, 1)
    a, b = conv(x), pointwise(x)
    torch.testing.assert_close(a, b)
    a.square().sum().backward()
    b.square().sum().backward()
    torch.testing.assert_close(conv.weight.grad, pointwise.weight.grad)
    torch.testing.assert_close(pointwise(torch.randn(2, 3, 4, 4)).shape, torch.Size([2, 5, 4, 4]))
