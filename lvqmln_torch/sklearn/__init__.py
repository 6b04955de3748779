"""Layer 5, the scikit-learn estimator (built on the layers below): ``LVQMLNClassifier``,
its parameters, its engines (the numpy engine and a Lightning ``Trainer``), its
explanations, persistence and the migration from prosemble."""
