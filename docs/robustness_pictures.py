"""Draw the picture of docs/robustness.md (``python docs/robustness_pictures.py``): three
prototypes of three classes in 2-D, their decision regions, and for a few samples the ball of
the certified radius, which touches the nearest bisector of the winner and a rival."""

from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from lvqmln_torch.core.backbones import IdentityBackbone
from lvqmln_torch.core.network import PrototypeNetwork
from lvqmln_torch.viz.plotting import save_figure

HERE = Path(__file__).parent
COLORS = ["tab:blue", "tab:orange", "tab:green"]

prototypes = torch.tensor([[0.0, 0.0], [3.0, 0.5], [1.0, 2.8]], dtype=torch.float64)
labels = torch.tensor([0, 1, 2])
network = PrototypeNetwork(IdentityBackbone(2), prototypes, labels, 3).double()
samples = torch.tensor([[0.3, 0.9], [2.3, 0.0], [1.6, 2.1], [-0.7, 0.4]], dtype=torch.float64)
radius = network.certify(samples).numpy()

figure = Figure(figsize=(6, 5))
ax = figure.add_subplot()
grid = np.linspace(-1.5, 4.0, 400)
gx, gy = np.meshgrid(grid, grid)
points = np.column_stack([gx.ravel(), gy.ravel()])
regions = network.predict_indices(points).numpy().reshape(gx.shape)
ax.contourf(gx, gy, regions, levels=[-0.5, 0.5, 1.5, 2.5], colors=COLORS, alpha=0.15)
ax.contour(gx, gy, regions, levels=[0.5, 1.5], colors="k", linewidths=1.0)
w = prototypes.numpy()
for k in range(3):
    ax.scatter(*w[k], marker="*", s=300, color=COLORS[k], edgecolor="k", zorder=3)
for x, r in zip(samples.numpy(), radius):
    winner = int(((w - x) ** 2).sum(1).argmin())
    d = ((w - x) ** 2).sum(1)
    with np.errstate(invalid="ignore"):  # the winner against itself: 0 / 0
        gaps = (d - d[winner]) / (2 * np.linalg.norm(w - w[winner], axis=1))
    gaps[winner] = np.inf
    rival = int(gaps.argmin())
    normal = (w[rival] - w[winner]) / np.linalg.norm(w[rival] - w[winner])
    ax.scatter(*x, color=COLORS[winner], edgecolor="k", zorder=4)
    ax.add_patch(Circle(x, r, fill=False, ls="--", color=COLORS[winner], lw=1.5))
    foot = x + r * normal
    ax.annotate("", foot, x, arrowprops=dict(arrowstyle="->", color="k", lw=1))
    ax.text(*(x + 0.5 * r * normal + [0.05, 0.05]), f"r={r:.2f}", fontsize=8)
ax.set_aspect("equal")
ax.set_xlim(-1.5, 4.0)
ax.set_ylim(-1.5, 4.0)
ax.set_title("Certified radius: the distance to the nearest bisector (stars: prototypes)")
save_figure(figure, HERE / "robustness_2d.png")
print("written", HERE / "robustness_2d.png")
