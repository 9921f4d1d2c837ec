"""Low-rank factorization (pipeline.compress.lowrank): exactness, plain save/load, params, MACs."""

import numpy as np
import pytest

import pipeline  # noqa: F401
import tf_keras as keras

from pipeline.compress import lowrank as L
from pipeline.errors import UserError


def _functional(seed=0):
    keras.utils.set_random_seed(seed)
    i = keras.Input((8, 8, 3))
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="c3")(i)
    b = keras.layers.Conv2D(32, 1, strides=2, activation="relu", name="pw")(a)
    c = keras.layers.GlobalAveragePooling2D(name="gap")(b)
    d = keras.layers.Dense(64, activation="relu", name="fc")(c)
    e = keras.layers.Add(name="add")([d, keras.layers.Dense(64, name="fc2")(d)])
    return keras.Model(i, keras.layers.Dense(10, name="cls")(e))


def _set_rank(layer, r, rng):
    """Give `layer` a kernel of exact rank r."""
    k = layer.kernel.numpy()
    fi, fo = k.shape[-2], k.shape[-1]
    low = rng.standard_normal((fi, r)) @ rng.standard_normal((r, fo)) / np.sqrt(fi)
    layer.kernel.assign(low.reshape(k.shape).astype(np.float32))


def test_exact_low_rank_is_reproduced_and_loads_as_plain_keras(tmp_path):
    m = _functional()
    rng = np.random.default_rng(0)
    for name in ("pw", "fc", "fc2"):
        _set_rank(m.get_layer(name), 4, rng)
    new, rep = L.factorize(m, energy=0.999, skip=["cls"])
    ranks = {l["name"]: (l["rank"], l["factorized"]) for l in rep["layers"]}
    assert ranks == {"pw": (4, True), "fc": (4, True), "fc2": (4, True)}
    x = rng.random((3, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(new.predict(x, verbose=0), m.predict(x, verbose=0), atol=1e-4)
    # params: pw 16*32 -> 4*(16+32), fc 32*64 -> 4*96, fc2 64*64 -> 4*128
    saved = (512 - 192) + (2048 - 384) + (4096 - 512)
    assert rep["params_before"] - rep["params_after"] == saved
    # ordinary layers only: saves and loads with safe_mode and no custom objects
    path = tmp_path / "lowrank.keras"
    new.save(path)
    back = keras.models.load_model(path, safe_mode=True, compile=False)
    assert {type(l).__name__ for l in back.layers} == {
        "InputLayer", "Conv2D", "GlobalAveragePooling2D", "Dense", "Add"}
    assert [l.name for l in back.layers if l.name.endswith("_lr")] == ["pw_lr", "fc_lr", "fc2_lr"]
    assert back.get_layer("pw_lr").strides == (2, 2) and back.get_layer("pw").strides == (1, 1)
    np.testing.assert_allclose(back.predict(x, verbose=0), new.predict(x, verbose=0), atol=1e-6)


def test_macs_counted_exactly():
    m = _functional()
    # c3: 8*8*(3*3*3)*16, pw: 4*4*16*32, fc: 32*64, fc2: 64*64, cls: 64*10
    assert L.count_macs(m) == 27648 + 8192 + 2048 + 4096 + 640
    new, rep = L.factorize(m, rank=4, layers=["pw"])
    assert rep["macs_after"] == rep["macs_before"] - 8192 + 4 * 4 * (16 * 4 + 4 * 32)


def test_sequential_ratio_and_no_saving_layers_kept():
    keras.utils.set_random_seed(0)
    s = keras.Sequential([keras.Input((20,)), keras.layers.Dense(20, activation="relu", name="a"),
                          keras.layers.Dense(10, name="b")])
    new, rep = L.factorize(s, ratio=0.5)
    by = {l["name"]: l for l in rep["layers"]}
    assert by["a"]["rank"] == 10 and by["a"]["factorized"] is False  # 10*(20+20) == 20*20
    assert by["b"]["rank"] == 5 and by["b"]["factorized"] is True  # 5*(20+10) < 20*10
    assert [l.name for l in new.layers] == ["a", "b_lr", "b"]


def test_choose_rank():
    s = np.array([3.0, 2.0, 1.0, 0.0])
    assert L.choose_rank(s, energy=0.9) == 2  # (9+4)/14 = 0.93
    assert L.choose_rank(s, energy=1.0) == 3
    assert L.choose_rank(s, ratio=0.5) == 2
    assert L.choose_rank(s, rank=9) == 4


@pytest.mark.parametrize("kwargs, message", [
    (dict(rank=0), "Expected rank > 0. Received: rank=0"),
    (dict(energy=0.0), "Expected energy in (0, 1]. Received: energy=0.0"),
    (dict(energy=1.2), "Expected energy in (0, 1]. Received: energy=1.2"),
    (dict(ratio=0), "Expected ratio in (0, 1]. Received: ratio=0"),
    (dict(), "Expected exactly one of rank, ratio, energy for low-rank factorization. "
             "Received: none"),
    (dict(rank=2, energy=0.9), "Expected exactly one of rank, ratio, energy for low-rank "
                               "factorization. Received: rank, energy"),
    (dict(rank=2, layers=["c3"]), "Layer(s) c3 cannot be used for low-rank; "
                                  "candidates: pw, fc, fc2, cls"),
])
def test_bad_input(kwargs, message):
    with pytest.raises(UserError) as e:
        L.factorize(_functional(), **kwargs)
    assert str(e.value) == message
