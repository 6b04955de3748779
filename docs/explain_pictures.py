"""Draw the pictures of docs/explanations.md and the README (``python docs/explain_pictures.py``):
a digits model with projected prototypes, each prototype's own-class exemplars from the test
split, and the accuracy-rejection curve of the test split."""

from pathlib import Path

from sklearn.model_selection import train_test_split

from lvqmln_torch import LVQMLNClassifier, load_builtin

HERE = Path(__file__).parent

X, y = load_builtin("digits")
X = X / 16.0
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, random_state=0, stratify=y)
clf = LVQMLNClassifier(
    hidden_sizes=[64], latent_dim=10, max_iter=300, lr=0.01, project_prototypes=True
).fit(X_train, y_train)
print(f"test accuracy {clf.score(X_test, y_test):.3f}")
indices, _ = clf.prototype_exemplars(X_test, y_test, k=6)
from lvqmln_torch.viz.explain_plots import plot_exemplars  # noqa: E402

plot_exemplars(
    X_test,
    indices,
    prototype_labels=clf.prototype_labels_,
    image_shape=(8, 8),
    prototype_samples=X_train[clf.prototype_sources_],
    path=HERE / "exemplars_digits.png",
    title="Each prototype (a training digit, after projection) and its 6 nearest test digits",
)
clf.plot_accuracy_rejection(X_test, y_test, path=HERE / "accuracy_rejection_digits.png")
