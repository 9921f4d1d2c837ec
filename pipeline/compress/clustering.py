"""Weight clustering (weight sharing) with TF-MOT: wrap, strip, count unique values (the
wrapped model is fine-tuned by `pipeline.training.fit`).

Each clustered kernel ends with at most `clusters` distinct values (plus zero when sparsity is
preserved), which is what makes the file compress well and what CQAT later keeps in int8.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from pipeline.compress import _keras as K
from pipeline.errors import UserError, did_you_mean

_ck = tfmot.clustering.keras
#: recipe name -> TF-MOT CentroidInitialization
INITS = {
    "kmeans_plus_plus": _ck.CentroidInitialization.KMEANS_PLUS_PLUS,
    "linear": _ck.CentroidInitialization.LINEAR,
    "density_based": _ck.CentroidInitialization.DENSITY_BASED,
    "random": _ck.CentroidInitialization.RANDOM,
}


def clusterable_layers(model, clusters: int = 2) -> list[str]:
    """Layers TF-MOT clusters: a non-empty clusterable kernel with more weights than `clusters`."""
    from tensorflow_model_optimization.python.core.clustering.keras.clustering_registry import (
        ClusteringRegistry)

    out = []
    for layer in K.flat_layers(model):
        if not ClusteringRegistry.supports(layer) or isinstance(layer, keras.layers.RNN):
            continue
        names = ClusteringRegistry._weight_names(layer)
        ks = [getattr(layer, n) for n in names if getattr(layer, n, None) is not None]
        if ks and min(int(np.prod(k.shape)) for k in ks) > clusters:
            out.append(layer.name)
    return out


def _check(clusters, init) -> None:
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)) or clusters < 2:
        raise UserError(f"Expected clusters >= 2. Received: clusters={clusters}")
    if init not in INITS:
        raise UserError(f'Unknown centroid init "{init}"{did_you_mean(init, INITS)}; '
                        f"expected one of: {', '.join(INITS)}")


def apply_clustering(model, clusters: int, init: str = "kmeans_plus_plus", *,
                     preserve_sparsity: bool | str = "auto", layers: Iterable[str] | None = None,
                     skip: Iterable[str] = (), skip_first: bool = False,
                     skip_classifier: bool = False):
    """A copy of `model` with the chosen layers wrapped by `cluster_weights` (uncompiled).

    `preserve_sparsity="auto"` keeps zeros when the model is sparse (came from pruning).
    Returns (wrapped model, preserve_sparsity used).
    """
    K.require_graph_model(model, "clustering")
    _check(clusters, init)
    keep_zeros = K.is_sparse(model) if preserve_sparsity == "auto" else bool(preserve_sparsity)
    chosen = set(K.resolve_layers(model, clusterable_layers(model, clusters), layers, skip,
                                  what="clustering", skip_first=skip_first,
                                  skip_classifier=skip_classifier))
    if not chosen:
        raise UserError("No layer left to cluster (check layers/skip, or use fewer clusters); "
                        "clusterable layers: " + (", ".join(clusterable_layers(model, clusters)) or "none"))
    base = K.clone_with_weights(model)

    def wrap(layer):
        if layer.name in chosen:
            return _ck.cluster_weights(layer, number_of_clusters=int(clusters),
                                       cluster_centroids_init=INITS[init],
                                       preserve_sparsity=keep_zeros)
        return layer
    return K.map_layers(base, wrap), keep_zeros


def strip_clustering(model):
    """The model with clustering wrappers removed (kernels hold the shared values)."""
    return _ck.strip_clustering(model)


def unique_values_report(model) -> dict[str, int]:
    """{layer: number of distinct values in its kernel(s)} for every layer with a kernel."""
    out = {}
    for layer in K.flat_layers(model):
        ks = [np.asarray(k.numpy()).ravel() for k in K.kernels(layer)]
        if ks and sum(k.size for k in ks):
            out[K.inner_name(layer)] = int(len(np.unique(np.concatenate(ks))))
    return out
