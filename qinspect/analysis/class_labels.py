"""Which class labels an accuracy is measured against: a ``--labels`` file, else the labels the measured
data carries (a capture's ``/labels``, an image folder's class folders), and only when they can be the
model's classes.

Class folders number their classes by sorted folder name. That numbering is the model's only when the
model was trained on the same folders (Keras's ``image_dataset_from_directory`` numbers them so); ten
ImageNet class folders are classes 0..9 here but ten scattered indices of a 1000-class model. A folder
count that differs from the classifier's class count proves the numbering wrong, so those labels are
not used, and the reason is said: an accuracy against them would be a wrong number shown as right.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from qinspect.analysis.decisions import decision_kind
from qinspect.analysis.sensitivity import display_name
from qinspect.errors import QInspectError
from qinspect.io.labels import ClassLabels, labels_file


def classifier_classes(graph: Any) -> tuple[str, int] | None:
    """The first model output that decides between classes (the one accuracy is measured on) and its
    class count (a single sigmoid unit decides between two), or None when no output does or its width
    is unknown."""
    for name in graph.outputs:
        kind = decision_kind(graph, name)
        shape = graph[name].output_shape
        if kind is None or not shape or shape[-1] is None:
            continue
        width = int(shape[-1])
        if kind == "labels" and width == 1:
            return name, 2
        if width >= 2:
            return name, width
    return None


def _check_classes(values: np.ndarray, head: tuple[str, int], path: str) -> None:
    """Refuse labels no class of the classifier output can match (an accuracy of 0% would read as a
    measurement): indices outside [0, classes), one-hot rows of another width."""
    output, width = head
    if values.ndim == 2:
        if values.shape[1] != width:
            raise QInspectError(f"one-hot labels of {values.shape[1]} classes, but the model's output {output!r} "
                                f"has {width}", path)
        return
    bad = values[(values < 0) | (values >= width)]
    if bad.size:
        raise QInspectError(f"labels hold class indices outside 0..{width - 1} (the {width} classes of output "
                            f"{output!r}), e.g. {int(bad[0])}", path)


def carried_labels(data: Any) -> ClassLabels | None:
    """The class-folder labels measured data carries: a capture's or an image folder's
    (``class_labels``), or those of the capture it reads (``capture``), else None."""
    labels = getattr(data, "class_labels", None)
    return labels if labels is not None else getattr(getattr(data, "capture", None), "class_labels", None)


def choose_labels(graph: Any, path: str | None, carried: ClassLabels | None,
                  n: int) -> tuple[ClassLabels | None, str | None]:
    """The labels of the first ``n`` measured samples, and why the data's own labels are left unused.

    ``path`` (a ``--labels`` .npy) wins. Otherwise ``carried`` (:func:`carried_labels`: class folders)
    are used when the model's classifier output has as many classes as there are folders, else the
    second value says why not."""
    if path:
        labels = labels_file(path, n)
        head = classifier_classes(graph)
        if head is not None:
            output, width = head
            shown = display_name(graph[output]) if output in graph else output  # the tree's name, not the node's
            _check_classes(labels.values[:n], (shown, width), path)
        return labels, None
    if carried is None:
        return None, None
    head = classifier_classes(graph)
    if head is None:
        return None, (f"the samples' {len(carried.classes)} class folders give labels, but no model output "
                      "decides between classes: no accuracy")
    output, width = head
    if carried.classes and len(carried.classes) != width:
        shown = ", ".join(carried.classes[:3]) + (", ..." if len(carried.classes) > 3 else "")
        return None, (f"class-folder labels not used: {len(carried.classes)} class folders ({shown}) cannot be "
                      f"numbered as the {width} classes of output {output!r}; give --labels with the model's "
                      "class indices for accuracy")
    return carried.first(n), None
