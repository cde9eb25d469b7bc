"""Evaluators for ``--mode=eval``: one module per metric family, chosen by ``config.eval.evaluators``.

Each module defines ``Evaluator`` (see ``common.Evaluator``): ``age`` (the independent age
estimator on the aged images), ``cycle`` (restoring the aged image), ``identity`` (a face
embedding network), ``fid_kid`` (against real images of the target group), ``synthfaces_truth``
(against the true render at the target age, and stubble on women), ``geometry`` (landmark
heights against the true ones), ``traits`` (the SynthFaces trait classifier) and ``two_sample``
(a classifier trained to tell real from aged faces).
"""

from __future__ import annotations

import importlib

KNOWN = ("age", "cycle", "identity", "fid_kid", "synthfaces_truth", "geometry", "traits", "two_sample")


def names(spec: str) -> list[str]:
    """The evaluator names of a ``config.eval.evaluators`` string, checked."""
    chosen = [n.strip() for n in str(spec).split(",") if n.strip()]
    unknown = [n for n in chosen if n not in KNOWN]
    if unknown:
        raise ValueError(f"config.eval.evaluators={spec!r}: unknown {', '.join(unknown)}; "
                         f"expected a comma-separated subset of {', '.join(KNOWN)}")
    return chosen


def get(name: str):
    """The ``Evaluator`` class of module ``faceaging.evaluators.<name>``."""
    return importlib.import_module(f"faceaging.evaluators.{name}").Evaluator
