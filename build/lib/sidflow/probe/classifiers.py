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
from sidflow.registry import PROBE_CLASSIFIERS

_register = PROBE_CLASSIFIERS.register


@_register("logreg")
def _logreg(seed: int):  # the linear probe
    from sklearn import linear_model

    return linear_model.LogisticRegression(C=1.0, max_iter=2000)


@_register("linear-svm")
def _linear_svm(seed: int):
    from sklearn import svm
    from sklearn.calibration import CalibratedClassifierCV

    return CalibratedClassifierCV(svm.LinearSVC(C=0.1, random_state=seed), method="sigmoid", cv=3)


@_register("rbf-svm")
def _rbf_svm(seed: int):
    from sklearn import svm
    from sklearn.calibration import CalibratedClassifierCV

    svc = svm.SVC(kernel="rbf", C=1.0, gamma="scale", random_state=seed)
    return CalibratedClassifierCV(svc, method="sigmoid", cv=3, ensemble=False)


@_register("lda")
def _lda(seed: int):
    from sklearn import discriminant_analysis as da

    return da.LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")


@_register("qda")
def _qda(seed: int):
    from sklearn import discriminant_analysis as da

    # eigen + Ledoit-Wolf shrinkage works with more dimensions than samples per class
    return da.QuadraticDiscriminantAnalysis(solver="eigen", shrinkage="auto")


def _knn(k: int):
    def make(seed: int):
        from sklearn import neighbors

        return neighbors.KNeighborsClassifier(n_neighbors=k)

    return make


for _k in (1, 3, 5):
    _register(f"knn{_k}", _knn(_k))


@_register("random-forest")
def _random_forest(seed: int):
    from sklearn import ensemble

    return ensemble.RandomForestClassifier(n_estimators=200, n_jobs=1, random_state=seed)


@_register("gradient-boosting")
def _gradient_boosting(seed: int):
    from sklearn import ensemble

    return ensemble.HistGradientBoostingClassifier(max_iter=200, random_state=seed)


@_register("bagging")
def _bagging(seed: int):
    from sklearn import ensemble

    return ensemble.BaggingClassifier(n_estimators=20, random_state=seed)


@_register("decision-tree")
def _decision_tree(seed: int):
    from sklearn import tree

    return tree.DecisionTreeClassifier(max_depth=12, random_state=seed)


@_register("naive-bayes")
def _naive_bayes(seed: int):
    from sklearn import naive_bayes

    return naive_bayes.GaussianNB()


CLASSIFIERS = tuple(PROBE_CLASSIFIERS.names())


def make_classifier(name: str, seed: int = 0):
    """A fresh classifier by registry name (:data:`sidflow.registry.PROBE_CLASSIFIERS`)."""
    return PROBE_CLASSIFIERS.create(name, seed)


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
