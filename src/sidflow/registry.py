"""One registry pattern for everything that is chosen by name (after timm's
``register_model`` / ``create_model``).

A :class:`Registry` maps names to objects (classes or factory functions). Built-in
entries are declared here as ``"module:attribute"`` strings (or ``"module"`` when the
module registers the name itself when imported), so that

* the known names are listed without importing anything heavy (transformers, sklearn);
* no result depends on import order: asking for a name imports its module on demand;
* this module imports nothing of the package (the layer contract puts it at the bottom).

Modules register their objects with the decorator (``@TEACHERS.register("vitgpt2")``);
a plug-in registers a new name the same way. An unknown name raises
:class:`UnknownNameError`, which lists the known names::

    from sidflow.registry import STUDENTS
    model = STUDENTS.create("resnet18", cfg)
    STUDENTS.names()          # ['resnet18']

Registries: ``TEACHERS``, ``EXPLAINERS``, ``STUDENTS``, ``PROBE_BACKBONES``,
``PROBE_CLASSIFIERS``, ``DETECTOR_KINDS``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


class UnknownNameError(KeyError, ValueError):
    """A name that no registry entry has; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: Iterable[str]):
        self.kind, self.name, self.known = kind, name, sorted(known)
        super().__init__(f"unknown {kind} {name!r}; known: {', '.join(self.known) or '(none)'}")

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class Registry:
    """Name -> object, with lazily imported built-ins (``{"name": "module:attr"}``)."""

    def __init__(self, kind: str, builtins: dict[str, str] | None = None):
        self.kind = kind
        self._lazy: dict[str, str] = dict(builtins or {})
        self._objects: dict[str, Any] = {}

    def register(self, name: str, obj: Any = None):
        """Register ``obj`` under ``name``; without ``obj``, a decorator."""

        def add(target):
            self._objects[name] = target
            return target

        return add if obj is None else add(obj)

    def names(self) -> list[str]:
        return sorted(set(self._lazy) | set(self._objects))

    def __contains__(self, name: object) -> bool:
        return name in self._lazy or name in self._objects

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (importing its module if it is a built-in)."""
        if name in self._objects:
            return self._objects[name]
        if name not in self._lazy:
            raise UnknownNameError(self.kind, name, self.names())
        module, _, attr = self._lazy[name].partition(":")
        imported = importlib.import_module(module)  # registers its entries on import
        if attr:
            self._objects.setdefault(name, getattr(imported, attr))
        if name not in self._objects:
            raise RuntimeError(f"{module} did not register {self.kind} {name!r}")
        return self._objects[name]

    def create(self, name: str, *args, **kwargs) -> Any:
        """Call the registered object (a class or factory) with the arguments."""
        return self.get(name)(*args, **kwargs)

    def check(self, name: str) -> str:
        """``name`` if it is known, else :class:`UnknownNameError`."""
        if name not in self:
            raise UnknownNameError(self.kind, name, self.names())
        return name


# -- the package's registries -------------------------------------------------------------------
TEACHERS = Registry(
    "teacher", {"vitgpt2": "sidflow.models.vitgpt2", "blip2": "sidflow.models.blip2"}
)
EXPLAINERS = Registry("explainer", {"llava": "sidflow.models.explainer:Explainer"})
# the architecture zoo (sidflow.models.zoo registers these names when imported)
_ZOO_NAMES = ("resnet50", "xception", "deit-small", "efficientnet-b0", "convnext-tiny", "npr",
              "spectrum")  # fmt: skip
STUDENTS = Registry(
    "student architecture",
    {
        "resnet18": "sidflow.models.student:ResNetStudent",
        **dict.fromkeys(_ZOO_NAMES, "sidflow.models.zoo"),
    },
)
_BACKBONE_NAMES = ("efficientnet-lite0", "clip", "dino-vit", "dino-resnet50", "teacher", "student")
PROBE_BACKBONES = Registry(
    "probe backbone", dict.fromkeys(_BACKBONE_NAMES, "sidflow.probe.backbones")
)
_CLASSIFIER_NAMES = ("logreg", "linear-svm", "rbf-svm", "lda", "qda", "knn1", "knn3", "knn5",
                     "random-forest", "gradient-boosting", "bagging", "decision-tree", "naive-bayes")  # fmt: skip
PROBE_CLASSIFIERS = Registry(
    "probe classifier", dict.fromkeys(_CLASSIFIER_NAMES, "sidflow.probe.classifiers")
)


@dataclass(frozen=True)
class DetectorKind:
    """What kind of detector a name in ``Plan.detectors()`` is: data, not a name prefix.

    ``scored_from``: ``cache`` (teacher scores read from the teacher cache), ``images``
    (a trained model scores processed images; test-time perturbations apply), ``features``
    (a classifier over cached features) or ``metadata`` (raw-file metadata only).
    ``model_card``: the JSON file describing a trained model inside its folder ("" if none).
    ``ranked``: competes with the other detectors (False for a control such as the metadata
    audit, which the report shows beside the detectors but never ranks among them).
    """

    name: str
    scored_from: str
    trained_in_experiment: bool
    description: str
    model_card: str = ""
    ranked: bool = True


DETECTOR_KINDS = Registry("detector kind")
# fmt: off
for _kind in (
    #            name       scored_from trained description, model_card
    DetectorKind("teacher", "cache",    False, "captioning teacher, class-caption likelihood", "card.json"),
    DetectorKind("teacher-caption", "cache", False,
                 "captioning teacher read from its generated caption (verdict: the caption; p_fake: "
                 "the likelihood score, for AP/AUC)", "card.json"),
    DetectorKind("student", "images",   True,  "distilled (or no-KD) student network", "student.json"),
    DetectorKind("rine",    "images",   True,  "RINE head over cached CLIP block tokens", "card.json"),
    DetectorKind("explainer", "images", True,
                 "vision-language explainer: p(Fake) vs p(Real) as its answer to the true/false question",
                 "card.json"),
    DetectorKind("probe",   "features", True,  "frozen backbone + classical classifier cell", "cell.json"),
    DetectorKind("audit",   "metadata", True,  "shortcut audit: raw-file metadata classifier", ranked=False),
):
    DETECTOR_KINDS.register(_kind.name, _kind)
# fmt: on
