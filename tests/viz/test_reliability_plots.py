"""The reliability diagram: its ECE is torchmetrics', curves compared, bad inputs refused."""

import pytest
import torch

from lvqmln_torch.core.calibration import reliability_bins
from lvqmln_torch.viz.calibration_plots import plot_reliability


def test_reliability_diagram_compares_and_checks_inputs(tmp_path):
    g = torch.Generator().manual_seed(4)
    y = torch.randint(0, 3, (200,), generator=g).numpy()
    sharp = torch.softmax(torch.randn(200, 3, generator=g) * 4, dim=1).numpy()
    flat = torch.softmax(torch.log(torch.as_tensor(sharp)) / 4, dim=1).numpy()
    figure = plot_reliability(sharp, y, compare={"flat": flat}, path=tmp_path / "d.png")
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    ece = float(reliability_bins(torch.as_tensor(sharp), torch.as_tensor(y))["ece"])
    assert any(f"ECE {ece:.3f}" in t for t in legend) and any("flat" in t for t in legend)
    assert (tmp_path / "d.png").stat().st_size > 0
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        plot_reliability(sharp, y + 1)
    with pytest.raises(ValueError, match="shape"):
        plot_reliability(sharp, y, compare={"x": flat[:10]})
    with pytest.raises(ValueError, match="k >= 2"):
        plot_reliability(sharp[:, :1], y)
