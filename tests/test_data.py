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
    with pytest.raises(UserError, match=r"^\S+/bad\.npz holds arrays \['images'\]; expected x_train, y_train, "
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
    with pytest.raises(UserError, match=r"^(dataset tfds:NAME needs tensorflow-datasets: pip "
                                        r"install tensorflow-datasets|cannot load tfds:mnist \(\w+: "
                                        r"[^\n]*\); offline, download it first or use "
                                        r"npz/image_dir)$"):
        load_dataset("tfds:mnist")


def test_unknown_dataset_suggests():
    with pytest.raises(ValueError) as e:
        DatasetSpec(name="digts")
    assert [x["msg"] for x in e.value.errors()] == [
        "Value error, unknown dataset 'digts' (did you mean \"digits\"?); expected one of: "
        "diabetes, digits, image_dir, npz, tfds"]


# ----- bad npz data: one line naming the file and the fix (issue 12) ----------------------------

RESAVE = "re-create it with numpy.savez(path, x=images, y=labels)"


def _refused(spec) -> str:
    with pytest.raises(UserError) as e:
        load_dataset(spec)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_bad_npz_arrays_are_one_line(tmp_path):
    x, y = np.zeros((20, 8, 8), np.float32), np.arange(20) % 4
    cases = [  # (arrays, message): each was a traceback or a silent wrong result
        ({"x": x, "y": np.where(y == 3, -3, y)},  # TensorFlow InvalidArgumentError mid-train
         "integer labels are class indices 0, 1, 2, ...; found -3 (map your classes to 0..N-1, "
         "or give float targets for regression)"),
        ({"x": np.where(np.arange(20)[:, None, None] % 7 == 5, np.nan, x), "y": y},  # exit 0
         "{p}: NaN or infinite input values in 3 of 20 samples (the first is sample 5); replace "
         "or drop them"),
        ({"x": x[:0], "y": y[:0]},  # ValueError: zero-size array
         "{p}: a split has no samples (zero rows); the dataset needs samples to train and test on"),
    ]
    for i, (arrays, message) in enumerate(cases):
        p = tmp_path / f"d{i}.npz"
        np.savez(p, **arrays)
        assert _refused({"name": "npz", "path": str(p)}) == message.format(p=p)


def test_npz_files_that_are_not_npz(tmp_path):
    """A text file was mis-reported as "contains pickled data"; a truncated npz was BadZipFile;
    a pickled object array was (rightly) not loaded, but with a traceback."""
    text = tmp_path / "notes.npz"
    text.write_text("x,y\n1,2\n")
    assert _refused({"name": "npz", "path": str(text)}) == (
        f"{text} is not an .npz file (not a zip archive of arrays); {RESAVE}")
    npy = tmp_path / "one.npz"
    with open(npy, "wb") as f:
        np.save(f, np.zeros(3))
    assert _refused({"name": "npz", "path": str(npy)}) == (
        f"{npy} is a single .npy array, not an .npz of named arrays; {RESAVE}")
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((20, 8, 8)), y=np.arange(20))
    cut = tmp_path / "cut.npz"
    cut.write_bytes(good.read_bytes()[:700])
    assert _refused({"name": "npz", "path": str(cut)}) == (
        f"cannot read {cut} as .npz: truncated or corrupt (BadZipFile: File is not a zip file); "
        f"{RESAVE}")
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([np.zeros((2, 2)), "evil"], dtype=object), y=np.arange(2))
    assert _refused({"name": "npz", "path": str(obj)}) == (
        f"{obj}: array 'x' holds Python objects (a pickle), which edgepipe does not load because "
        f"unpickling can run code; save plain numeric arrays ({RESAVE})")


def _image_dir(root, classes=("cat", "dog"), n=4):
    from PIL import Image

    for cls in classes:
        (root / cls).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((10, 10, 3), 30 * i, np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_image_dir_with_a_corrupt_png_names_it(tmp_path):
    """Was: a DecodeImage traceback naming no file."""
    root = _image_dir(tmp_path / "imgs")
    (root / "dog" / "2.png").write_bytes(b"\x89PNG\r\n\x1a\n but not really")
    assert _refused({"name": "image_dir", "path": str(root)}) == (
        f"image_dir {root}: cannot decode dog/2.png (not a valid image); fix or remove it, or set "
        f"skip_bad_images: true in the dataset")


def test_image_dir_skip_bad_images_warns_with_a_count(tmp_path, caplog):
    root = _image_dir(tmp_path / "imgs")
    (root / "dog" / "2.png").write_bytes(b"garbage")
    (root / "cat" / "0.png").write_bytes(b"")
    with caplog.at_level("WARNING", logger="edgepipe"):
        d = load_dataset({"name": "image_dir", "path": str(root), "input_size": [8, 8],
                          "skip_bad_images": True, "test_split": 0.2})
    assert len(d.x_train) + len(d.x_val) + len(d.x_test) == 6 and d.num_classes == 2
    assert caplog.messages == [f"image_dir {root}: skipped 2 of 8 images that do not decode: "
                               f"cat/0.png, dog/2.png"]
    for f in root.glob("cat/*.png"):
        f.write_bytes(b"garbage")
    assert _refused({"name": "image_dir", "path": str(root), "skip_bad_images": True}) == (
        f"image_dir {root}: every image of class folder 'cat' was skipped as unreadable; fix its "
        f"images or remove it")


def test_image_dir_with_an_empty_class_folder_is_refused(tmp_path):
    """An empty class is an output the model never learns nor gets tested on: refused, named.
    (Was: kept as a class silently, or dropped when it sorted last.)"""
    root = _image_dir(tmp_path / "imgs")
    (root / "bird").mkdir()
    (root / "bird" / "notes.txt").write_text("todo")
    (root / ".thumbs").mkdir()  # hidden folders are not classes
    assert _refused({"name": "image_dir", "path": str(root)}) == (
        f"image_dir {root}: class folder 'bird' has no images (.bmp .gif .jpeg .jpg .png); add "
        f"images to it or remove it")


def test_skip_bad_images_is_for_image_dir_only():
    with pytest.raises(ValueError) as e:
        DatasetSpec(name="digits", skip_bad_images=True)
    assert [x["msg"] for x in e.value.errors()] == [
        "Value error, skip_bad_images applies to dataset image_dir, not digits"]
