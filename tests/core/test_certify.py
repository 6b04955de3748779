"""Soundness of the certified radii (issue 21).

(a) One prototype per class, identity backbone: the radius is the distance to the decision
boundary. Stepping just past it along the nearest bisector's normal changes the label, just
short of it does not, and a brute-force search along many rays finds no closer label change
(and with several prototypes per class none closer than the radius, which is then a bound).
(b) ``lipschitz_bound()`` is never below the largest Jacobian spectral norm (torch.func.jacrev)
or finite-difference ratio on samples, for every activation and both backbones.
(c) A projected-gradient L2 attack with restarts finds no adversarial example inside the
certified radius of a trained model, and does find them somewhat outside it.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from lvqmln_torch.core.attack import pgd_l2_attack
from lvqmln_torch.core.backbones import ACTIVATIONS, CNNBackbone, IdentityBackbone, MLPBackbone
from lvqmln_torch.core.certify import latent_radius, signed_margin
from lvqmln_torch.core.network import PrototypeNetwork


def _shallow(prototypes, labels):
    prototypes = torch.as_tensor(prototypes, dtype=torch.float64)
    labels = torch.as_tensor(labels)
    backbone = IdentityBackbone(prototypes.shape[1])
    return PrototypeNetwork(backbone, prototypes, labels, int(labels.max()) + 1).double()


def _predict(network, x):
    return network.predict_indices(torch.as_tensor(x, dtype=torch.float64))


def _ray_change(network, x, directions, t_max, steps=200, bisections=40):
    """Per direction, the smallest t ≤ t_max (scanned, then bisected, all directions at once)
    where the label of x + t·u differs from x's; inf where none."""
    x = torch.as_tensor(x, dtype=torch.float64)
    label = _predict(network, x[None])[0]
    ts = torch.linspace(0, t_max, steps + 1, dtype=torch.float64)[1:]
    points = x[None, None, :] + ts[None, :, None] * directions[:, None, :]
    changed = _predict(network, points.reshape(-1, x.shape[0])).reshape(len(directions), -1)
    changed = changed != label
    hit = changed.any(1)
    first = changed.float().argmax(1)
    hi = ts[first]
    lo = torch.where(first > 0, ts[(first - 1).clamp_min(0)], 0.0)
    for _ in range(bisections):
        mid = (lo + hi) / 2
        flips = _predict(network, x[None, :] + mid[:, None] * directions) != label
        hi, lo = torch.where(flips, mid, hi), torch.where(flips, lo, mid)
    return torch.where(hit, hi, math.inf)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_one_prototype_per_class_radius_is_the_boundary_distance(seed):
    gen = torch.Generator().manual_seed(seed)
    k = 3 + seed
    network = _shallow(torch.randn(k, 2, generator=gen, dtype=torch.float64) * 2, range(k))
    x = torch.randn(12, 2, generator=gen, dtype=torch.float64) * 2
    radius = network.certify(x)
    assert torch.allclose(radius, network.certify_latent(x))
    angles = torch.linspace(0, 2 * math.pi, 2001, dtype=torch.float64)[:-1]
    directions = torch.stack([angles.cos(), angles.sin()], dim=1)
    w, labels = network.prototypes.detach(), network.prototype_labels
    for point, r in zip(x, radius):
        r = float(r)
        assert r > 0
        # The nearest bisector: its normal points from the winner to the rival.
        d = ((w - point) ** 2).sum(1)
        i = int(d.argmin())
        gaps = (d - d[i]) / (2 * (w - w[i]).norm(dim=1))
        gaps[i] = math.inf
        j = int(gaps.argmin())
        assert math.isclose(float(gaps[j]), r, rel_tol=1e-9)
        normal = (w[j] - w[i]) / (w[j] - w[i]).norm()
        assert _predict(network, (point + r * (1 + 1e-6) * normal)[None])[0] != labels[i]
        assert _predict(network, (point + r * (1 - 1e-6) * normal)[None])[0] == labels[i]
        # Brute force: no ray changes the label before r; the best ray is within the grid's
        # angular resolution of r (the boundary of a convex region).
        change = _ray_change(network, point, directions, t_max=4 * r + 1)
        assert float(change.min()) >= r * (1 - 1e-9)
        assert float(change.min()) <= r / math.cos(math.pi / 1000) + 1e-9


def test_several_prototypes_per_class_radius_is_a_lower_bound():
    gen = torch.Generator().manual_seed(5)
    network = _shallow(
        torch.randn(8, 2, generator=gen, dtype=torch.float64), [0, 0, 0, 1, 1, 1, 2, 2]
    )
    x = torch.randn(10, 2, generator=gen, dtype=torch.float64)
    radius = network.certify(x)
    angles = torch.linspace(0, 2 * math.pi, 721, dtype=torch.float64)[:-1]
    directions = torch.stack([angles.cos(), angles.sin()], dim=1)
    for point, r in zip(x, radius):
        change = _ray_change(network, point, directions, t_max=4 * float(r) + 1)
        assert float(change.min()) >= float(r) * (1 - 1e-9)


def test_radius_is_zero_where_wrong_and_margins_are_signed():
    network = _shallow([[0.0, 0.0], [2.0, 0.0]], [0, 1])
    x = torch.tensor([[0.5, 3.0], [1.5, -1.0]], dtype=torch.float64)
    assert torch.allclose(network.certify(x), torch.tensor([0.5, 0.5], dtype=torch.float64))
    assert torch.allclose(network.certify(x, [0, 0]), torch.tensor([0.5, 0.0], dtype=torch.float64))
    margin = signed_margin(
        x, network.prototypes.detach(), network.prototype_labels, torch.tensor([1, 0])
    )
    assert torch.allclose(margin, torch.tensor([-0.5, -0.5], dtype=torch.float64))
    # On the bisector (a tie) the radius is 0; identical prototypes of two classes give 0.
    tie = torch.tensor([[1.0, 7.0]], dtype=torch.float64)
    assert float(network.certify(tie)[0]) == 0.0
    same = _shallow([[1.0, 1.0], [1.0, 1.0]], [0, 1])
    assert float(same.certify(x)[0]) == 0.0
    assert torch.isfinite(latent_radius(x, same.prototypes, same.prototype_labels)).all()


def test_certified_accuracy_counts_correct_samples_with_radius_at_least_eps():
    network = _shallow([[0.0, 0.0], [2.0, 0.0]], [0, 1])
    x = torch.tensor([[0.5, 0.0], [0.85, 0.0], [1.8, 0.0], [0.2, 0.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1])  # radii 0.5, 0.15, 0.8, (wrong)
    acc = network.certified_accuracy(x, y, [0.0, 0.1, 0.5, 0.9])
    assert acc.tolist() == [0.75, 0.75, 0.5, 0.0]


# ------------------------------------------------------------------ (b) Lipschitz bounds
def _largest_jacobian_norm(backbone, x):
    jac = torch.func.vmap(torch.func.jacrev(lambda s: backbone(s[None])[0]))(x)
    return float(
        torch.linalg.matrix_norm(jac.detach().reshape(len(x), jac.shape[1], -1), ord=2).max()
    )


def _largest_difference_ratio(backbone, x, gen):
    delta = torch.randn(x.shape, generator=gen, dtype=x.dtype) * 1e-3
    with torch.no_grad():
        ratios = (backbone(x + delta) - backbone(x)).flatten(1).norm(dim=1)
    return float((ratios / delta.flatten(1).norm(dim=1)).max())


def _check_bound(backbone, x, gen, slack=1e-9):
    backbone = backbone.double().eval()
    bound = backbone.lipschitz_bound()
    jac = _largest_jacobian_norm(backbone, x)
    ratio = _largest_difference_ratio(backbone, x, gen)
    assert bound >= jac * (1 - slack), (bound, jac)
    assert bound >= ratio * (1 - 1e-6), (bound, ratio)
    return bound, jac


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("latent_activation", [True, False])
def test_mlp_bound_is_above_jacobian_norms(activation, latent_activation):
    gen = torch.Generator().manual_seed(0)
    backbone = MLPBackbone(5, [6, 4], 3, activation, latent_activation, generator=gen)
    # Inputs near 0, where every activation has its largest slope, and spread out.
    x = torch.cat([torch.randn(32, 5, generator=gen) * 0.01, torch.randn(32, 5, generator=gen)])
    bound, jac = _check_bound(backbone, x.double(), gen)
    if activation in ("sigmoid", "tanh"):  # tight: one layer, at 0, where the slope peaks
        single = MLPBackbone(5, [], 3, activation, True, generator=gen).double()
        at_zero = _largest_jacobian_norm(single, torch.zeros(1, 5, dtype=torch.float64))
        assert math.isclose(single.lipschitz_bound(), at_zero, rel_tol=1e-9)


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
@pytest.mark.parametrize("head", ["pooled", "flatten", "mean"])
def test_cnn_bound_is_above_jacobian_norms(activation, head):
    gen = torch.Generator().manual_seed(1)
    # The pooled head also with our layout: relu convolutions and dense layer, `activation`
    # on the latent codes.
    ours = {"conv_activation": "relu", "hidden_sizes": (7,)} if head == "pooled" else {}
    backbone = CNNBackbone(
        (2, 6, 5), (3, 4), (3, 2), 3, activation, generator=gen, head=head, standardize=True, **ours
    )
    x = torch.rand(16, 2, 6, 5, generator=gen) * 3
    backbone.set_input_statistics(x)
    _check_bound(backbone, x.double(), gen)


@pytest.mark.parametrize("mode", ["spectral", "orthogonal"])
def test_lipschitz_controlled_backbones_have_norm_one_layers(mode):
    gen = torch.Generator().manual_seed(2)
    mlp = MLPBackbone(6, [8], 4, "maxmin", False, generator=gen, lipschitz=mode).double()
    assert math.isclose(mlp.lipschitz_bound(), 1.0, rel_tol=1e-6)
    _check_bound(mlp, torch.randn(20, 6, generator=gen, dtype=torch.float64), gen)
    if mode == "spectral":
        for head, hidden in [("flatten", ()), ("pooled", (6,))]:
            cnn = CNNBackbone(
                (1, 5, 5),
                (3, 2),
                (3, 3),
                2,
                "tanh",
                generator=gen,
                head=head,
                lipschitz="spectral",
                conv_activation="relu",
                hidden_sizes=hidden,
            ).double()
            # torch's spectral normalisation divides a linear layer by a power-iteration
            # estimate of its norm, which approaches it from below (a random start vector):
            # the exact bound may exceed 1 by that estimate's error.
            assert cnn.lipschitz_bound() <= 1.0 + 1e-3 and cnn.nominal_lipschitz() == 1.0
            _check_bound(cnn, torch.randn(8, 1, 5, 5, generator=gen, dtype=torch.float64), gen)
    else:
        with pytest.raises(ValueError, match="spectral"):
            CNNBackbone((1, 5, 5), (3,), (3,), 2, lipschitz="orthogonal")


def test_conv_bound_is_above_the_exact_norm_and_power_iteration():
    from lvqmln_torch.core.lipschitz import conv_norm_bound, conv_power_iteration

    gen = torch.Generator().manual_seed(3)
    for padding, stride in [("same", 1), (0, 1), (1, 2), (2, 1)]:
        conv = nn.Conv2d(2, 3, 3, padding=padding, stride=stride).double()
        nn.init.normal_(conv.weight, generator=gen)
        jac = torch.autograd.functional.jacobian(
            lambda t, conv=conv: conv(t.view(1, 2, 7, 6)).flatten(),
            torch.zeros(84, dtype=torch.float64),
        )
        exact = float(torch.linalg.matrix_norm(jac, ord=2))
        bound = conv_norm_bound(conv, (7, 6))
        power = conv_power_iteration(conv, (7, 6), iterations=500)
        assert bound >= exact * (1 - 1e-9)
        assert exact * 0.95 <= power <= exact * (1 + 1e-9)  # from below
        assert bound <= 2 * exact  # an upper bound, and not a useless one


def test_sequential_bound_covers_common_layers():
    from lvqmln_torch.core.lipschitz import sequential_bound

    gen = torch.Generator().manual_seed(4)
    torch.manual_seed(4)
    chain = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AvgPool2d(2),
        nn.Conv2d(4, 4, 3, padding=1),
        nn.Tanh(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(4 * 2 * 2, 3),
    ).double()
    chain.train()
    chain(torch.randn(64, 1, 8, 8, dtype=torch.float64))  # batch norm statistics
    chain.eval()
    bound = sequential_bound(list(chain), (1, 8, 8))
    x = torch.randn(16, 1, 8, 8, generator=gen, dtype=torch.float64)
    assert bound >= _largest_jacobian_norm(chain, x) * (1 - 1e-9)
    with pytest.raises(ValueError, match="lipschitz_bound"):
        sequential_bound([nn.GELU()], (3,))


# ------------------------------------------------------------------ (c) the attack
@pytest.mark.parametrize("backbone", ["identity", "mlp"])
def test_attack_finds_nothing_inside_the_certified_radius(backbone):
    from sklearn.datasets import load_digits

    from lvqmln_torch.sklearn.estimator import LVQMLNClassifier

    X, y = load_digits(return_X_y=True)
    X = (X / 16.0).astype(np.float32)
    kwargs = dict(max_iter=15, batch_size=64, robust_eps=0.3, n_prototypes_per_class=2)
    if backbone == "mlp":
        kwargs.update(
            hidden_sizes=[32],
            latent_dim=16,
            activation="maxmin",
            lipschitz="spectral",
            latent_activation=False,
        )
    est = LVQMLNClassifier(backbone=backbone, **kwargs).fit(X[:1200], y[:1200])
    X_test, y_test = torch.as_tensor(X[1200:1500]), torch.as_tensor(y[1200:1500])
    network = est.network_
    radius = torch.as_tensor(est.certify(X_test.numpy(), y_test.numpy())).float()
    assert float((radius > 0).float().mean()) > 0.5  # a model with radii to attack
    network.eval()
    correct = radius > 0  # the others are wrong already (or exactly on a boundary)
    inside = pgd_l2_attack(
        network, X_test[correct], y_test[correct], radius[correct] * 0.999, restarts=4
    )
    assert not bool(inside.any())
    # The attack works: well outside the radii it flips some.
    outside = pgd_l2_attack(network, X_test[correct], y_test[correct], radius[correct] * 4 + 0.5)
    assert float(outside.float().mean()) > 0.3
