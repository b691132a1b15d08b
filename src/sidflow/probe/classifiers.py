"""The probe grid's classifiers and reductions (scikit-learn), and safe model files.

    from sidflow.probe.classifiers import make_classifier, make_reduction
    model = make_pipeline(make_reduction({"pca": 0.95}), make_classifier("logreg"))

Every classifier gives a probability of "fake" (``predict_proba``; the SVMs are wrapped in sigmoid
calibration), so AP/AUC, thresholds and calibration metrics mean the same as for the
deep detectors. Models are saved with skops (no pickle) and their SHA-256 is recorded in the
cell's card; :func:`load_model` refuses a file whose hash differs or which holds a type outside
scikit-learn, NumPy and sidflow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sidflow.io import atomic_path, sha256_file

CLASSIFIERS = ("logreg", "linear-svm", "rbf-svm", "lda", "qda", "knn1", "knn3", "knn5", "random-forest",
               "gradient-boosting", "bagging", "decision-tree", "naive-bayes")  # fmt: skip


def make_classifier(name: str, seed: int = 0):
    from sklearn import discriminant_analysis as da
    from sklearn import ensemble, linear_model, naive_bayes, neighbors, svm, tree
    from sklearn.calibration import CalibratedClassifierCV

    if name == "logreg":  # the linear probe
        return linear_model.LogisticRegression(C=1.0, max_iter=2000)
    if name == "linear-svm":
        return CalibratedClassifierCV(
            svm.LinearSVC(C=0.1, random_state=seed), method="sigmoid", cv=3
        )
    if name == "rbf-svm":
        svc = svm.SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
        return CalibratedClassifierCV(svc, method="sigmoid", cv=3, ensemble=False)
    if name == "lda":
        return da.LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
    if name == "qda":
        # eigen + Ledoit-Wolf shrinkage works with more dimensions than samples per class
        return da.QuadraticDiscriminantAnalysis(solver="eigen", shrinkage="auto")
    if name in ("knn1", "knn3", "knn5"):
        return neighbors.KNeighborsClassifier(n_neighbors=int(name[3:]))
    if name == "random-forest":
        return ensemble.RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=seed)
    if name == "gradient-boosting":
        return ensemble.HistGradientBoostingClassifier(max_iter=200, random_state=seed)
    if name == "bagging":
        return ensemble.BaggingClassifier(n_estimators=20, random_state=seed)
    if name == "decision-tree":
        return tree.DecisionTreeClassifier(max_depth=12, random_state=seed)
    if name == "naive-bayes":
        return naive_bayes.GaussianNB()
    raise ValueError(f"unknown classifier {name!r}; known: {CLASSIFIERS}")


class AutoencoderReduction(TransformerMixin, BaseEstimator):
    """A one-hidden-layer autoencoder (tanh bottleneck of ``width``) trained on the training
    features with Adam; ``transform`` gives the bottleneck. Weights are kept as NumPy arrays,
    so the fitted reduction is saved by skops like any scikit-learn estimator."""

    def __init__(self, width: int = 32, epochs: int = 60, lr: float = 1e-2, seed: int = 0):
        self.width, self.epochs, self.lr, self.seed = width, epochs, lr, seed

    def fit(self, X, y=None):
        import torch

        torch.manual_seed(self.seed)
        x = torch.as_tensor(np.asarray(X, dtype=np.float32))
        enc, dec = torch.nn.Linear(x.shape[1], self.width), torch.nn.Linear(self.width, x.shape[1])
        opt = torch.optim.Adam([*enc.parameters(), *dec.parameters()], lr=self.lr)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.epochs):
            for idx in torch.randperm(len(x), generator=gen).split(256):
                loss = torch.nn.functional.mse_loss(dec(torch.tanh(enc(x[idx]))), x[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.w_ = enc.weight.detach().numpy().T.copy()
        self.b_ = enc.bias.detach().numpy().copy()
        self.reconstruction_mse_ = float(loss.detach())
        return self

    def transform(self, X):
        return np.tanh(np.asarray(X, dtype=np.float32) @ self.w_ + self.b_)


def make_reduction(spec: dict, seed: int = 0):
    """``{}`` -> standardise only; ``{"pca": v}`` -> PCA keeping variance v; ``{"autoencoder": w}``."""
    from sklearn.decomposition import PCA

    steps = [("scale", StandardScaler())]
    if "pca" in spec:
        v = float(spec["pca"])
        steps.append(
            ("pca", PCA(n_components=v if v < 1 else None, svd_solver="full", random_state=seed))
        )
    elif "autoencoder" in spec:
        steps.append(("autoencoder", AutoencoderReduction(int(spec["autoencoder"]), seed=seed)))
    return steps


def make_model(reduction: dict, classifier: str, seed: int = 0) -> Pipeline:
    return Pipeline(
        [*make_reduction(reduction, seed), ("classifier", make_classifier(classifier, seed))]
    )


TRUSTED_PREFIXES = ("sklearn.", "numpy.", "scipy.", "sidflow.probe.")


def save_model(model, path: str | Path) -> str:
    """Write ``model`` with skops, atomically; returns the file's SHA-256."""
    import skops.io as sio

    with atomic_path(path) as tmp:
        sio.dump(model, tmp)
    return sha256_file(path)


def load_model(path: str | Path, sha256: str):
    """Load a model written by :func:`save_model` if its hash is ``sha256`` and it holds only
    scikit-learn / NumPy / SciPy / sidflow types."""
    import skops.io as sio

    actual = sha256_file(path)
    if actual != sha256:
        raise ValueError(
            f"{path}: SHA-256 {actual[:12]}... differs from the recorded {sha256[:12]}..."
        )
    untrusted = sio.get_untrusted_types(file=path)
    bad = [t for t in untrusted if not t.startswith(TRUSTED_PREFIXES)]
    if bad:
        raise ValueError(f"{path}: refusing to load types {bad}")
    return sio.load(path, trusted=untrusted)
