"""Inspect's colour bar states its own range and marks the pixel threshold (#19)."""

import numpy as np

from app import display
from app.loaders import DEMO_EXPORT
from cainnflow.runtime import load_export


def test_the_colour_bar_labels_its_range_and_marks_the_threshold():
    detector = load_export(DEMO_EXPORT)
    vmin, vmax = display.color_range(detector)
    upper = vmax + 0.5 * (vmax - vmin)
    plain = np.asarray(display.color_bar(detector, upper))
    assert plain.shape[:2] == display.COLOR_BAR_SIZE[::-1]  # unchanged without ticks or marker
    marker = vmin + 0.25 * (upper - vmin)
    bar = np.asarray(display.color_bar(detector, upper, marker=marker, ticks=True))
    height, width, _ = bar.shape
    strip = display.COLOR_BAR_MARK_PX + 2
    assert height > strip + display.COLOR_BAR_STRIP_PX + display.COLOR_BAR_FONT_PX  # room for the labels
    labels = bar[strip + display.COLOR_BAR_STRIP_PX + 4 :]
    assert (labels.min(axis=2) < 128).any()  # dark label text under the strip
    pad = display.COLOR_BAR_FONT_PX // 2
    x = round(pad + (width - 2 * pad - 1) * 0.25)
    assert bar[2, x].max() < 64 and bar[2, x + 12].min() > 200  # the triangle at the marker only
    # The strip's right end has the colour of vmax and above (the sliders' upper end keeps it).
    np.testing.assert_array_equal(bar[strip + 2, width - pad - 2], bar[strip + 2, width - pad - 10])


def test_the_colour_range_takes_the_image_threshold_only_where_it_is_a_map_value():
    from types import SimpleNamespace

    stats = SimpleNamespace(pixel_p50=0.2, pixel_max=0.5)

    def model(pooling, weight):
        config = SimpleNamespace(pooling=pooling, coarsest_map_weight=weight)
        return SimpleNamespace(stats=stats, threshold=0.6, config=config)

    assert display.color_range(model("max", 1.0)) == (0.2, 0.6)  # the score is the map's maximum
    assert display.color_range(model("max", None)) == (0.2, 0.6)
    # An aligned part's half-weight map, a texture's coarse score: the threshold is not a map value.
    assert display.color_range(model("max", 0.5)) == (0.2, 0.5)
    assert display.color_range(model("coarse_top", 1.0)) == (0.2, 0.5)
