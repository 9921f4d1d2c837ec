import numpy as np
import pytest

from pipeline.data import DatasetSpec, load_dataset
from pipeline.errors import UserError


def test_digits_is_resized_split_and_seeded():
    a = load_dataset({"name": "digits", "input_size": [16, 16]}, seed=3)
    b = load_dataset({"name": "digits", "input_size": [16, 16]}, seed=3)
    c = load_dataset({"name": "digits", "input_size": [16, 16]}, seed=4)
    assert a.input_shape == (16, 16, 1) and a.num_classes == 10
    assert len(a.x_train) + len(a.x_val) + len(a.x_test) == 1797
    assert a.x_train.dtype == np.float32 and 0 <= a.x_train.min() and a.x_train.max() <= 1
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.y_test, c.y_test)
    cal = a.calibration(50)
    assert cal.shape == (50, 16, 16, 1)
    np.testing.assert_array_equal(cal, b.calibration(50))


def test_train_fraction_keeps_a_seeded_subset():
    full = load_dataset({"name": "digits", "input_size": [8, 8]})
    part = load_dataset({"name": "digits", "input_size": [8, 8], "train_fraction": 0.2})
    assert len(part.x_train) == int(len(full.x_train) * 0.2)
    np.testing.assert_array_equal(part.y_test, full.y_test)


def test_npz_with_explicit_split_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    p = tmp_path / "d.npz"
    np.savez(p, x_train=rng.integers(0, 255, (40, 12, 12, 3)), y_train=rng.integers(0, 3, 40),
             x_test=rng.integers(0, 255, (10, 12, 12, 3)), y_test=rng.integers(0, 3, 10))
    d = load_dataset({"name": "npz", "path": str(p)})
    assert d.input_shape == (12, 12, 3) and len(d.x_test) == 10 and d.x_train.max() <= 1
    assert len(d.x_train) + len(d.x_val) == 40


def test_npz_with_x_y_is_split(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((50, 8, 8), np.float32), y=np.arange(50) % 5)
    d = load_dataset({"name": "npz", "path": str(p), "test_split": 0.2})
    assert len(d.x_test) == 10 and d.input_shape == (8, 8, 1) and d.num_classes == 5


def test_npz_errors(tmp_path):
    with pytest.raises(UserError, match="^dataset file not found: .*missing.npz$"):
        load_dataset({"name": "npz", "path": str(tmp_path / "missing.npz")})
    p = tmp_path / "bad.npz"
    np.savez(p, images=np.zeros(3))
    with pytest.raises(UserError, match=r"holds arrays \['images'\]; expected x_train, y_train, "
                                        r"x_test, y_test or x, y \(y optional: x-only data for "
                                        r"task fidelity; several inputs/outputs as "
                                        r"x_train__<input>, y_train__<output>\)$"):
        load_dataset({"name": "npz", "path": str(p)})


def test_image_dir(tmp_path):
    from PIL import Image

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(6):
            Image.fromarray(np.full((10, 10, 3), 40 * i, np.uint8)).save(tmp_path / cls / f"{i}.png")
    d = load_dataset({"name": "image_dir", "path": str(tmp_path), "input_size": [8, 8],
                      "test_split": 0.25})
    assert d.input_shape == (8, 8, 3) and d.num_classes == 2
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 12


def test_tfds_offline_or_missing_is_one_clear_line():
    with pytest.raises(UserError, match=r"^(dataset tfds:NAME needs tensorflow-datasets|cannot "
                                        r"load tfds:mnist)"):
        load_dataset("tfds:mnist")


def test_unknown_dataset_suggests():
    with pytest.raises(ValueError, match='unknown dataset \'digts\' \\(did you mean "digits"\\?\\)'):
        DatasetSpec(name="digts")
