"""Weight clustering (pipeline.compress.clustering) and the cluster-preserving QAT scheme."""

import pytest

import pipeline  # noqa: F401
from _compress_data import accuracy, cluster, digits, prune, trained_cnn

from pipeline.compress import clustering as C
from pipeline.compress import magnitude as M
from pipeline.compress import quantize as Q
from pipeline.errors import UserError


@pytest.fixture(scope="module")
def data():
    return digits()


@pytest.fixture(scope="module")
def base(data):
    return trained_cnn(data)


def test_cluster_8_leaves_8_values_per_kernel(base, data):
    _, _, xt, yt = data
    clustered, kept_zeros = cluster(base, data, clusters=8, epochs=1, skip_first=True)
    assert kept_zeros is False
    assert C.unique_values_report(clustered) == {"stem": 72, "conv": 8, "fc": 8, "classifier": 8}
    assert [type(l).__name__ for l in clustered.layers] == [type(l).__name__ for l in base.layers]
    assert accuracy(clustered, xt, yt) >= accuracy(base, xt, yt) - 0.05
    assert Q.detect_preserve(clustered) == "clusters"
    _, info = Q.quantize_aware(clustered)
    assert info.scheme == "Default8BitClusterPreserveQuantizeScheme"


def test_pruned_input_keeps_its_zeros(base, data):
    pruned, _ = prune(base, data, n=320, sparsity=0.7, epochs=1, layers=["fc"])
    clustered, kept_zeros = cluster(pruned, data, n=320, clusters=4, epochs=1, layers=["fc"])
    assert kept_zeros is True
    assert M.sparsity_report(pruned)["fc"] == pytest.approx(0.7, abs=1e-3)
    assert M.sparsity_report(clustered)["fc"] >= M.sparsity_report(pruned)["fc"]
    assert C.unique_values_report(clustered)["fc"] <= 5  # 4 centroids + the preserved zero


@pytest.mark.parametrize("kwargs, message", [
    (dict(clusters=1), "Expected clusters >= 2. Received: clusters=1"),
    (dict(clusters=8, init="kmean_plus_plus"),
     'Unknown centroid init "kmean_plus_plus" (did you mean "kmeans_plus_plus"?); '
     "expected one of: kmeans_plus_plus, linear, density_based, random"),
    (dict(clusters=8, skip=["fcc"]),
     'Unknown layer "fcc" in clustering (did you mean "fc"?); '
     "layers: stem, conv, flatten, fc, classifier"),
])
def test_bad_input(base, kwargs, message):
    with pytest.raises(UserError) as e:
        C.apply_clustering(base, **kwargs)
    assert str(e.value) == message
