import functools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from orchestrator import amounts, data, datafiles, tablefiles
from orchestrator.splits import SPLIT_NAMES, ordered_split, split_indices
from orchestrator.config import FilesData, SyntheticData, TextData
from orchestrator.errors import DataError


def test_digits_split_is_stratified_disjoint_and_seeded():
    arrays = data.load_arrays(data.DigitsData(name="digits"), seed=0)
    assert arrays.x.shape == (1797, 1, 8, 8) and arrays.x.dtype == np.float32 and len(arrays.label_names) == 10
    tr, va, te = split_indices(arrays.y, 0.15, 0.15, seed=0)
    assert len(set(tr) | set(va) | set(te)) == 1797 and not (set(tr) & set(va) or set(tr) & set(te) or set(va) & set(te))
    assert abs(len(te) - 0.15 * 1797) <= 1 and abs(len(va) - 0.15 * 1797) <= 1
    overall = np.bincount(arrays.y) / len(arrays.y)
    for split in (tr, va, te):
        assert np.abs(np.bincount(arrays.y[split], minlength=10) / len(split) - overall).max() < 0.01
    again = split_indices(arrays.y, 0.15, 0.15, seed=0)
    other = split_indices(arrays.y, 0.15, 0.15, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((tr, va, te), again))
    assert not np.array_equal(te, other[2])
    # the checkpoint records each class's training rows (train.class_weight weighs by them)
    splits = data.load_splits(data.DigitsData(name="digits"), seed=0)
    assert splits.info()["class_counts"] == np.bincount(arrays.y[tr]).tolist() and sum(splits.num_rows.values()) == 1797


def test_channel_stats_per_channel_for_images_and_per_feature_for_vectors():
    rng = np.random.default_rng(0)
    images = rng.normal(3.0, 2.0, size=(500, 2, 4, 4)).astype(np.float32)
    images[:, 1] += 10
    mean, std = data.channel_stats(images)
    assert mean.shape == (2, 1, 1) and np.allclose(mean.ravel(), [3, 13], atol=0.2) and np.allclose(std, 2, atol=0.2)
    vectors = np.stack([np.zeros(100), np.arange(100.0)], axis=1).astype(np.float32)
    mean, std = data.channel_stats(vectors)
    assert mean.shape == (2,) and std[0] == 1.0 and np.isclose(std[1], np.arange(100.0).std())
    # summed a few rows at a time (all at once, numpy's std held a float64 copy of the data): numpy's figures
    for x in (images, vectors, rng.normal(5.0, 3.0, size=(301, 6, 5)).astype(np.float32)):
        keep = 1 if x.ndim == 4 else x.ndim - 1
        axes = tuple(a for a in range(x.ndim) if a != keep)
        mean, std = data.channel_stats(x, rows_at_once=64)
        assert np.allclose(mean, x.mean(axis=axes, keepdims=True, dtype=np.float64)[0], atol=1e-6)
        spread = x.std(axis=axes, keepdims=True, dtype=np.float64)[0]
        assert np.allclose(std, np.where(spread < 1e-8, 1.0, spread), atol=1e-6)  # a constant feature: unscaled


def test_synthetic_is_learnable_shape_and_seeded():
    cfg = SyntheticData(name="synthetic", num_samples=400, feature_shape=[4, 8], num_classes=3)
    a, b = data.load_arrays(cfg, seed=3), data.load_arrays(cfg, seed=3)
    assert a.x.shape == (400, 4, 8) and set(np.unique(a.y)) == {0, 1, 2} and np.array_equal(a.x, b.x)
    assert data.fingerprint(a) == data.fingerprint(b) != data.fingerprint(data.load_arrays(cfg, seed=4))


def test_npz_files_with_reshape_and_string_labels(tmp_path):
    x = np.random.default_rng(0).random((60, 16)).astype(np.float32)
    labels = np.array(["cat", "dog", "eel"] * 20)
    np.savez(tmp_path / "a.npz", pixels=x[:30], kind=labels[:30])
    np.savez(tmp_path / "b.npz", pixels=x[30:], kind=labels[30:])
    cfg = FilesData(name="files", path=str(tmp_path), label_column="kind", feature_shape=[1, 4, 4])
    arrays = data.load_arrays(cfg, seed=0)
    assert arrays.x.shape == (60, 1, 4, 4) and arrays.label_names == ["cat", "dog", "eel"]
    assert np.allclose(arrays.x.reshape(60, 16), x) and list(arrays.y[:3]) == [0, 1, 2]


def test_table_features_keep_the_file_column_order_and_are_recorded(tmp_path):
    # a client sends a row in the order of the file's header, so that is the order the model learns
    rng = np.random.default_rng(0)
    cols = {"width": rng.random(20), "area": rng.random(20), "label": np.arange(20) % 2, "mass": rng.random(20)}
    np.savez(tmp_path / "t.npz", **cols)
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "t.npz")), seed=0)
    assert arrays.feature_columns == ["width", "area", "mass"]
    assert np.allclose(arrays.x, np.stack([cols["width"], cols["area"], cols["mass"]], axis=1))
    picked = FilesData(name="files", path=str(tmp_path / "t.npz"), feature_columns=["mass", "width"])
    assert data.load_arrays(picked, seed=0).feature_columns == ["mass", "width"]
    assert data.load_arrays(data.DigitsData(name="digits"), seed=0).feature_columns is None


def test_npz_files_with_other_arrays_are_refused_by_name(tmp_path):
    np.savez(tmp_path / "a.npz", x=np.ones((4, 2)), label=np.arange(4) % 2)
    np.savez(tmp_path / "b.npz", x=np.ones((4, 2)))
    with pytest.raises(DataError, match=r"b\.npz holds arrays \['x'\], .*a\.npz holds \['x', 'label'\]"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path)), seed=0)


def test_npz_arrays_named_for_their_splits_keep_them(tmp_path, capsys):
    """Keras' mnist.npz holds x_train, y_train, x_test, y_test: it had been refused ("label column 'label' not in
    the data; columns: ['x_train', ...]"), and naming one array the label could not join the splits."""
    rng = np.random.default_rng(0)
    x, y = rng.random((50, 4, 4)).astype(np.float32), np.arange(50) % 2
    np.savez(tmp_path / "keras.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:], y_test=y[40:])
    np.savez(tmp_path / "named.npz", train_images=x[:40], train_labels=y[:40], Test_images=x[40:],
             Test_labels=y[40:])  # the split first, in any case
    for name, label in (("keras.npz", "y"), ("named.npz", "labels")):
        cfg = FilesData(name="files", path=str(tmp_path / name), label_column=label)
        arrays = data.load_arrays(cfg, seed=0)
        assert np.array_equal(arrays.x, x) and list(arrays.split) == [0] * 40 + [2] * 10, name
        assert "each row in the split named by its arrays' names (x_train, ...)" in capsys.readouterr().out
    splits = data.load_splits(FilesData(name="files", path=str(tmp_path / "keras.npz"), label_column="y"), seed=0)
    (test_x, _), (train_x, _), (val_x, _) = (splits.arrays[k] for k in ("test", "train", "val"))
    assert np.array_equal(test_x, x[40:]) and len(train_x) + len(val_x) == 40
    with pytest.raises(DataError, match=r"label column 'label' not in the data; columns: \['x', 'y'\]; name the "
                                        r"column to predict in data.label_column \('y'\?\)"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "keras.npz")), seed=0)
    np.savez(tmp_path / "unlabelled.npz", x_train=x[:40], y_train=y[:40], x_test=x[40:])
    with pytest.raises(DataError, match=r"the NPZ's test arrays are \['x_test'\], its train arrays \['x_train', "
                                        r"'y_train'\]: every split needs arrays of the same names"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "unlabelled.npz"), label_column="y"), seed=0)
    np.savez(tmp_path / "short.npz", x_train=x[:40], y_train=y[:39], x_test=x[40:], y_test=y[40:])
    with pytest.raises(DataError, match=r"train arrays hold different numbers of rows \(x_train 40, y_train 39\)"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "short.npz"), label_column="y"), seed=0)
    # arrays of other names are columns, as they were; arrays of one split are x and y, the split drawn
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    np.savez(tmp_path / "train.npz", x_train=x, y_train=y)
    for name in ("plain.npz", "train.npz"):
        arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / name), label_column="y"), 0)
        assert arrays.split is None and arrays.feature_columns == ["x"], name


def idx_bytes(array: np.ndarray) -> bytes:
    """An array as an IDX file holds it (MNIST's format): zero, zero, the type's code, the dimensions, big-endian."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}[array.dtype]
    return bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes() + array.tobytes()


def test_mnist_idx_files_are_read_with_their_splits(tmp_path, capsys):
    """MNIST, Fashion-MNIST and KMNIST come as IDX files (train-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz),
    which torchvision leaves in MNIST/raw, each beside its unpacked copy: they had been refused ("cannot tell the
    format of ...train-images-idx3-ubyte from its name"). Now the images and labels are columns `image` and
    `label`, the default label column, each row in its file's split (t10k: test)."""
    import gzip

    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 256, (60, 6, 5), dtype=np.uint8), (np.arange(60) % 3).astype(np.uint8)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name, array in [("train-images-idx3-ubyte", x[:45]), ("train-labels-idx1-ubyte", y[:45]),
                        ("t10k-images-idx3-ubyte", x[45:]), ("t10k-labels-idx1-ubyte", y[45:])]:
        (raw / name).write_bytes(idx_bytes(array))
        (raw / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
    (raw / "README.txt").write_text("MNIST, as torchvision downloads it")
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "MNIST")), seed=0)
    assert np.array_equal(arrays.x, x) and np.array_equal(arrays.y, y) and arrays.label_names == ["0", "1", "2"]
    assert list(arrays.split) == [0] * 45 + [2] * 15 and arrays.feature_columns == ["image"]
    assert "split named by its files' names (train-images-idx3-ubyte, t10k-...)" in capsys.readouterr().out
    splits = data.load_splits(FilesData(name="files", path=str(raw)), seed=0)
    assert np.array_equal(splits.arrays["test"][0], x[45:]) and splits.num_rows["train"] + splits.num_rows["val"] == 45
    # one file alone (rows to predict), gzipped or not, and a name with a dot (Kaggle's train-images.idx3-ubyte)
    rows = datafiles.read_rows(str(raw / "t10k-images-idx3-ubyte.gz"))
    assert len(rows) == 15 and np.array_equal(rows[3]["image"], x[48].tolist())
    assert datafiles.infer_format("archive/train-images.idx3-ubyte") == "idx"
    # wider types, big-endian in the file, are read as numbers, not bytes
    (tmp_path / "wide").mkdir()
    (tmp_path / "wide" / "images-idx2-ubyte").write_bytes(idx_bytes(np.arange(12, dtype=">f4").reshape(4, 3)))
    (tmp_path / "wide" / "labels-idx1-ubyte").write_bytes(idx_bytes(np.array([7, 300, 7, 300], ">i4")))
    wide = data.load_arrays(FilesData(name="files", path=str(tmp_path / "wide")), seed=0)
    assert np.array_equal(wide.x, np.arange(12).reshape(4, 3)) and wide.label_names == ["7", "300"]


@pytest.mark.parametrize("files, message", [
    ({"train-images-idx3-ubyte": idx_bytes(np.zeros((4, 2, 2), np.uint8))[:-3],
      "train-labels-idx1-ubyte": idx_bytes(np.zeros(4, np.uint8))},
     r"train-images-idx3-ubyte holds 13 bytes of values where its header says \[4, 2, 2\] uint8 values: is it cut"),
    ({"train-images-idx3-ubyte": b"\x1f\x8b\x08\x00 gzip, named as if unpacked"},
     r"train-images-idx3-ubyte is not an IDX file: it does not start with IDX's magic number"),
    ({"train-images-idx3-ubyte": b"\0\0\x08\x03\0\0"}, r"is not an IDX file"),  # its dimensions cut short
    ({"train-images-idx3-ubyte.gz": b"not gzip"}, r"cannot read .*train-images-idx3-ubyte.gz: "),
    ({f"emnist-{kind}-train-{part}-idx{n}-ubyte": idx_bytes(np.zeros((4,) + (2,) * (n - 1), np.uint8))
      for kind in ("digits", "letters") for part, n in (("images", 3), ("labels", 1))},
     r"2 IDX files hold images of the train split \(emnist-digits-train-images-idx3-ubyte, "
     r"emnist-letters-train-images-idx3-ubyte\): give data.path a folder of one dataset's files"),
])
def test_idx_files_that_cannot_be_read_are_named(tmp_path, files, message):
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.load_arrays(FilesData(name="files", path=str(tmp_path)), seed=0)


class _Marks:
    """A pickle that, loaded, writes a file: how a data file could run code where it is unpickled."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "unpickled"))


def test_python_pickles_are_refused_unread(tmp_path):
    """CIFAR-10's python batches (data_batch_1, ..., named for no format) and .pkl/.pt files are pickles, which run
    code as they load: each is refused, unread, with what to give instead; before, "cannot tell the format"."""
    import pickle

    marker = tmp_path / "ran"
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for name in ("data_batch_1", "test_batch"):
        (batches / name).write_bytes(pickle.dumps({b"data": _Marks(marker), b"labels": [0]}, protocol=2))
    (batches / "readme.html").write_text("<html></html>")
    with pytest.raises(DataError, match=r"data_batch_1 is a Python pickle, which is not read: unpickling runs "
                                        r"whatever code the file holds. Save its arrays with numpy"):
        data.load_arrays(FilesData(name="files", path=str(batches)), seed=0)
    (tmp_path / "table.pkl").write_bytes(pickle.dumps(_Marks(marker)))
    with pytest.raises(DataError, match=r"table\.pkl is a Python pickle"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "table.pkl")), seed=0)
    with pytest.raises(DataError, match=r"is a Python pickle"):  # rows to predict, of a model trained on a CSV
        datafiles.format_of(str(tmp_path / "table.pkl"), "csv")
    assert not marker.exists()


def test_a_zip_archive_is_read_as_the_folder_it_packs(tmp_path, capsys):
    import zipfile

    from orchestrator.errors import StorageError

    rng = np.random.default_rng(0)
    folder = tmp_path / "titanic"
    folder.mkdir()
    for split, n in (("train", 60), ("test", 20)):
        x = rng.normal(size=(n, 2))
        rows = "".join(f"{a:.3f},{b:.3f},{int(a > b)}\n" for a, b in x)
        (folder / f"{split}.csv").write_text("a,b,Survived\n" + rows)
    (folder / "gender_submission.csv").write_text("PassengerId,Survived\n1,0\n")
    (tmp_path / "evil.csv").write_text("a,b,Survived\n9,9,1\n")  # on disk, beside the archive
    with zipfile.ZipFile(tmp_path / "titanic.zip", "w") as z:  # as Kaggle's API downloads a competition
        for f in sorted(folder.iterdir()):
            z.write(f, f.name)
        z.writestr("../evil.csv", "a,b,Survived\n1,1,0\n")  # a name reaching outside: read from the archive
    with zipfile.ZipFile(tmp_path / "wrapped.zip", "w") as z:  # a folder packed with its name, zipped on a Mac
        for f in sorted(folder.iterdir()):
            z.write(f, f"titanic/{f.name}")
        z.writestr("__MACOSX/titanic/._train.csv", b"\x00\x05")

    def splits(path):
        return data.load_splits(FilesData(name="files", path=path, label_column="Survived"), 0)

    # ../evil.csv is neither the file on disk nor read from the archive: a name starting with a dot is left out
    for packed, unpacked in ((tmp_path / "titanic.zip", folder), (tmp_path / "wrapped.zip", folder),
                             (tmp_path / "titanic.zip" / "train.csv", folder / "train.csv")):  # a file in it, alone
        read, want = splits(str(packed)), splits(str(unpacked))
        assert read.num_rows == want.num_rows, packed
        for split, (x, y) in want.arrays.items():
            assert np.array_equal(read.arrays[split][0], x) and np.array_equal(read.arrays[split][1], y), packed
    assert "gender_submission.csv under " + str(tmp_path / "wrapped.zip") + " not read" in capsys.readouterr().out
    (folder / "test.csv").write_text("a,b\n1,2\n")
    with zipfile.ZipFile(tmp_path / "titanic.zip", "w") as z:  # Kaggle's: a test.csv without the label
        for name in ("train.csv", "test.csv"):
            z.write(folder / name, name)
    splits(str(tmp_path / "titanic.zip"))
    assert f"data: {tmp_path / 'titanic.zip' / 'test.csv'} not read: it has no 'Survived' column" in \
        capsys.readouterr().out  # its files named below the archive, as unpacked files are
    import io
    from PIL import Image

    pngs = {}
    for name in ("cat/1.png", "dog/2.png"):  # the images of predict --input cats-and-dogs.zip, named in it
        out = io.BytesIO()
        Image.new("L", (4, 4), len(pngs)).save(out, format="PNG")
        pngs[name] = out.getvalue()
    with zipfile.ZipFile(tmp_path / "images.zip", "w") as z:
        for name, raw in pngs.items():
            z.writestr(name, raw)
    names, contents = datafiles.read_image_files(str(tmp_path / "images.zip"))
    assert names == [str(tmp_path / "images.zip" / name) for name in pngs] and contents == list(pngs.values())
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04")
    with pytest.raises(StorageError, match=r"cannot read .*broken\.zip as a zip archive: File is not a zip file"):
        splits(str(tmp_path / "broken.zip"))
    with pytest.raises(DataError, match=r"data path .*titanic\.zip/valid\.csv' does not exist"):
        splits(str(tmp_path / "titanic.zip" / "valid.csv"))


def test_hugging_face_save_to_disk_folders_are_read_with_their_splits(tmp_path, capsys):
    """`DatasetDict.save_to_disk(path)` writes train/ and test/, each an Arrow stream (.arrow) beside
    dataset_info.json and state.json, and dataset_dict.json above them: the JSON files had made the format json
    ("dataset_dict.json is not a table in JSON") and the stream was refused by the Arrow file reader. Now the
    descriptions are left out, files of other kinds (a README) too, and said, and the streams read."""
    import json

    import pyarrow as pa
    import pyarrow.ipc

    rng = np.random.default_rng(0)
    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "test"]}))
    (tmp_path / "ds" / "README.md").write_text("# my dataset")
    tables = {}
    for split, n in (("train", 40), ("test", 10)):
        (tmp_path / "ds" / split).mkdir()
        a = rng.normal(size=n)
        tables[split] = pa.table({"a": a, "label": (a > 0).astype(np.int64)})
        with pa.OSFile(str(tmp_path / "ds" / split / "data-00000-of-00001.arrow"), "wb") as f:
            with pyarrow.ipc.new_stream(f, tables[split].schema) as stream:
                stream.write_table(tables[split])
        (tmp_path / "ds" / split / "dataset_info.json").write_text("{}")
        (tmp_path / "ds" / split / "state.json").write_text(json.dumps({"_data_files": []}))
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "ds")), seed=0)
    expected = np.concatenate([tables["test"]["a"].to_numpy(), tables["train"]["a"].to_numpy()])  # in name order
    assert np.allclose(arrays.x[:, 0], expected) and list(arrays.split) == [2] * 10 + [0] * 40
    assert "data: 1 file(s) under " in (out := capsys.readouterr().out) and "not read, their names saying no file " \
        "of the data's format (feather): README.md" in out
    # pandas' to_feather (the Arrow file format) is read as before
    pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": [0, 1, 0]}).to_feather(tmp_path / "t.feather")
    assert data.load_arrays(FilesData(name="files", path=str(tmp_path / "t.feather")), 0).x[:, 0].tolist() == [1, 2, 3]


def write_texts(root: Path, texts: dict[str, str]) -> None:
    for name, text in texts.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)


def test_folders_of_text_files_a_directory_per_class_are_read_as_texts(tmp_path, capsys):
    """IMDB's aclImdb (train/pos/0_9.txt, train/neg/..., test/..., and beside them train/unsup/, urls_pos.txt, a
    README), a folder of class directories (BBC's bbc/sport/001.txt) and 20 Newsgroups' (20news-bydate-train/
    sci.space/60804, named by number: data.format texts) had been refused ("cannot tell the format of ...README").
    Now each file is one text, the input (data.text_column `text`), in the class its directory names."""
    reviews = {f"aclImdb/{split}/{label}/{i}_{i % 10}.txt": f"{label} review {i} of the {split} split"
               for split in ("train", "test") for label in ("pos", "neg") for i in range(6 if split == "train" else 3)}
    write_texts(tmp_path, {**reviews, "aclImdb/README": "Large Movie Review Dataset", "aclImdb/imdb.vocab": "the\n",
                           "aclImdb/train/urls_pos.txt": "http://...", "aclImdb/train/unsup/0_0.txt": "no label"})
    splits = data.load_splits(FilesData(name="files", path=str(tmp_path / "aclImdb")), seed=0)
    assert splits.label_names == ["neg", "pos"] and splits.text_column == "text" and splits.input_dtype == "int64"
    assert splits.num_rows["test"] == 6 and splits.num_rows["train"] + splits.num_rows["val"] == 12
    x, y = splits.arrays["test"]
    texts = [bytes((row[row > 0] - 1).tolist()).decode() for row in x]  # token ids: a byte + 1; 0 pads
    assert sorted(texts) == sorted(t for n, t in reviews.items() if "/test/" in n)
    assert all(text.startswith(splits.label_names[label]) for text, label in zip(texts, y))
    out = capsys.readouterr().out
    assert "2 file(s) under" in out and "README, imdb.vocab" in out  # named for no format, or another
    assert "data: 2 file(s) not read, in no class directory or in one of texts without a class (unsup/, " \
           "unlabeled/, unlabelled/): train/unsup/0_0.txt, train/urls_pos.txt" in out
    # a folder of class directories, split at random; 20 Newsgroups' files named by number, with data.format
    write_texts(tmp_path, {f"bbc/{label}/{i:03}.txt": f"{label} news {i}" for label in ("sport", "tech")
                           for i in range(10)})
    assert data.load_arrays(FilesData(name="files", path=str(tmp_path / "bbc")), 0).split is None
    write_texts(tmp_path, {f"news/20news-bydate-{split}/{group}/{60000 + i}": f"{group} {i}"
                           for split in ("train", "test") for group in ("sci.space", "rec.autos") for i in range(5)})
    news = data.load_arrays(FilesData(name="files", path=str(tmp_path / "news"), format="texts"), 0)
    assert news.label_names == ["rec.autos", "sci.space"] and sorted(news.split.tolist()) == [0] * 10 + [2] * 10
    # text that is not in data.encoding is named; a folder of texts in no class directory says how to lay it out
    (tmp_path / "bbc" / "sport" / "010.txt").write_bytes("Café".encode("latin-1"))
    with pytest.raises(DataError, match=r"sport/010\.txt is not utf-8 text .*: set data.encoding"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "bbc")), 0)
    assert len(data.load_arrays(FilesData(name="files", path=str(tmp_path / "bbc"), encoding="latin-1"), 0).y) == 21
    write_texts(tmp_path, {"banknotes.txt": "3.6,8.6,-2.8,-0.4,0\n4.5,8.1,-2.4,-1.4,0\n"})  # UCI's: a table
    with pytest.raises(DataError, match=r"banknotes\.txt' is one text file, .*: if it holds a table, set data.format: "
                                        r"csv \(or tsv\)"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "banknotes.txt")), 0)
    assert data.load_arrays(FilesData(name="files", path=str(tmp_path / "banknotes.txt"), format="csv",
                                      label_column="column5"), 0).x.shape == (2, 4)
    write_texts(tmp_path, {"flat/a.txt": "one", "flat/b.txt": "two"})
    with pytest.raises(DataError, match=r"holds no text files in class directories: put each text in a directory"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "flat")), 0)


def test_a_missing_label_is_named_by_the_test_file_beside_the_training_file(tmp_path):
    """Kaggle's test.csv beside train.csv holds every column but the label: where data.label_column is not in the
    data, that column is the one suggested (`orchestrator train titanic/train.csv` with no YAML says
    "('Survived', the one column test.csv lacks?)"); without such a file, the message is as before."""
    (tmp_path / "train.csv").write_text("PassengerId,Survived,Age\n1,0,22\n2,1,38\n")
    with pytest.raises(DataError, match=r"name the column to predict in data.label_column$"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "train.csv")), 0)
    (tmp_path / "test.csv").write_text("PassengerId,Age\n3,40\n")
    with pytest.raises(DataError, match=r"data.label_column \('Survived', the one column test.csv lacks\?\)"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "train.csv")), 0)
    (tmp_path / "ECG_TRAIN.tsv").write_text("a\tb\tclass_id\n1\t2\t0\n")
    (tmp_path / "ECG_TEST.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(DataError, match=r"\('class_id', the one column ECG_TEST.tsv lacks\?\)"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "ECG_TRAIN.tsv")), 0)
    (tmp_path / "kaggle").mkdir()  # the competition's folder given, its label not named: that column suggested
    for name in ("train.csv", "test.csv"):
        (tmp_path / "kaggle" / name).write_text((tmp_path / name).read_text())
    with pytest.raises(DataError, match=r"label column 'label' not in the data; columns: \['PassengerId', 'Survived', "
                                         r"'Age'\]; name the column to predict in data.label_column \('Survived', the "
                                         r"one column .*kaggle/test.csv lacks\?\)"):
        data.load_splits(FilesData(name="files", path=str(tmp_path / "kaggle")), 0)
    (tmp_path / "jigsaw").mkdir()  # a label each: Kaggle's toxic comments
    (tmp_path / "jigsaw" / "train.csv").write_text("id,comment_text,toxic,insult\n1,hi there,0,0\n2,you fool,1,1\n")
    (tmp_path / "jigsaw" / "test.csv").write_text("id,comment_text\n3,hello\n")
    with pytest.raises(DataError, match=r"\(one of \['toxic', 'insult'\], the columns test.csv lacks: a model predicts "
                                         r"one label, so train one model for each\?\)"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "jigsaw" / "train.csv")), 0)


def test_a_hugging_face_dataset_repository_keeps_its_splits_less_the_unlabelled_one(tmp_path, capsys):
    """A dataset's repository on the Hugging Face Hub keeps each split's Parquet below data/ and marks the rows of a
    split without labels (GLUE's test splits) -1: the files' names had been missed below a folder that says no
    split (every split read as one table), and -1 read as a third class of SST-2's two."""
    rng = np.random.default_rng(0)
    (tmp_path / "sst2" / "data").mkdir(parents=True)
    for split, n in (("train", 120), ("validation", 40), ("test", 30)):
        label = rng.integers(0, 2, n) if split != "test" else np.full(n, -1)
        pd.DataFrame({"idx": np.arange(n), "x": rng.normal(size=n), "label": label}).to_parquet(
            tmp_path / "sst2" / "data" / f"{split}-00000-of-00001.parquet")
    read = data.load_splits(FilesData(name="files", path=str(tmp_path / "sst2")), 0)
    assert read.num_rows["val"] == 40 and sum(read.num_rows.values()) == 160 and read.label_names == ["0", "1"]
    said = capsys.readouterr().out
    assert "test-00000-of-00001.parquet not read: it marks every row's 'label' -1, as Hugging Face's datasets mark " \
           "a row without a label" in said
    assert "columns ['idx'] hold a different whole number in every row" in said  # each split counts from 0
    assert data.counts_rows(np.r_[np.arange(30), np.arange(30)]) and not data.counts_rows(np.r_[np.arange(30), 5])
    assert not data.counts_rows(np.arange(60) % 5)  # a cycle (stars 0 to 4, again and again): no id


def test_the_storage_inside_the_datas_folder_is_not_read_as_data(tmp_path, monkeypatch):
    """`orchestrator train .` in Kaggle's folder writes runs/ beside train.csv; the next training read runs/ too:
    "checkpoint_manager_snapshot.json is not a table in JSON". A storage root is marked when written to, and
    reading data leaves it out with all below it."""
    from orchestrator import storage

    (tmp_path / "train.csv").write_text("x,label\n" + "".join(f"{i},{i % 2}\n" for i in range(40)))
    storage.check_writable(str(tmp_path / "runs"), mark=True)
    for name in ("run-1/checkpoint_manager_snapshot.json", "run-1/a.json", "registry/m/versions/0001/record.json"):
        (tmp_path / "runs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "runs" / name).write_text("{}")
    assert (tmp_path / "runs" / storage.STORAGE_MARK).is_file()
    assert sum(data.load_splits(FilesData(name="files", path=str(tmp_path)), 0).num_rows.values()) == 40
    storage.check_writable(str(tmp_path / "out"))  # a folder written to for another reason stays unmarked
    assert list((tmp_path / "out").iterdir()) == []
    monkeypatch.chdir(tmp_path)
    from orchestrator.config import load_config
    assert load_config(".").name == tmp_path.name  # named for the folder, not "data"


def test_a_missing_label_is_named_by_a_last_column_of_few_values(tmp_path):
    """iris.csv keeps its class last, in a column named for what it is ('species'): that column is suggested
    where it holds few values, as classes do, and not where it holds ids, amounts or text."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2)).round(3)
    kinds = ["setosa", "versicolor", "virginica"] * 10
    (tmp_path / "iris.csv").write_text("a,b,species\n" + "".join(f"{a},{b},{k}\n" for (a, b), k in zip(x, kinds)))
    with pytest.raises(DataError, match=r"data.label_column \('species', the last column, of 3 values\?\)$"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "iris.csv")), 0)
    (tmp_path / "prices.csv").write_text("a,price\n" + "".join(f"{a},{b}\n" for a, b in x))
    with pytest.raises(DataError, match=r"name the column to predict in data.label_column$"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "prices.csv")), 0)


def test_a_column_the_data_lacks_is_named_with_the_one_meant():
    from orchestrator.datafiles import not_in_data

    columns = ["PassengerId", "Survived", "Pclass", " Age "]
    assert str(not_in_data("label column 'survived'", ["survived"], columns, "fix")).endswith(
        "columns: ['PassengerId', 'Survived', 'Pclass', ' Age ']; did you mean 'Survived'?")
    assert str(not_in_data("feature columns", ["age", "Pclas"], columns, "fix")).endswith(
        "did you mean ' Age ', 'Pclass'?")
    assert str(not_in_data("feature columns", ["fare"], columns, "name them")).endswith("' Age ']; name them")
    wide = [f"pixel{i}" for i in range(784)]
    message = str(not_in_data("label column 'label'", ["label"], wide, "name it"))
    assert "'pixel29', ... (784 in all)]; name it" in message and "pixel30'" not in message


def test_npz_with_pickled_objects_is_refused(tmp_path):
    np.savez(tmp_path / "evil.npz", x=np.array([{"a": 1}], dtype=object), label=np.array([1]))
    with pytest.raises(DataError, match="plain-array"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "evil.npz")), seed=0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"path": "/nonexistent/data.npz"}, "data path '/nonexistent/data.npz' does not exist: set data.path"),
        ({"path": "nonexistent/d.csv"}, "data path 'nonexistent/d.csv' does not exist (a relative path is read from "
         "the working directory, "),  # a config's path is not read from the config's directory
        ({"label_column": "nope"}, "label column 'nope' not in the data"),
        ({"feature_columns": ["nope"]}, "feature columns ['nope'] not in the data"),
        ({"feature_shape": [3, 3]}, "does not fit samples"),
    ],
)
def test_file_data_errors_say_what_to_change(tmp_path, kwargs, message):
    np.savez(tmp_path / "d.npz", x=np.ones((10, 4), np.float32), label=np.arange(10) % 2)
    cfg = FilesData(name="files", **{"path": str(tmp_path / "d.npz"), **kwargs})
    with pytest.raises(DataError) as e:
        data.load_arrays(cfg, seed=0)
    assert message in str(e.value)


@pytest.mark.parametrize("labels", [
    np.array(["a", "", "b", "a"] * 5),  # a CSV reader's blank text
    np.array([0.0, 1.0, np.nan, 1.0] * 5),  # a blank in a column of numbers
    np.array(["a", None, "b", "a"] * 5, dtype=object),  # Parquet's null
])
def test_rows_without_a_label_are_left_out_and_said(labels, capsys):
    columns = {"x": np.arange(20, dtype=np.float32), "label": labels}  # as the Parquet, CSV and NPZ readers give them
    arrays = data._columns_to_arrays(columns, FilesData(name="files", path="d.csv"))
    blank = np.flatnonzero(tablefiles.blank_cells(labels))
    assert arrays.x[:, 0].tolist() == [i for i in range(20) if i not in blank]  # the labelled rows, in order
    assert len(arrays.y) == 15 and "" not in arrays.label_names and "nan" not in arrays.label_names
    assert (f"data: 5 of 20 rows have no 'label' (the first is row {blank[0] + 1} of the data): left out"
            in capsys.readouterr().out)


def test_a_row_named_in_an_error_is_the_datas_row_after_unlabelled_ones_are_left_out():
    x = np.zeros(20)
    x[7] = np.inf
    labels = np.array(["a", "", "b", "a"] * 5)  # rows 2, 6, ... have no label: row 8 is the 6th labelled one
    with pytest.raises(DataError, match="the first is row 8 of the data"):
        data._columns_to_arrays({"x": x, "label": labels}, FilesData(name="files", path="d.csv"))


@pytest.mark.parametrize("labels, message", [
    (np.array([None] * 20, dtype=object), "label column 'label' is empty in every row: is data.label_column the right"),
    (np.linspace(0, 1, 20), "holds fractional numbers (0.0526316): models here classify"),  # a regression target
])
def test_labels_that_cannot_be_classes_are_refused(labels, message):
    columns = {"x": np.ones(20, np.float32), "label": labels}
    with pytest.raises(DataError) as e:
        data._columns_to_arrays(columns, FilesData(name="files", path="d.csv"))
    assert message in str(e.value)


@pytest.mark.parametrize("labels, message", [  # 40 rows
    (np.arange(40) * 1000 + 95_000, "label column 'label' holds 40 different values in 40 rows, 40 of them in one row "
     "only: each value is a class, and a class of one row cannot be both learned and tested. The models here "
     "classify, and do not predict amounts (regression): to predict 'label', give each row a class"),  # prices
    (np.array([f"user{i}" for i in range(30)] + ["user0"] * 10, dtype=object),
     "holds 30 different values in 40 rows, 29 of them in one row only: each value is a class, and a class of one "
     "row cannot be both learned and tested. Is it the column to predict?"),  # an id, not a label
])
def test_a_label_of_mostly_one_row_values_is_refused(labels, message):
    columns = {"x": np.arange(40, dtype=np.float32), "label": labels}
    with pytest.raises(DataError) as e:
        data._columns_to_arrays(columns, FilesData(name="files", path="d.csv"))
    assert message in str(e.value)


def test_a_label_of_many_numbers_is_noted_and_of_few_rows_each_is_read(capsys):
    columns = {"x": np.arange(300, dtype=np.float32), "age": np.arange(300) % 30 + 18}  # 30 ages, 10 rows each
    arrays = data._columns_to_arrays(columns, FilesData(name="files", path="d.csv", label_column="age"))
    assert len(arrays.label_names) == 30
    assert "label column 'age' holds 30 different numbers, each a class: a prediction of 18 for 19 counts as wrong" \
        in capsys.readouterr().out
    few = {"x": np.arange(300, dtype=np.float32), "kind": np.array([f"k{i % 12}" for i in range(300)], dtype=object)}
    data._columns_to_arrays(few, FilesData(name="files", path="d.csv", label_column="kind"))  # 12 classes of text
    assert "different numbers" not in capsys.readouterr().out
    for first in (0, 1):  # class codes, as CIFAR-100 numbers its 100 classes: no note
        codes = {"x": np.arange(300, dtype=np.float32), "label": np.arange(300) % 30 + first}
        assert len(data._columns_to_arrays(codes, FilesData(name="files", path="d.csv")).label_names) == 30
        assert "different numbers" not in capsys.readouterr().out


def test_values_that_differ_only_in_case_or_spaces_are_noted(capsys):
    columns = {"x": np.arange(40, dtype=np.float32), "city": np.array(["NY", "ny ", "Boston", "LA"] * 10, dtype=object),
               "label": np.array(["Yes", "yes", "No", " no"] * 10, dtype=object)}
    arrays = data._columns_to_arrays(columns, FilesData(name="files", path="d.csv"))
    assert arrays.label_names == [" no", "No", "Yes", "yes"]  # read as written: the note says so, nothing merged
    out = capsys.readouterr().out
    assert ("data: column 'city' holds values that differ only in case or spaces, 'NY', 'ny ': different categories "
            "here; if each group is one value, write it alike") in out
    assert ("data: label column 'label' holds values that differ only in case or spaces, ' no', 'No'; 'Yes', 'yes': "
            "different classes here; if each group is one class, write it alike") in out
    data._columns_to_arrays({**columns, "city": np.array(["NY", "Boston"] * 20, dtype=object),
                             "label": np.array(["yes", "no"] * 20, dtype=object)}, FilesData(name="files", path="d.csv"))
    assert "differ only" not in capsys.readouterr().out


def test_training_on_a_single_class_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.ones((20, 3), np.float32), label=np.zeros(20, np.int64))
    with pytest.raises(DataError, match=r"the labels hold one class \('0' in every row\)"):
        data.load_splits(FilesData(name="files", path=str(tmp_path / "d.npz")), seed=0)


def test_integral_float_labels_are_named_as_integers():
    columns = {"x": np.ones(20, np.float32), "label": np.array([2.0, 10.0] * 10)}  # CSV's floats, say
    assert data._columns_to_arrays(columns, FilesData(name="files", path="d.csv")).label_names == ["2", "10"]


def test_splits_of_tiny_data_fall_back_to_random_and_refuse_too_few_rows():
    train, val, test = split_indices(np.array([0, 1] * 3), 0.15, 0.15, seed=0)  # too few to stratify
    assert sorted([*train, *val, *test]) == list(range(6)) and len(val) == len(test) == 1
    with pytest.raises(DataError, match="2 rows are too few to split"):
        split_indices(np.array([0, 1]), 0.15, 0.15, seed=0)


def _split_table(tmp_path, splits) -> Path:
    """A table whose rows' splits are named in column 'split' and whose days run in file order, shuffled."""
    rng = np.random.default_rng(0)
    n = len(splits)
    df = pd.DataFrame({"day": pd.date_range("2024-01-01", periods=n, freq="D").strftime("%d.%m.%Y"),
                       "x": rng.normal(size=n), "split": splits, "label": rng.choice(["a", "b"], n)})
    df.sample(frac=1, random_state=0).to_csv(tmp_path / "t.csv", index=False)
    return tmp_path / "t.csv"


def test_a_split_column_puts_each_row_in_the_split_it_names(tmp_path, capsys):
    names = ["train", "Train", " TRAIN", "val", "Validation", "dev", "test", "Test"] * 25
    table = pd.read_csv(_split_table(tmp_path, names))
    splits = data.load_splits(FilesData(name="files", path=str(tmp_path / "t.csv"), split_column="split"), 0)
    assert splits.feature_columns == ["day", "x"]  # the split column is not a feature
    expected = {split: table[table.split.str.strip().str.lower().isin(words)] for split, words in
                zip(("train", "val", "test"), SPLIT_NAMES)}
    for split, rows in expected.items():  # the very rows, in the file's order
        np.testing.assert_array_equal(splits.arrays[split][0][:, -1], rows.x.to_numpy(np.float32), err_msg=split)
    assert splits.num_rows == {"train": 75, "val": 75, "test": 50}
    assert "each row in the split named by data.split_column 'split'" in capsys.readouterr().out
    # a fixed test set alone: val drawn from the train rows, stratified, as a random split draws it
    _split_table(tmp_path, ["train"] * 170 + ["test"] * 30)
    splits = data.load_splits(FilesData(name="files", path=str(tmp_path / "t.csv"), split_column="split"), 0)
    assert splits.num_rows == {"train": 144, "val": 26, "test": 30}
    assert "val drawn from the train rows (data.val_fraction)" in capsys.readouterr().out
    # the split is part of the data: another split is another fingerprint
    other = data.load_splits(FilesData(name="files", path=str(_split_table(tmp_path, ["train"] * 160 + ["test"] * 40)),
                                       split_column="split"), 0)
    assert other.fingerprint != splits.fingerprint and other.num_rows["test"] == 40


def test_a_directory_of_train_and_test_files_keeps_their_split(tmp_path, capsys):
    # as datasets ship (train.csv and test.csv), or as Spark writes each split (train/part-0.csv, ...)
    rng = np.random.default_rng(0)
    frames = {split: pd.DataFrame({"x": rng.normal(size=n), "kind": rng.choice(["p", "q"], n),
                                   "label": rng.choice(["a", "b"], n)}) for split, n in (("train", 170), ("test", 30))}
    layouts = {"files": {"train.csv": frames["train"], "test.csv": frames["test"]},  # test.csv listed first
               "dated": {"Train_2023.csv": frames["train"], "test_2024.csv": frames["test"]},
               "named": {"mnist_train.csv": frames["train"], "mnist_TEST.csv": frames["test"]},  # Kaggle's, UCR's
               "parts": {"train/part-0.csv": frames["train"][:100], "train/part-1.csv": frames["train"][100:],
                         "test/part-0.csv": frames["test"]}}
    for layout, files in layouts.items():
        for name, frame in files.items():
            (tmp_path / layout / name).parent.mkdir(parents=True, exist_ok=True)
            frame.to_csv(tmp_path / layout / name, index=False)
        splits = data.load_splits(FilesData(name="files", path=str(tmp_path / layout)), 0)
        assert splits.num_rows == {"train": 144, "val": 26, "test": 30}, layout
        np.testing.assert_array_equal(splits.arrays["test"][0][:, 0], frames["test"].x.to_numpy(np.float32))
        assert "each row in the split named by its file (train.csv, test.csv, ...)" in capsys.readouterr().out
    # a test file without labels (Kaggle's test.csv) is rows to predict, not a test split: left out, and said (it
    # had been refused); a Kaggle competition's form for answers beside it (ids and the label) is not data either
    frames["test"].drop(columns="label").to_csv(tmp_path / "files" / "test.csv", index=False)
    frames["test"][["label"]].to_csv(tmp_path / "files" / "sample_submission.csv", index_label="id")
    kaggle = data.load_splits(FilesData(name="files", path=str(tmp_path / "files")), 0)
    assert sum(kaggle.num_rows.values()) == 170 and kaggle.num_rows["test"] > 0  # drawn from train.csv's rows
    said = capsys.readouterr().out
    assert "data: sample_submission.csv under " in said
    assert f"data: {tmp_path / 'files' / 'test.csv'} not read: it has no 'label' column, the label, so its rows are " \
           "to predict (`orchestrator predict CHECKPOINT --input FILE`), not to test on" in said
    (tmp_path / "swapped").mkdir()
    frames["train"].drop(columns="label").to_csv(tmp_path / "swapped" / "train.csv", index=False)
    frames["test"].to_csv(tmp_path / "swapped" / "test.csv", index=False)
    with pytest.raises(DataError, match=r"train\.csv, the train split, has no 'label' column, the label: name the "):
        data.load_splits(FilesData(name="files", path=str(tmp_path / "swapped")), 0)
    (tmp_path / "files" / "sample_submission.csv").unlink()
    # files named otherwise are one table, split at random as before
    for i, name in enumerate(("train.csv", "test.csv")):
        (tmp_path / "files" / name).rename(tmp_path / "files" / f"part-{i}.csv")
    frames["test"].to_csv(tmp_path / "files" / "part-1.csv", index=False)
    from orchestrator.splits import split_word
    assert [split_word(n) for n in ("contest.csv", "train_test.csv", "latest.parquet", "ECG5000_TEST.tsv")] == [
        None, None, None, "TEST"]
    mixed = data.load_splits(FilesData(name="files", path=str(tmp_path / "files")), 0)
    assert sum(mixed.num_rows.values()) == 200 and not np.array_equal(
        np.sort(mixed.arrays["test"][0][:, 0]), np.sort(frames["test"].x.to_numpy(np.float32)))


@pytest.mark.parametrize("splits, kwargs, message", [
    (["train", "test", "holdout", "?"] * 10, {"split_column": "split"},
     r"data.split_column 'split' holds '\?', 'holdout' in 20 rows: name each row's split train, val"),
    (["val", "test"] * 20, {"split_column": "split"}, "no row is in train"),
    (["train"] * 40, {"split_column": "splits"}, r"data.split_column 'splits' not in the data; columns: \['day', "),
    (["train"] * 40, {"order_column": "split"}, "data.order_column 'split' holds text that is not dates, such as"),
])
def test_a_split_the_data_cannot_give_is_refused_by_name(tmp_path, splits, kwargs, message):
    with pytest.raises(DataError, match=message):
        data.load_splits(FilesData(name="files", path=str(_split_table(tmp_path, splits)), **kwargs), 0)


def test_an_order_column_splits_in_time_the_latest_rows_the_test(tmp_path, capsys):
    path = str(_split_table(tmp_path, ["train"] * 200))
    splits = data.load_splits(FilesData(name="files", path=path, order_column="day", feature_columns=["x", "day"]), 0)
    days = {split: splits.arrays[split][0][:, 1] for split in ("train", "val", "test")}  # day's first: since 1970
    assert splits.num_rows == {"train": 140, "val": 30, "test": 30}
    assert days["train"].max() < days["val"].min() and days["val"].max() < days["test"].min()
    assert "split in the order of column 'day': the test split is the last 30 rows (from '2024-06-19" in \
        capsys.readouterr().out
    numbers = data.load_splits(FilesData(name="files", path=path, order_column="x", feature_columns=["x"],
                                         test_fraction=0.25), 0)
    xs = {split: numbers.arrays[split][0][:, 0] for split in ("train", "val", "test")}
    assert len(xs["test"]) == 50 and xs["train"].max() < xs["val"].min() <= xs["val"].max() < xs["test"].min()
    # a row with no place in the order: named by its row in the file
    (tmp_path / "blank.csv").write_text("day,x,label\n2024-01-01,1,a\n,2,b\n2024-01-03,3,a\n")
    with pytest.raises(DataError, match=r"data.order_column 'day' is blank in 1 rows \(the first is row 2\)"):
        data.load_splits(FilesData(name="files", path=str(tmp_path / "blank.csv"), order_column="day"), 0)


def test_a_split_from_the_data_is_refused_where_it_cannot_apply(tmp_path):
    from pydantic import ValidationError

    for kwargs, message in [({"split_column": "s", "order_column": "d"}, "set one of them"),
                            ({"split_column": "label"}, "data.split_column names the label column 'label'"),
                            ({"order_column": "label"}, "data.order_column names the label column"),
                            ({"split_column": "s", "feature_columns": ["s", "x"]}, "cannot be read as a feature too")]:
        with pytest.raises(ValidationError, match=message):
            FilesData(name="files", path="t.csv", **kwargs)
    _png(tmp_path / "cat" / "1.png", np.zeros((4, 4), np.uint8))
    with pytest.raises(DataError, match="data.order_column names a column of a table, and folders of images have none"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path), order_column="taken"), 0)


def test_training_says_how_each_column_is_read_and_names_a_column_of_row_ids(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n = 40
    pd.DataFrame({"id": np.arange(1001, 1001 + n), "age": rng.integers(18, 80, n),
                  "price": [f"${v:,.2f}" for v in rng.uniform(10, 5000, n)], "city": rng.choice(["Oslo", "Rome"], n),
                  "day": [f"{m}/{d}/2025" for m, d in zip(rng.integers(1, 13, n), rng.integers(13, 29, n))],
                  "label": rng.choice(["a", "b", "c"], n)}).to_csv(tmp_path / "t.csv", index=False)
    data.load_splits(FilesData(name="files", path=str(tmp_path / "t.csv")), 0)
    out = capsys.readouterr().out
    assert "data: 40 rows, 3 classes; columns read: id number, age number, price number written '$1,234.5', city 2 " \
           "categories, day date written '01/05/2026'\n" in out
    assert "data: columns ['id'] hold a different whole number in every row, counting up as rows do: ids" in out
    data.load_splits(FilesData(name="files", path=str(tmp_path / "t.csv"), feature_columns=["age", "city"]), 0)
    out = capsys.readouterr().out
    assert "columns read: age number, city 2 categories\n" in out and "ids" not in out  # chosen: not said


def test_text_columns_are_categories_a_feature_each(capsys):
    files = FilesData(name="files", path="d.csv")
    npz, csv = np.array(["red", "blue", "red", ""]), np.array(["red", "blue", "red", None], dtype=object)
    for colour in (npz, csv):
        columns = {"size": np.arange(4.0), "colour": colour, "label": np.arange(4) % 2}
        arrays = data._columns_to_arrays(columns, files)
        # in column order: size, then colour's categories sorted, a blank cell the category ""
        assert arrays.categories == {"colour": ["", "blue", "red"]} and arrays.feature_columns == ["size", "colour"]
        assert arrays.x.tolist() == [[0, 0, 0, 1], [1, 0, 1, 0], [2, 0, 0, 1], [3, 1, 0, 0]]
    # a model's categories encode other data as in training: a value it never saw turns on no feature
    other = {"size": np.ones(2), "colour": np.array(["red", "green"], dtype=object), "label": np.arange(2)}
    known = data._columns_to_arrays(other, files, known={"categories": {"colour": ["", "blue", "red"]}})
    assert known.x.tolist() == [[1, 0, 0, 1], [1, 0, 0, 0]]
    with pytest.raises(DataError, match=r"feature columns \['colour'\] hold text, where the model was trained on "
                                        r"numbers"):
        data._columns_to_arrays(other, files, known={})
    # numbers with a few cells of text read as text: those cells are named, not made a category per number
    ages = np.array([str(20 + i % 50) for i in range(99)] + ["?"], dtype=object)
    with pytest.raises(DataError, match=r"column 'age' holds numbers, and text in 1 cell \('\?'\), so it reads as "
                                        r"text: where it marks a missing value, set data.blank_values: \[\"\?\"\] "):
        data._columns_to_arrays({"age": ages, "label": np.arange(100) % 2}, files)
    zips = np.array(["75001", "69002", "06000"] * 10, dtype=object)  # every value digits: categories
    assert data._columns_to_arrays({"zip": zips, "label": np.arange(30) % 2}, files).categories == {
        "zip": ["06000", "69002", "75001"]}
    # a column with no value at all (pyarrow's null column) is named
    blank = {"size": np.ones(4), "note": np.array([None] * 4, dtype=object), "label": np.arange(4) % 2}
    with pytest.raises(DataError, match=r"columns \['note'\] are blank in every row: leave them out"):
        data._columns_to_arrays(blank, files)
    with pytest.raises(DataError, match=r"NaN or infinity \(a blank cell, say\) in columns \['note'\], in 4 of 4 "
                                        r".*or set data.fill_blanks: true"):
        data._columns_to_arrays(blank, files.model_copy(update={"fill_blanks": False}))
    two = {"n": np.array(["a", "b"] * 20), "label": np.arange(40) % 2}
    assert data._columns_to_arrays(two, files).x.shape == (40, 2)
    # a column of ids or names is no category: left out where every column was taken by default, and said
    ids = {"size": np.arange(40) % 3, "name": np.array([f"p{i}" for i in range(40)]), "label": np.arange(40) % 2}
    read = data._columns_to_arrays(ids, files)
    assert read.feature_columns == ["size"] and read.categories is None and read.x.shape == (40, 1)
    assert ("data: columns ['name'] hold too many different values to be categories ('name' 40 in 40 rows; at most "
            "1000, and under half the rows): ids, names or free text: left out (to read one as free text, set "
            "data.text_column: name with model.name rnn or transformer, and data.feature_columns: [size] for the "
            "columns beside it)") in capsys.readouterr().out
    # refused where data.feature_columns asks for it, with the columns to keep; where nothing else is left, the
    # text is the input (before: 'Leave them out: data.feature_columns: []')
    with pytest.raises(DataError, match=r"text columns hold too many different values to be categories \('name' 40 "
                                        r"in 40 rows; .*Leave them out: data.feature_columns: \[size\]"):
        data._columns_to_arrays(ids, files.model_copy(update={"feature_columns": ["size", "name"]}))
    with pytest.raises(DataError, match=r"\('name' 40 in 40 rows; .*free text, and the data has no other feature "
                                        r"column: to read one as free text, set data.text_column: name with"):
        data._columns_to_arrays({"name": ids["name"], "label": ids["label"]}, files)


def test_a_column_of_free_text_is_its_bytes_for_a_model_of_text(tmp_path, capsys):
    reviews = np.array(["good", "é!", None, "a long one"], dtype=object)
    files = FilesData(name="files", path="d.csv", text_column="review", text_bytes=4)
    arrays = data._columns_to_arrays({"id": np.arange(4), "review": reviews, "label": np.arange(4) % 2}, files)
    # byte b is token b + 1, 0 pads; a longer text is cut to its first text_bytes; a blank cell is no text
    assert arrays.x.dtype == np.int64 and arrays.x.tolist() == [
        [104, 112, 112, 101], [0xC3 + 1, 0xA9 + 1, ord("!") + 1, 0], [0, 0, 0, 0], [98, 33, 109, 112]]
    assert (arrays.feature_columns, arrays.text_column, arrays.categories) == (["review"], "review", None)
    said = capsys.readouterr().out
    assert ("data.text_column 'review': 1 of 4 texts are longer than data.text_bytes 4 (the longest 10 bytes), and "
            "the model reads the first 4 bytes of each") in said
    assert ("data: the text is the whole input, and columns ['id'] are not read: to read some beside it, name them "
            "in data.feature_columns") in said
    # a row's text back (orchestrator run's smoke request sends it): a character cut at the end left out
    from orchestrator.byte_text import decode, encode

    assert [decode(row) for row in arrays.x] == ["good", "é!", "", "a lo"] and decode(encode(["aé"], 2)[0]) == "a"
    # split and recorded for the checkpoint: no normalization of token ids
    path = tmp_path / "t.csv"
    path.write_text("review,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(40)))
    splits = data.load_splits(FilesData(name="files", path=str(path), text_column="review", text_bytes=8), 0)
    assert splits.input_shape == [8] and splits.input_dtype == "int64" and splits.info()["text_column"] == "review"
    assert splits.mean.tolist() == [0] and splits.std.tolist() == [1]
    # a few sentences repeated are categories, with a word on reading them as text; places are categories
    capsys.readouterr()
    said = {"review": np.array(["the film was good", "the film was not good"] * 10), "label": np.arange(20) % 2}
    assert data._columns_to_arrays(said, FilesData(name="files", path="d.csv")).categories["review"] == [
        "the film was good", "the film was not good"]
    assert ("column 'review' holds sentences (a median of 4 words), made categories: each different text a feature "
            "of its own, and one that training never saw turns on none. To read their words, set data.text_column: "
            "review") in capsys.readouterr().out
    places = {"city": np.array(["New York", "Paris", "Rio de Janeiro"] * 10), "label": np.arange(30) % 2}
    data._columns_to_arrays(places, FilesData(name="files", path="d.csv"))
    assert capsys.readouterr().out == ""
    # free text given as features is refused with the way to classify it
    many = {"review": np.array([f"review number {i}" for i in range(40)]), "label": np.arange(40) % 2}
    with pytest.raises(DataError, match="to read one as free text, set data.text_column: review with model.name rnn "
                                        r"or transformer$"):
        data._columns_to_arrays(many, FilesData(name="files", path="d.csv"))
    beside = {**many, "stars": np.arange(40) % 5}
    assert data._columns_to_arrays(beside, FilesData(name="files", path="d.csv")).feature_columns == ["stars"]
    assert ("left out (to read one as free text, set data.text_column: review with model.name rnn or transformer, "
            "and data.feature_columns: [stars] for the columns beside it)") in capsys.readouterr().out
    with pytest.raises(DataError, match=r"data.text_column: review with model.name rnn or transformer, and "
                                        r"data.feature_columns: \[stars\] for the columns beside it"):
        data._columns_to_arrays(beside, FilesData(name="files", path="d.csv", feature_columns=["review", "stars"]))
    for columns, message in [
        ({"label": np.arange(4)}, r"data.text_column 'review' not in the data; columns: \['label'\]"),
        ({"review": np.arange(4.0), "label": np.arange(4)}, "data.text_column 'review' holds float64 values, not text"),
    ]:
        with pytest.raises(DataError, match=message):
            data._columns_to_arrays(columns, files)


def test_a_text_beside_a_tables_columns_is_its_bytes_first_then_their_features(tmp_path, capsys):
    files = FilesData(name="files", path="d.csv", text_column="review", text_bytes=4, feature_columns=["stars", "kind"])
    columns = {"review": np.array(["good", None, "a long one"], dtype=object), "stars": np.array([5.0, np.nan, 2.0]),
               "kind": np.array(["book", "toy", "book"], dtype=object), "label": np.arange(3) % 2}
    arrays = data._columns_to_arrays(columns, files)
    # the text's bytes (as token ids, in float32), then the number (blank: NaN, for the model) and the categories
    assert arrays.x.dtype == np.float32 and np.array_equal(arrays.x, [
        [104, 112, 112, 101, 5, 1, 0], [0, 0, 0, 0, np.nan, 0, 1], [98, 33, 109, 112, 2, 1, 0]], equal_nan=True)
    assert (arrays.feature_columns, arrays.text_bytes, arrays.categories) == (["review", "stars", "kind"], 4,
                                                                               {"kind": ["book", "toy"]})
    assert [name for _, name in arrays.features()] == ["review[0]", "review[1]", "review[2]", "review[3]", "stars",
                                                       "kind=book", "kind=toy"]
    # split: the token ids are left as they are, the table's features normalized; the blank at its feature index
    path = tmp_path / "t.csv"
    path.write_text("review,stars,label\n" + "".join(f"text {i},{'' if i == 3 else i},{i % 2}\n" for i in range(40)))
    splits = data.load_splits(FilesData(name="files", path=str(path), text_column="review", text_bytes=6,
                                        feature_columns=["stars"]), 0)
    info = splits.info()
    assert (info["input_shape"], info["input_dtype"], info["text_bytes"], info["feature_columns"]) == (
        [7], "float32", 6, ["review", "stars"])
    assert splits.mean[:6].tolist() == [0] * 6 and splits.std[:6].tolist() == [1] * 6 and splits.std[6] > 1
    assert info["blanks"]["index"] == [6] and info["blanks"]["columns"] == ["stars"] and len(splits.mean) == 8
    # evaluate's reading of other data with the model's description: the same features
    again = data._columns_to_arrays(columns, files, known={"categories": {"kind": ["book", "toy"]}})
    assert np.array_equal(again.x, arrays.x, equal_nan=True)


def test_several_columns_of_text_are_one_text_a_separator_between_them(capsys):
    """A title and a body: each row's texts joined in the order listed (byte_text.join), alone or beside a
    table's columns, under the name 'title+body'."""
    from orchestrator.byte_text import SEPARATOR, encode

    columns = {"title": np.array(["Late", None, "Broken"], dtype=object),
               "body": np.array(["it came late", "no box", None], dtype=object),
               "stars": np.array([1.0, 2.0, 3.0]), "label": np.arange(3) % 2}
    joined = ["Late" + SEPARATOR + "it came late", SEPARATOR + "no box", "Broken" + SEPARATOR]
    alone = data._columns_to_arrays(columns, FilesData(name="files", path="d.csv", text_column=["title", "body"],
                                                       text_bytes=16))
    assert np.array_equal(alone.x, encode(joined, 16)) and alone.x.dtype == np.int64
    assert (alone.text_column, alone.text_parts, alone.feature_columns) == ("title+body", ["title", "body"],
                                                                            ["title+body"])
    assert "columns ['stars'] are not read" in capsys.readouterr().out  # the title and the body are
    cfg = FilesData(name="files", path="d.csv", text_column=["title", "body"], text_bytes=16,
                    feature_columns=["stars"])
    beside = data._columns_to_arrays(columns, cfg)
    assert np.array_equal(beside.x[:, :16], encode(joined, 16)) and beside.x[:, 16].tolist() == [1, 2, 3]
    assert [name for _, name in beside.features()][15:] == ["title+body[15]", "stars"]
    # evaluate reads other data with the model's description: the same features
    assert np.array_equal(data._columns_to_arrays(columns, cfg, known={}).x, beside.x)
    for changed, words in [({"title+body": np.array(["x"] * 3, dtype=object)}, "a column named 'title+body'"),
                           ({"title": np.arange(3.0)}, "data.text_column 'title' holds float64 values, not text")]:
        with pytest.raises(DataError, match=re.escape(words)):
            data._columns_to_arrays({**columns, **changed}, cfg)


def test_non_finite_features_are_refused(tmp_path):
    x = np.ones((10, 4), np.float32)
    x[3, 1] = np.nan
    np.savez(tmp_path / "d.npz", x=x, label=np.arange(10) % 2)
    with pytest.raises(DataError, match=r"NaN or infinity .*in 1 of 10 rows \(the first is row 4 of the data\)"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "d.npz")), seed=0)
    columns = {"a": np.ones(4), "b": np.array([1.0, np.inf, np.nan, 1.0]), "label": np.arange(4) % 2}
    with pytest.raises(DataError, match=r"in columns \['b'\], in 2 of 4 rows \(the first is row 2"):
        data._columns_to_arrays(columns, FilesData(name="files", path="d.csv"))


def test_a_date_column_is_seven_features_read_alike_from_dates_and_from_text(tmp_path):
    from orchestrator.blanks import table_features

    when = ["2026-01-05T10:30:00Z", "2026-01-12T10:30:00Z", "2026-07-05T12:30:00+02:00", "", "2025-01-05T10:30:00Z"]
    (tmp_path / "d.csv").write_text("size,when,waited,label\n" + "".join(
        f"{i},{w},{i * 1.5},{i % 2}\n" for i, w in enumerate(when)))
    cfg = FilesData(name="files", path=str(tmp_path / "d.csv"))
    arrays = data.load_arrays(cfg, seed=0)  # pyarrow reads the column as timestamps
    assert arrays.dates == ["when"] and arrays.x.shape == (5, 1 + 7 + 1)
    assert [name for _, name in table_features(arrays.feature_columns, arrays.categories, arrays.dates)] == [
        "size", "when.days", "when.year_sin", "when.year_cos", "when.week_sin", "when.week_cos", "when.day_sin",
        "when.day_cos", "waited"]
    days = arrays.x[:, 1]
    assert days[0] == pytest.approx((np.datetime64("2026-01-05T10:30") - np.datetime64("1970-01-01")) /
                                    np.timedelta64(1, "D"))
    assert days[1] - days[0] == pytest.approx(7) and np.allclose(arrays.x[0, 4:8], arrays.x[1, 4:8], atol=1e-5)
    assert np.allclose(arrays.x[2, 6:8], arrays.x[0, 6:8], atol=1e-5)  # 12:30 at +02:00 is 10:30 UTC
    assert np.isnan(arrays.x[3, 1:8]).all() and not np.isnan(arrays.x[3, [0, 8]]).any()  # a blank date
    assert np.allclose(arrays.x[4, 2:4], arrays.x[0, 2:4], atol=1e-2)  # a year apart: the same time of year
    # a model's date column read from text (a file whose reader took it for text): the same features
    as_text = {"size": np.arange(5.0), "when": np.array(when, dtype=object), "waited": np.arange(5) * 1.5,
               "label": np.arange(5) % 2}
    again = data._columns_to_arrays(as_text, cfg, known={"dates": ["when"]})
    np.testing.assert_allclose(again.x, arrays.x, rtol=1e-6)
    as_text["when"][1] = "12/01/2026"
    with pytest.raises(DataError, match=r"column 'when' holds dates in training, and here '12/01/2026' is not an "
                                        "ISO 8601 date"):
        data._columns_to_arrays(as_text, cfg, known={"dates": ["when"]})
    # a column that the reader left as text, its dates written in more than one form, is dates; ids are not
    mixed = {"when": np.array(["2026-01-05T10:30:00Z", "2026-03-01", None], dtype=object), "label": np.arange(3) % 2}
    assert data._columns_to_arrays(mixed, cfg).dates == ["when"]
    for text in (["20260105", "20260106"], ["2026-01-05 at noon", "2026-01-06"]):
        ids = {"when": np.array(text * 2, dtype=object), "label": np.arange(4) % 2}
        assert data._columns_to_arrays(ids, cfg).categories == {"when": sorted(text)}
    # a duration is its days
    columns = {"waited": np.array([86_400, 43_200], dtype="timedelta64[s]"), "label": np.arange(2)}
    assert data._columns_to_arrays(columns, cfg).x.tolist() == [[1.0], [0.5]]

def test_dates_written_as_spreadsheets_and_locales_write_them_are_read_as_dates_in_their_one_form(capsys):
    """3/15/2025, 15.03.2025, 5 Jan 2026 2:30 PM: the same 7 features as the ISO 8601 date; the form is kept
    for evaluation and serving. Where every cell fits two forms (no day over 12), the first is read, and said."""
    cfg = FilesData(name="files", path="d.csv")
    days = np.datetime64("2024-01-01") + np.arange(0, 700, 7)
    stamps = days.astype("datetime64[s]").astype(object)
    iso = {"when": np.array([d.isoformat() for d in stamps], dtype=object), "label": np.arange(len(days)) % 2}
    expected = data._columns_to_arrays(iso, cfg)
    assert expected.written_forms is None and expected.dates == ["when"]
    for form, written in [("%m/%d/%Y", [f"{d.month}/{d.day}/{d.year}" for d in stamps]),
                          ("%d.%m.%Y", [d.strftime("%d.%m.%Y") for d in stamps]),
                          ("%d %b %Y", [d.strftime("%d %b %Y") for d in stamps]),
                          ("%m/%d/%y %I:%M %p", [d.strftime("%m/%d/%y 12:00 AM") for d in stamps])]:
        written[3] = ""  # a blank cell: a blank date
        read = data._columns_to_arrays({**iso, "when": np.array(written, dtype=object)}, cfg)
        assert read.dates == ["when"] and read.written_forms == {"when": form}, form
        np.testing.assert_array_equal(np.delete(read.x, 3, 0), np.delete(expected.x, 3, 0))
        assert np.isnan(read.x[3]).all()
        # read back in that form, or as ISO 8601, for a model that was trained on it (evaluate --data)
        known = {"dates": ["when"], "written_forms": read.written_forms}
        again = data._columns_to_arrays({**iso, "when": np.array(written, dtype=object)}, cfg, known=known)
        np.testing.assert_array_equal(again.x, read.x)
        np.testing.assert_array_equal(data._columns_to_arrays(iso, cfg, known=known).x, expected.x)
    assert "fits two forms" not in capsys.readouterr().out
    # March 4 or 3 April: month first, as pandas and US spreadsheets read it, and said
    both = data._columns_to_arrays({"when": np.array(["3/4/2025", "1/12/2025"], dtype=object),
                                    "label": np.arange(2)}, cfg)
    assert both.written_forms == {"when": "%m/%d/%Y"} and both.x[0, 0] == (np.datetime64("2025-03-04") -
                                                                         np.datetime64("1970-01-01")).astype(int)
    assert "column 'when': every date in it fits two forms, '01/05/2026' and '05/01/2026'" in capsys.readouterr().out
    # not dates: versions, ids, words, and a column where one cell is not a date in the form of the others
    for cells in (["1.2.3", "1.4.0", "2.0.1"], ["A12", "B7", "C9"], ["3/15/2025", "3/16/2025", "soon"],
                  ["3/15/2025", "15.03.2025", "3/16/2025"]):
        column = {"when": np.array(cells * 2, dtype=object), "label": np.arange(6) % 2}
        assert data._columns_to_arrays(column, cfg).dates is None, cells


def test_amounts_and_shares_written_as_text_are_numbers_in_their_one_form(tmp_path):
    """$1,234.50, 12.5%, 1,250,000: numbers (a CSV reader leaves them text); the form is kept for evaluation and
    serving, which take it or a plain number. Zip codes, mixed forms and comma decimals stay text."""
    (tmp_path / "d.csv").write_text("price,share,installs,label\n" + "".join(
        f'"{p and "$" + p}",{s}%,"{i}",{k % 2}\n' for k, (p, s, i) in enumerate(
            [("1,234.50", 12.5, "1,000"), ("3.99", 3, "250"), ("", 100, "1,250,000"), ("-12", 0.5, "")] * 3)))
    read = data.load_arrays(FilesData(name="files", path=str(tmp_path / "d.csv")), seed=0)
    assert read.written_forms == {"price": "$#", "share": "#%", "installs": "#"}
    np.testing.assert_array_equal(read.x[:4], np.float32([[1234.5, 12.5, 1000], [3.99, 3, 250],
                                                          [np.nan, 100, 1_250_000], [-12, 0.5, np.nan]]))
    # a model trained on them reads them so again: that form, a plain number, a blank
    cfg = FilesData(name="files", path="d.csv", feature_columns=["price"])
    known = {"feature_columns": ["price"], "written_forms": {"price": "$#"}}
    again = data._columns_to_arrays({"price": np.array(["$5", "7", "", None, "($3.50)", "-$1"], dtype=object),
                                     "label": np.arange(6) % 2}, cfg, known=known)
    np.testing.assert_array_equal(again.x.ravel(), [5, 7, np.nan, np.nan, -3.5, -1])  # (3.50): as accountants write
    with pytest.raises(DataError, match=r"column 'price' holds numbers written as '\$1,234.5' in training, and here "
                                        r"'€5' is not a number written as '\$1,234.5' \(or 1234.5\)"):
        data._columns_to_arrays({"price": np.array(["€5", "$1"], dtype=object), "label": np.arange(2)}, cfg,
                                known=known)
    # amounts with a cell of text: named, as for a column of numbers with one
    odd = {"price": np.array([f"${i}.00" for i in range(60)] + ["n/a"], dtype=object), "label": np.arange(61) % 2}
    with pytest.raises(DataError, match=r"column 'price' holds numbers, and text in 1 cell \('n/a'\)"):
        data._columns_to_arrays(odd, FilesData(name="files", path="d.csv"))
    # as comma-decimal locales write them, where a cell shows the comma to be one: a sign or %, or thousands
    for cells, form, numbers in [(["1.234,50 €", "3,99 €", ""], "#,# €", [1234.5, 3.99, np.nan]),
                                 (["€ 3,99", "-€1.234,5"], "€#,#", [3.99, -1234.5]),
                                 (["12,5 %", "3 %"], "#,#%", [12.5, 3]), (["1 234,50", "950,00"], "#,#", [1234.5, 950]),
                                 (["1.217,93", "(12,00)"], "#,#", [1217.93, -12])]:
        column = {"x": np.array(cells * 2, dtype=object), "label": np.arange(len(cells) * 2) % 2}
        read = data._columns_to_arrays(column, FilesData(name="files", path="d.csv"))
        assert read.written_forms == {"x": form}, cells
        np.testing.assert_array_equal(read.x[:len(cells), 0], np.float32(numbers))
    assert [amounts.parse(v, "#,# €") for v in ("7,5 €", "7,5", 7.5, "1.007,5 €")] == [7.5, 7.5, 7.5, 1007.5]
    with pytest.raises(ValueError, match=r"'\$7.5' is not a number written as '1.234,5 €'"):
        amounts.parse("$7.5", "#,# €")
    # not numbers in one form: categories, as before (plain digits too: zip codes written as text)
    for cells in (["02134", "90210", "02138"], ["$5", "5%", "$7"], ["1,5", "2,25", "3,5"],
                  ["10,000+", "500+", "1,000+"], ["($5", "$5", "$7"]):
        column = {"x": np.array(cells * 2, dtype=object), "label": np.arange(6) % 2}
        read = data._columns_to_arrays(column, FilesData(name="files", path="d.csv"))
        assert read.written_forms is None and read.categories == {"x": sorted(cells)}, cells


# ---- tables (Parquet and CSV, read with pyarrow in this process) ---------------------------


def test_parquet_on_s3_and_csv_locally(s3_bucket):
    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    images = rng.random((90, 1, 4, 4)).astype(np.float32)
    labels = np.array(["a", "b", "c"] * 30)
    table = pa.table({"pixels": pa.array(list(images.reshape(90, 16))), "label": labels})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="data/part-0.parquet", Body=sink.getvalue().to_pybytes())
    cfg = FilesData(name="files", path=f"s3://{s3_bucket}/data", feature_columns=["pixels"], feature_shape=[1, 4, 4])
    splits = data.load_splits(cfg, seed=0)
    assert splits.input_shape == [1, 4, 4] and splits.label_names == ["a", "b", "c"]
    assert sum(splits.num_rows.values()) == 90 and len(splits.arrays["train"][1]) == splits.num_rows["train"]
    arrays = data.load_arrays(cfg, seed=0)
    assert np.array_equal(arrays.x, images) and np.array_equal(np.array(arrays.label_names)[arrays.y], labels)
    import gzip  # a compressed CSV on S3: streamed and decompressed by pyarrow

    rows = "f1,f2,label\n" + "".join(f"{i},{-i},{labels[i]}\n" for i in range(90))
    boto3.client("s3").put_object(Bucket=s3_bucket, Key="table/t.csv.gz", Body=gzip.compress(rows.encode()))
    table = data.load_arrays(FilesData(name="files", path=f"s3://{s3_bucket}/table/t.csv.gz"), seed=0)
    assert table.x.shape == (90, 2) and (table.x[:, 1] == -table.x[:, 0]).all() and table.label_names == ["a", "b", "c"]
    # a table partitioned by its label, as Spark and Ray Data write one: the label is in the directory names
    for label in "ab":
        boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"parts/label={label}/part-0.csv", Body=b"f1\n1\n2\n")
    parts = data.load_arrays(FilesData(name="files", path=f"s3://{s3_bucket}/parts"), seed=0)
    assert parts.label_names == ["a", "b"] and parts.y.tolist() == [0, 0, 1, 1] and parts.feature_columns == ["f1"]
    import io  # an image folder on S3

    from PIL import Image

    for i, label in enumerate(["cat", "dog"]):
        png = io.BytesIO()
        Image.fromarray(np.full((3, 2), 10 * i, np.uint8)).save(png, "PNG")
        boto3.client("s3").put_object(Bucket=s3_bucket, Key=f"pets/{label}/{i}.png", Body=png.getvalue())
    pets = data.load_arrays(FilesData(name="files", path=f"s3://{s3_bucket}/pets"), seed=0)
    assert pets.x.shape == (2, 1, 3, 2) and pets.x[1].max() == 10 and pets.label_names == ["cat", "dog"]


def test_a_table_partitioned_into_directories_has_their_columns(tmp_path):
    # pandas' (and Spark's, Ray Data's) partition_cols: a column's value is the name of the directory
    # (`label=b/year=2024/`), not in the files; values that are numbers everywhere are numbers
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"f1": rng.random(60), "year": [2023, 2024] * 30, "label": ["cat", "dog", "a b"] * 20})
    df.to_parquet(tmp_path / "parts", partition_cols=["label", "year"])
    assert (tmp_path / "parts" / "label=a%20b" / "year=2024").is_dir()
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "parts")), seed=0)
    assert arrays.feature_columns == ["f1", "year"] and arrays.label_names == ["a b", "cat", "dog"]
    labels = np.array(arrays.label_names)[arrays.y]
    rows = sorted(zip(arrays.x[:, 0].tolist(), arrays.x[:, 1].tolist(), labels, strict=True))
    assert rows == sorted(zip(df.f1.astype(np.float32).tolist(), df.year.astype(float).tolist(), df.label, strict=True))
    (tmp_path / "parts" / "label=__HIVE_DEFAULT_PARTITION__").mkdir()  # how Spark writes a null value
    df.head(2).drop(columns=["label", "year"]).assign(year=2024).to_parquet(
        tmp_path / "parts" / "label=__HIVE_DEFAULT_PARTITION__" / "p.parquet")
    unlabelled = data.load_arrays(FilesData(name="files", path=str(tmp_path / "parts")), seed=0)
    assert len(unlabelled.y) == 60 and unlabelled.label_names == arrays.label_names  # the null partition left out


def test_csv_files_of_one_table_are_matched_by_column_name(tmp_path):
    csv = tmp_path / "table.csv"
    csv.write_text("f1,f2,target\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(40)))
    splits = data.load_splits(FilesData(name="files", path=str(csv), label_column="target"), seed=0)
    assert splits.input_shape == [2] and splits.label_names == ["0", "1"]
    x, _ = splits.arrays["test"]
    assert x.shape[1:] == (2,) and x.dtype == np.float32 and (x[:, 1] == 2 * x[:, 0]).all()

    (tmp_path / "parts").mkdir()  # files of one table: columns matched by name, whatever their order
    (tmp_path / "parts" / "1.csv").write_text("f1,f2,target\n" + "".join(f"{i},{-i},{i % 2}\n" for i in range(20)))
    (tmp_path / "parts" / "2.csv").write_text("target,f2,f1\n" + "".join(f"{i % 2},{-i},{i}\n" for i in range(20)))
    (tmp_path / "parts" / "3.csv").write_text("f1,f2,target\n")  # a header alone adds no rows
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "parts"), label_column="target"), seed=0)
    assert arrays.feature_columns == ["f1", "f2"] and len(arrays.y) == 40 and (arrays.x[:, 1] == -arrays.x[:, 0]).all()
    (tmp_path / "parts" / "4.csv").write_text("f1,target\n1,0\n")
    with pytest.raises(DataError, match=r"the data files differ in their columns: .*1\.csv has \['f1', 'f2', 'target'\]"
                                        r", .*4\.csv has \['f1', 'target'\]; .*give data.path the file of the data"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "parts"), label_column="target"), seed=0)


def test_an_index_that_pandas_wrote_is_not_a_feature(tmp_path):
    # `df.to_parquet()` keeps a filtered frame's index as a column (a set_index() one under its own name),
    # `df.to_csv()` writes it first under an empty name: training on row numbers would learn the file's order
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"id": np.arange(60), "f1": rng.random(60), "f2": rng.random(60), "label": np.arange(60) % 3})
    df = df[df.f1 > 0.1]  # a gap in the index: stored as a column, not as a range
    df.to_parquet(tmp_path / "filtered.parquet")
    df.set_index("id").to_parquet(tmp_path / "by_id.parquet")
    df.drop(columns="id").to_csv(tmp_path / "indexed.csv")
    assert "__index_level_0__" in pq_columns(tmp_path / "filtered.parquet")
    for name, features in [("filtered.parquet", ["id", "f1", "f2"]), ("by_id.parquet", ["f1", "f2"]),
                           ("indexed.csv", ["f1", "f2"])]:
        arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / name)), seed=0)
        assert arrays.feature_columns == features, name
        assert np.allclose(arrays.x[:, -1], df.f2) and arrays.x.shape == (len(df), len(features))
    named = FilesData(name="files", path=str(tmp_path / "by_id.parquet"), feature_columns=["id", "f1"])
    assert np.array_equal(data.load_arrays(named, seed=0).x[:, 0], df.id)  # still a feature where it is asked for
    df[["label"]].to_csv(tmp_path / "label_only.csv")
    with pytest.raises(DataError, match=r"no feature columns: its columns are \['', 'label'\]"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "label_only.csv")), seed=0)


def pq_columns(path) -> list[str]:
    import pyarrow.parquet

    return pyarrow.parquet.read_schema(path).names


@pytest.mark.parametrize("content, message", [
    (b"a,b,label\n1,2,x\n3\n", r"cannot read .*bad\.csv as csv: CSV parse error: Expected 3 columns, got 1"),
    (b"K\xfcndigung,label\n1,x\n", r"bad\.csv is not utf-8 text: a line holds the bytes b'K\\xfcndigung.*it reads "
                                    r"as cp1252 \('Kündigung"),
    (b"city,label\nM\xfcnchen,x\n", r"bad\.csv is not utf-8 text: row 1 of column 'city' holds the bytes "
                                   r"b'M\\xfcnchen'; it reads as cp1252 \('München'\), the encoding Excel on Windows"),
    (b"city,label\nM\x81nchen,x\n", r"row 1 of column 'city' .*; give the file's encoding \(data.encoding in the"),
    (b"a,a,label\n1,2,x\n", r"bad\.csv names columns \['a'\] more than once"),
    (b"a,label\n", "the data files hold no rows"),
])
def test_unreadable_tables_name_the_file_and_the_fault(tmp_path, content, message):
    (tmp_path / "bad.csv").write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "bad.csv")), seed=0)


@pytest.mark.parametrize("head, fmt, dialect", [
    ("a,b,label\n1.5,2,x\n", "csv", (",", ".")),
    ('"Alter";"Einkommen";"Kündigung"\r\n72;"4081,96";0\r\n', "csv", (";", ",")),  # Excel, German locale
    ("a;b;label\n1.5;2;x\n", "csv", (";", ".")),  # pandas' to_csv(sep=";")
    ("a;b;note\n1.5;2.25;1,5\n2.5;3.75;x\n", "csv", (";", ".")),  # a text cell "1,5" among decimal points
    ("a;b;label\n1;2,0;x", "csv", (";", ",")),  # the last line cut where the sniffed bytes end
    ('"name, first";age;label\n"Smith, J";41;x\n', "csv", (";", ".")),  # commas inside quotes are not separators
    ("a\tb\tlabel\n1,5\t2\tx\n", "csv", ("\t", ".")),
    ("a|b|label\n1|2|x\n", "csv", ("|", ".")),
    ("a,b\tlabel\n", "tsv", ("\t", ".")),  # the format's own wherever the header holds it
    ("a,b,label\n", "tsv", (",", ".")),
    ("label\nx\n", "csv", (",", ".")),  # one column
])
def test_the_separator_and_decimal_point_are_read_from_the_file(head, fmt, dialect):
    assert tablefiles.csv_dialect(head, fmt) == dialect


def test_a_table_as_european_and_windows_spreadsheets_save_it_reads_as_the_same_utf8_csv(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"Alter": rng.integers(18, 80, 60), "Einkommen": rng.uniform(-900, 9000, 60).round(2),
                       "Stadt": rng.choice(["Köln", "München", "Zürich"], 60),
                       "Kündigung": rng.choice(["ja", "nein"], 60)})
    df.to_csv(tmp_path / "plain.csv", index=False)
    german = df.assign(Einkommen=[f"{v:,.2f}".translate({ord(","): ".", ord("."): ","}) + " €"
                                  for v in df.Einkommen])  # 1.234,50 €: a cell formatted as currency
    plain = data.load_arrays(FilesData(name="files", path=str(tmp_path / "plain.csv"), label_column="Kündigung"), 0)
    assert plain.feature_columns[:2] == ["Alter", "Einkommen"] and np.allclose(plain.x[:, 1], df.Einkommen)
    # Excel in a German locale: semicolons, decimal commas, CRLF, cp1252 (or UTF-8 with a byte-order mark)
    df.to_csv(tmp_path / "excel.csv", index=False, sep=";", decimal=",", encoding="cp1252", lineterminator="\r\n")
    german.to_csv(tmp_path / "euros.csv", index=False, sep=";", encoding="cp1252")
    df.to_csv(tmp_path / "excel-utf8.csv", index=False, sep=";", decimal=",", encoding="utf-8-sig")
    df.to_csv(tmp_path / "semicolons.csv", index=False, sep=";")  # decimal points
    df.to_csv(tmp_path / "unicode.tsv", index=False, sep="\t", encoding="utf-16")  # Excel's Unicode text
    for name, encoding in [("excel.csv", "cp1252"), ("euros.csv", "cp1252"), ("excel-utf8.csv", "cp1252"),
                           ("semicolons.csv", "utf-8"), ("unicode.tsv", "utf-8")]:  # a byte-order mark says which
        read = data.load_arrays(FilesData(name="files", path=str(tmp_path / name), label_column="Kündigung",
                                          encoding=encoding), 0)
        assert read.feature_columns == plain.feature_columns and read.label_names == plain.label_names, name
        assert np.array_equal(read.x, plain.x) and np.array_equal(read.y, plain.y), name
    rows = datafiles.read_rows(str(tmp_path / "plain.csv"))
    cp1252 = FilesData(name="files", path="e", encoding="cp1252")
    assert datafiles.read_rows(str(tmp_path / "excel.csv"), cp1252) == rows
    with pytest.raises(DataError, match=r"excel\.csv is not utf-8 text: .*reads as cp1252 \('Kündigung"):
        datafiles.read_rows(str(tmp_path / "excel.csv"))


def test_tab_separated_and_compressed_tables_are_read_by_their_suffix(tmp_path):
    import gzip
    import pyarrow as pa

    rows = "f1,f2,label\n" + "".join(f"{i},{i * 2},{'ab'[i % 2]}\n" for i in range(40))
    plain = data.load_arrays(FilesData(name="files", path=str(_write(tmp_path / "t.csv", rows.encode()))), seed=0)
    tabbed = rows.replace(",", "\t").encode()
    with pa.CompressedOutputStream(str(tmp_path / "t.tsv.zst"), "zstd") as out:
        out.write(tabbed)
    files = [_write(tmp_path / "t.csv.gz", gzip.compress(rows.encode())), _write(tmp_path / "t.tsv", tabbed),
             tmp_path / "t.tsv.zst", _write(tmp_path / "tabs.txt", tabbed)]
    for path, fmt in zip(files, [None, None, None, "tsv"]):
        arrays = data.load_arrays(FilesData(name="files", path=str(path), format=fmt), seed=0)
        assert np.array_equal(arrays.x, plain.x) and np.array_equal(arrays.y, plain.y), path
        assert arrays.feature_columns == ["f1", "f2"] and arrays.label_names == ["a", "b"]
    (tmp_path / "clips" / "dog").mkdir(parents=True)  # audio: refused with what to make of it
    (tmp_path / "clips" / "dog" / "1.wav").write_bytes(b"RIFF")
    with pytest.raises(DataError, match=r"1\.wav' is audio, which no model here reads: .*its spectrogram"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "clips")), 0)
    (tmp_path / "cats.tar.gz").write_bytes(b"\x1f\x8b")  # they had been told to set data.format
    with pytest.raises(DataError, match=r"cats\.tar\.gz' is an archive of files, which is not read as it is: unpack "
                                         r"it \(tar -xf\) .*a zip archive is read as the folder it packs"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "cats.tar.gz")), 0)
    with pytest.raises(DataError, match="is an archive of files"):
        datafiles.format_of(str(tmp_path / "cats.tar.gz"), "csv")
    with pytest.raises(DataError, match=r"cannot tell the format of .*t\.csv\.xz' from its name: set data.format to "
                                         r"one of parquet, csv, tsv, jsonl, json, feather, excel, npz, images, texts, idx, or name "
                                         r"the file by its format \(\.csv, .*may be compressed: \.csv\.gz, \.bz2"):
        data.load_arrays(FilesData(name="files", path=str(_write(tmp_path / "t.csv.xz", b"x"))), seed=0)
    with pytest.raises(DataError, match=r"t\.ods' is a spreadsheet workbook in a format not read here: save it as an "
                                         r"Excel workbook \(\.xlsx\) or its sheet as CSV"):
        data.load_arrays(FilesData(name="files", path=str(_write(tmp_path / "t.ods", b"PK"))), seed=0)
    with pytest.raises(DataError, match=r"cannot read .*t\.xlsx as an Excel workbook \(\.xlsx\): File is not a zip"):
        data.load_arrays(FilesData(name="files", path=str(_write(tmp_path / "t.xlsx", b"PK"))), seed=0)


def test_an_excel_workbook_reads_as_the_same_csv_its_sheet_by_name(tmp_path, capsys):
    import openpyxl

    assert openpyxl.DEFUSEDXML  # a workbook's XML is parsed through defusedxml: no entity expansion
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"age": rng.integers(18, 80, 60).astype(float), "city": rng.choice(["Köln", "Rome"], 60),
                       "joined": pd.date_range("2025-01-01", periods=60, freq="D"),
                       "label": rng.choice(["a", "b"], 60)})
    df.loc[3, "age"], df.loc[5, "city"] = np.nan, None  # blank cells
    df.to_csv(tmp_path / "t.csv", index=False)
    with pd.ExcelWriter(tmp_path / "t.xlsx") as book:
        pd.DataFrame({"note": ["exported by finance"]}).to_excel(book, sheet_name="About", index=False)
        df.to_excel(book, sheet_name="Customers", index=False)
    plain = data.load_arrays(FilesData(name="files", path=str(tmp_path / "t.csv")), 0)
    read = data.load_arrays(FilesData(name="files", path=str(tmp_path / "t.xlsx"), sheet="Customers"), 0)
    assert read.feature_columns == plain.feature_columns == ["age", "city", "joined"] and read.dates == ["joined"]
    assert np.array_equal(read.x, plain.x, equal_nan=True) and np.array_equal(read.y, plain.y)
    with pytest.raises(DataError, match=r"t\.xlsx has no sheet 'Sheet1': its sheets are \['About', 'Customers'\]"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "t.xlsx"), sheet="Sheet1"), 0)
    assert datafiles.read_rows(str(tmp_path / "t.xlsx"), FilesData(name="files", path="t", sheet="Customers"))[3] == {
        "age": None, "city": df.city[3], "joined": "2025-01-04T00:00:00.000000", "label": df.label[3]}
    with pytest.raises(DataError, match=r"label column 'label' not in the data; columns: \['note'\]"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "t.xlsx")), 0)
    assert "has sheets ['About', 'Customers']: read the first, 'About' (data.sheet, or --sheet for" in \
        capsys.readouterr().out
    # a column of numbers and text is text, as in a CSV: named as a column of numbers with text in it
    pd.DataFrame({"size": [1, 2, "unknown", *range(3, 42)], "label": ["a", "b"] * 21}).to_excel(tmp_path / "m.xlsx",
                                                                                      index=False)
    with pytest.raises(DataError, match=r"column 'size' holds numbers, and text in 1 cell \('unknown'\)"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "m.xlsx")), 0)


def test_a_csv_without_a_header_row_is_read_as_data(tmp_path, capsys):
    """UCI's iris.data and Spark's CSV parts have no header row: the first row had been taken for the names
    ("label column 'label' not in the data; columns: ['5.1', '3.5', '1.4', '0.2', 'Iris-setosa']"), and a
    header-less file of small numbers ("0,0,1,...") was refused for naming columns twice."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3)).round(2)
    kinds = np.array(["setosa", "versicolor", "virginica"])[np.arange(60) % 3]
    rows = "".join(f"{a},{b},{c},{k}\n" for (a, b, c), k in zip(x, kinds))
    (tmp_path / "iris.data").write_text(rows)
    auto = FilesData(name="files", path=str(tmp_path / "iris.data"), format="csv", label_column="column4")
    arrays = data.load_arrays(auto, 0)
    assert np.allclose(arrays.x, x) and arrays.feature_columns == ["column1", "column2", "column3"]
    said = capsys.readouterr().out
    assert f"data: {tmp_path / 'iris.data'} has no header row: its first row ({x[0, 0]},{x[0, 1]},{x[0, 2]},setosa) " \
           "is data like the rows below it, and the columns are named column1 to column4 (name them in " \
           "data.column_names); if that row holds the names, set data.header: true" in said
    with pytest.raises(DataError, match=r"name the column to predict in data.label_column \('column4', the last: a "
                                         r"file without a header row \(UCI's\) has the class there\?\)"):
        data.load_arrays(auto.model_copy(update={"label_column": "label"}), 0)
    named = FilesData(name="files", path=str(tmp_path / "iris.data"), format="csv", label_column="kind",
                      column_names=["a", "b", "c", "kind"])
    arrays = data.load_arrays(named, 0)
    assert np.allclose(arrays.x, x) and arrays.feature_columns == ["a", "b", "c"]
    (tmp_path / "with_names.csv").write_text("a, b, c, kind\n" + rows)  # a first row of those names: a header
    assert np.allclose(data.load_arrays(named.model_copy(update={"path": str(tmp_path / "with_names.csv")}), 0).x, x)
    with pytest.raises(DataError, match=r"data.column_names names 3 columns, and .*iris.data has 4: name each column"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "iris.data"), format="csv",
                                   column_names=["a", "b", "kind"], label_column="kind"), 0)
    assert "and the columns are named by data.column_names" in capsys.readouterr().out
    # small whole numbers, names repeated in the first row; a directory of parts, as Spark writes them
    digits = np.column_stack([rng.integers(0, 3, (40, 4)), np.arange(40) % 2])
    (tmp_path / "parts").mkdir()
    for i, part in enumerate((digits[:20], digits[20:])):
        np.savetxt(tmp_path / "parts" / f"part-0000{i}.csv", part, fmt="%d", delimiter=",")
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "parts"), label_column="column5"), 0)
    assert np.array_equal(arrays.x, digits[:, :4]) and len(arrays.y) == 40
    assert capsys.readouterr().out.count("has no header row") == 1  # the first part's, for every part
    # a header is a header: pandas' default names (0, 1, ...), years beside a name, or one that data.header says
    pd.DataFrame(digits).to_csv(tmp_path / "pandas.csv", index=False)
    assert data.load_arrays(FilesData(name="files", path=str(tmp_path / "pandas.csv"), label_column="4"),
                            0).feature_columns == ["0", "1", "2", "3"]
    (tmp_path / "years.csv").write_text("country,2019,2021,label\n" + "".join(
        f"{c},{a},{b},{k}\n" for c, (a, b, _), k in zip(["fr", "de"] * 20, x, ["y", "n"] * 20)))
    assert data.load_arrays(FilesData(name="files", path=str(tmp_path / "years.csv")), 0).feature_columns[-2:] == [
        "2019", "2021"]
    (tmp_path / "numbered.csv").write_text("7,9,11\n" + "".join(f"{a},{b},{k}\n" for (a, b, _), k in
                                                                 zip(x, ["y", "n"] * 30)))
    for header, label, names in ((True, "11", ["7", "9"]), (False, "column3", ["column1", "column2"])):
        arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "numbered.csv"), header=header,
                                            label_column=label), 0)
        assert arrays.feature_columns == names and len(arrays.y) == 60 + (not header), header
    renamed = FilesData(name="files", path=str(tmp_path / "years.csv"), header=True,
                        column_names=["land", "a", "b", "label"])
    assert data.load_arrays(renamed, 0).feature_columns[-2:] == ["a", "b"]
    assert "no header row" not in capsys.readouterr().out


def test_cells_that_mark_a_missing_value_are_blank_and_csv_cells_lose_the_spaces_beside_them(tmp_path):
    """UCI's adult.data writes "39, State-gov, 77516, <=50K" and "?" where a value is missing: the '?' had made
    a column of hours text (refused), and every category and class kept the space after the comma, so that a
    client's {"work": "Private"} matched no category the model knew (" Private")."""
    rows = [f"{20 + i % 50}, {['Private', 'State-gov', '?'][i % 3]}, {'?' if i % 10 == 0 else 30 + i % 7}, "
            f"{['<=50K', '>50K', '?'][min(i % 5, 2)]}" for i in range(100)]
    (tmp_path / "adult.csv").write_text("age, work, hours, income\n" + "\n".join(rows) + "\n")
    cfg = FilesData(name="files", path=str(tmp_path / "adult.csv"), label_column="income")
    with pytest.raises(DataError, match=r"column 'hours' holds numbers, and text in 10 cells \('\?'\)"):
        data.load_arrays(cfg, 0)
    arrays = data.load_arrays(cfg.model_copy(update={"blank_values": ["?"]}), 0)
    assert arrays.label_names == ["<=50K", ">50K"] and len(arrays.y) == 40  # '?': not labelled, left out
    assert arrays.categories == {"work": ["", "Private", "State-gov"]}
    assert np.isnan(arrays.x[:, arrays.feature_columns.index("hours") + 2]).sum() == 10  # after work's 3 features
    # a number that marks a missing value, in a column of numbers
    (tmp_path / "weather.csv").write_text("temp,label\n" + "".join(f"{-999 if i % 4 == 0 else i},{i % 2}\n"
                                                                    for i in range(40)))
    weather = FilesData(name="files", path=str(tmp_path / "weather.csv"), blank_values=["-999"])
    assert np.isnan(data.load_arrays(weather, 0).x[:, 0]).sum() == 10


def test_data_at_an_https_url_is_read_as_pandas_reads_it(tmp_path):
    """data.path: https://.../iris.data (pandas' read_csv(url), nanoGPT's tiny Shakespeare) had been refused as an
    unsupported storage URI; now it is read, on loopback here, as a local file is."""
    import functools
    import http.server
    import socket
    import threading

    rows = "".join(f"{i % 7},{i % 5},{['a', 'b'][i % 2]}\n" for i in range(40))
    (tmp_path / "iris.data").write_text("x,y,label\n" + rows)
    (tmp_path / "input.txt").write_text("To be, or not to be, that is the question. " * 50)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        local = data.load_arrays(FilesData(name="files", path=str(tmp_path / "iris.data"), format="csv"), 0)
        web = data.load_arrays(FilesData(name="files", path=f"{url}/iris.data", format="csv"), 0)
        assert np.array_equal(web.x, local.x) and np.array_equal(web.y, local.y)
        assert datafiles.read_rows(f"{url}/iris.data", FilesData(name="files", path="i", format="csv"))[1] == {
            "x": 1, "y": 1, "label": "b"}
        # a URL that gives no file says why: the server's answer, or that there was none
        with pytest.raises(DataError, match=rf"data URL '{url}/nope.csv' gives no file: the server answered 404"):
            data.load_arrays(FilesData(name="files", path=f"{url}/nope.csv"), 0)
        with socket.socket() as closed:  # bound, not listening: a connection to it is refused
            closed.bind(("127.0.0.1", 0))
            refused = f"http://127.0.0.1:{closed.getsockname()[1]}/iris.data"
            with pytest.raises(DataError, match=r"gives no file: the server did not answer \(Connection refused\)"):
                data.load_arrays(FilesData(name="files", path=refused), 0)
        corpus = data.read_corpus(TextData(name="text", path=f"{url}/input.txt", max_bytes=1024))
        assert corpus == (tmp_path / "input.txt").read_bytes()[:1024]
    finally:
        server.shutdown()
        server.server_close()


def test_a_column_of_categories_holds_one_object_per_category(tmp_path):
    """1,000,000 cells of five cities had been 1,000,000 Python strings (58 MB); the cells now share one string
    per city (8 MB of references): 907 MB at most to read such a table of six columns, 720 MB now. A column of
    ids or free text, mostly distinct, is read as before."""
    import pyarrow as pa
    import pyarrow.parquet

    cities = np.array(["Paris", "Lyon", None, "Nice"], dtype=object)[np.arange(20_000) % 4]
    ids = np.array([f"id-{i}" for i in range(20_000)], dtype=object)
    pyarrow.parquet.write_table(pa.table({"city": cities, "id": ids, "label": np.arange(20_000) % 2}),
                                tmp_path / "t.parquet")
    fs, root, files, fmt = datafiles.data_files(str(tmp_path / "t.parquet"), None, None)
    columns, _ = tablefiles.read_table(fs, root, files, fmt, FilesData(name="files", path="t"))
    assert columns["city"].tolist() == cities.tolist() and columns["id"].tolist() == ids.tolist()
    assert len({id(v) for v in columns["city"]}) == 4 and len({id(v) for v in columns["id"]}) == 20_000


def test_json_lines_and_feather_tables_read_as_the_same_csv(tmp_path):
    # as pandas writes them: df.to_json(orient="records", lines=True, compression=...) and df.to_feather()
    import pandas as pd

    rng = np.random.default_rng(0)
    df = pd.DataFrame({"f1": rng.random(40), "f2": rng.integers(0, 9, 40), "label": list("ab") * 20})
    df.to_csv(tmp_path / "t.csv", index=False)
    df.to_json(tmp_path / "t.jsonl", orient="records", lines=True)
    df.to_json(tmp_path / "t.ndjson.bz2", orient="records", lines=True, compression="bz2")
    df.to_feather(tmp_path / "t.feather")
    df.to_feather(tmp_path / "t.arrow", compression="zstd")
    # JSON of a table: a list of rows (APIs, to_json(orient="records")), pandas' split and default layouts, and a
    # row a line in a .json file, as Spark's write.json() writes its parts
    df.to_json(tmp_path / "records.json", orient="records")
    df.to_json(tmp_path / "split.json.gz", orient="split", index=False)
    df.to_json(tmp_path / "columns.json")
    df.to_json(tmp_path / "spark.json", orient="records", lines=True)
    (tmp_path / "api.json").write_text(json.dumps({"count": 40, "next": None, "results": df.to_dict("records")}))
    df.to_json(tmp_path / "table.json", orient="table", index=False)  # {"schema": ..., "data": [rows]}
    plain = data.load_arrays(FilesData(name="files", path=str(tmp_path / "t.csv")), seed=0)
    for name in ["t.jsonl", "t.ndjson.bz2", "t.feather", "t.arrow", "records.json", "split.json.gz", "columns.json",
                 "spark.json", "api.json", "table.json"]:
        arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / name)), seed=0)
        assert np.array_equal(arrays.x, plain.x) and np.array_equal(arrays.y, plain.y), name
        assert arrays.feature_columns == ["f1", "f2"] and arrays.label_names == ["a", "b"]
    (tmp_path / "bad.jsonl").write_text('{"f1": 1, "label": "a"}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"cannot read .*bad\.jsonl as jsonl: JSON parse error"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "bad.jsonl")), seed=0)
    (tmp_path / "bad.json").write_text('{"f1": 1, ')
    with pytest.raises(DataError, match=r"cannot read .*bad\.json as JSON: Expecting property name"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "bad.json")), seed=0)
    (tmp_path / "bad.json").write_text('[[1, 2], [3, 4]]')
    with pytest.raises(DataError, match=r"bad\.json is not a table in JSON: give a list of rows"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "bad.json")), seed=0)


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def test_a_tensor_column_written_by_ray_data_keeps_its_shape(tmp_path):
    """Ray Data stores an image column as a list per row, with the shape in the field's metadata."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    images = np.arange(6 * 2 * 4, dtype=np.float32).reshape(6, 2, 4)
    field = pa.field("image", pa.large_list(pa.float32()), metadata={
        b"ARROW:extension:name": b"ray.data.arrow_tensor_v2", b"ARROW:extension:metadata": json.dumps([2, 4]).encode()})
    table = pa.table([pa.array(list(images.reshape(6, 8)), pa.large_list(pa.float32())), pa.array([0, 1] * 3)],
                     schema=pa.schema([field, pa.field("label", pa.int64())]))
    pq.write_table(table, tmp_path / "images.parquet")
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "images.parquet")), seed=0)
    assert arrays.x.shape == (6, 2, 4) and np.array_equal(arrays.x, images)


def test_list_columns_beside_others_or_of_different_sizes_are_named(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = pa.array([[1.0, 2.0], [3.0, 4.0]] * 3)
    pq.write_table(pa.table({"age": [1, 2] * 3, "embedding": vectors, "label": [0, 1] * 3}), tmp_path / "mixed.parquet")
    with pytest.raises(DataError, match=r"feature columns \['embedding'\] hold lists or images, beside other feature "
                                        r"columns: such a column is a whole input, so name it alone in "
                                        r"data.feature_columns"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "mixed.parquet")), seed=0)
    only = data.load_arrays(FilesData(name="files", path=str(tmp_path / "mixed.parquet"),
                                      feature_columns=["embedding"]), seed=0)
    assert only.x.shape == (6, 2)
    ragged = pa.array([[1.0, 2.0], [3.0]] * 3)
    pq.write_table(pa.table({"embedding": ragged, "label": [0, 1] * 3}), tmp_path / "ragged.parquet")
    with pytest.raises(DataError, match=r"feature column 'embedding' holds lists of different sizes \(1, 2\): every "
                                        r"input must have the same size"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "ragged.parquet")), seed=0)


def test_evaluate_on_other_data_matches_the_model_by_column_and_label_name(tmp_path, capsys):
    """In a fresh interpreter, as `orchestrator evaluate --data` runs: never a Ray (12 s to start here)."""
    import json
    import subprocess
    import sys

    from orchestrator.checkpoint import write_checkpoint
    from orchestrator.config import config_from_dict
    from orchestrator.evaluate import evaluate_on_data
    from orchestrator.models import build_model

    cfg = config_from_dict({"name": "t", "data": {"name": "files", "path": "train.csv", "label_column": "kind"},
                            "model": {"name": "mlp", "hidden_sizes": [8]}})
    torch.manual_seed(0)
    model = build_model(cfg.model, [2], 3)
    info = {"input_shape": [2], "label_names": ["a", "b", "c"], "feature_columns": ["w", "h"],
            "normalization": {}, "data_fingerprint": "x"}
    write_checkpoint(str(tmp_path / "ckpt"), model=model, config=cfg, model_info=info, metrics={})
    rng = np.random.default_rng(0)
    w, h, kind = rng.normal(size=60), rng.normal(size=60), np.array(["c", "b"] * 30)  # no 'a', columns reordered
    (tmp_path / "holdout.csv").write_text("kind,h,w\n" + "".join(f"{k},{b},{a}\n" for a, b, k in zip(w, h, kind)))
    with torch.no_grad():
        predicted = model.eval()(torch.tensor(np.stack([w, h], axis=1), dtype=torch.float32)).argmax(1).numpy()
    expected = float(np.mean(predicted == np.array([{"b": 1, "c": 2}[k] for k in kind])))
    script = ("import sys; from orchestrator.cli import main\n"
              f"code = main(['evaluate', {str(tmp_path / 'ckpt')!r}, '--data', {str(tmp_path / 'holdout.csv')!r}, "
              "'--json'])\n"
              "assert 'ray' not in sys.modules, 'Ray was imported'\n"
              "sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["num_rows"] == 60 and result["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    # per class, as scikit-learn's classification_report: 'b' found among the rows of 'b', ...
    truth = np.array([{"b": 1, "c": 2}[k] for k in kind])
    by_class = {row["class"]: row for row in result["per_class"]}
    assert [by_class[c]["support"] for c in "abc"] == [0, 30, 30]
    assert by_class["b"]["recall"] == pytest.approx(np.mean(predicted[truth == 1] == 1), abs=1e-4)
    assert by_class["c"]["precision"] == pytest.approx(np.mean(truth[predicted == 2] == 2), abs=1e-4)
    from orchestrator.cli import main

    assert main(["evaluate", str(tmp_path / "ckpt"), "--data", str(tmp_path / "holdout.csv")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[-5].split() == ["class", "precision", "recall", "f1", "support"] and printed[-4].split()[-1] == "0"
    assert printed[-1].startswith("loss ") and printed[-3].split()[0] == "b"
    (tmp_path / "other.csv").write_text("kind,h,w\nd,1,2\nb,1,2\n")
    with pytest.raises(DataError, match=r"labels \['d'\] are not classes of this model"):
        evaluate_on_data(str(tmp_path / "ckpt"), str(tmp_path / "other.csv"))
    # trained on a German Excel's CSV (data.encoding cp1252): the holdout is read in that encoding unless told
    german = cfg.model_copy(update={"data": cfg.data.model_copy(update={"encoding": "cp1252"})})
    write_checkpoint(str(tmp_path / "ckpt-de"), model=model, config=german, model_info=info, metrics={})
    pd.DataFrame({"kind": kind, "h": h, "w": w, "Stadt": "München"}).to_csv(
        tmp_path / "holdout-de.csv", index=False, sep=";", decimal=",", encoding="cp1252")
    result = evaluate_on_data(str(tmp_path / "ckpt-de"), str(tmp_path / "holdout-de.csv"))
    assert result["num_rows"] == 60 and result["metrics"]["accuracy"] == pytest.approx(expected, abs=1e-9)
    with pytest.raises(DataError, match=r"holdout-de\.csv is not utf-8 text: row 1 of column 'Stadt'"):
        evaluate_on_data(str(tmp_path / "ckpt-de"), str(tmp_path / "holdout-de.csv"), encoding="utf-8")


def test_images_stored_channels_last_are_read_channels_first(tmp_path, capsys):
    """[N, H, W, C] arrays (PIL, Keras, TensorFlow, Ray Data) had been read as C=H channels of H x C pixels."""
    from orchestrator.images import channels_last

    assert channels_last([32, 32, 3]) == [32, 32, 3] and channels_last([28, 28, 1]) == [28, 28, 1]
    for shape in ([3, 32, 32], [1, 28, 28], [32, 32], [4, 4, 3], [3, 32, 3], [32, 32, 5]):
        assert channels_last(shape) is None, shape
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 255, size=(40, 8, 8, 3)).astype(np.float32)
    np.savez(tmp_path / "rgb.npz", x=hwc, label=np.arange(40) % 2)
    for shape in (None, [3, 8, 8], [8, 8, 3]):  # data.feature_shape either way names the same images
        arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "rgb.npz"), feature_shape=shape), 0)
        assert np.array_equal(arrays.x, hwc.transpose(0, 3, 1, 2)), shape
    assert data.columns_read(arrays).endswith("columns read: x array of shape [3, 8, 8]")
    assert ("data: images of shape [8, 8, 3] (height, width, channels: channels last) read as [3, 8, 8], channels "
            "first, as PyTorch's layers take them") in capsys.readouterr().out
    np.savez(tmp_path / "chw.npz", x=hwc.transpose(0, 3, 1, 2), label=np.arange(40) % 2)
    assert np.array_equal(data.load_arrays(FilesData(name="files", path=str(tmp_path / "chw.npz")), 0).x,
                          hwc.transpose(0, 3, 1, 2))  # channels first already: as it is
    assert "channels last" not in capsys.readouterr().out


def test_a_column_of_image_files_is_read_as_an_image_folder_is(tmp_path, capsys):
    """Hugging Face datasets ship images in Parquet as {"bytes", "path"} structs, one file a split
    (train-00000-of-00001.parquet): before, "features ['image'] are not numeric arrays"."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from orchestrator.images import decode_image
    from tests.conftest import png_bytes

    rng = np.random.default_rng(0)
    pixels = [rng.integers(0, 256, (6, 5)).astype(np.uint8) for _ in range(30)]
    files = [png_bytes(image) for image in pixels]
    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    (tmp_path / "hf").mkdir()
    for split, rows in (("train", slice(0, 20)), ("test", slice(20, 30))):
        images = pa.array([{"bytes": f, "path": None} for f in files[rows]], struct)
        pq.write_table(pa.table({"image": images, "label": (np.arange(30) % 2)[rows]}),
                       tmp_path / "hf" / f"{split}-00000-of-00001.parquet")
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "hf")), 0)
    read = np.concatenate([np.stack(pixels[20:]), np.stack(pixels[:20])])
    assert arrays.x.shape == (30, 1, 6, 5) and np.array_equal(arrays.x[:, 0], read.astype(np.float32))
    assert list(arrays.split) == [2] * 10 + [0] * 20  # the files in name order, test first: each in its split
    resized = data.load_arrays(FilesData(name="files", path=str(tmp_path / "hf"), feature_shape=[3, 4, 4]), 0)
    assert np.array_equal(resized.x[0], decode_image(files[20], [3, 4, 4], "x"))  # as an image folder's file
    # the files' bytes alone, a column of binary, read the same; a row without one is named
    pq.write_table(pa.table({"image": pa.array(files, pa.binary()), "label": np.arange(30) % 2}), tmp_path / "b.parquet")
    assert np.array_equal(data.load_arrays(FilesData(name="files", path=str(tmp_path / "b.parquet")), 0).x[:, 0],
                          np.stack(pixels).astype(np.float32))
    # beside other columns (a file path, a size: Hugging Face's beans), the image is the input, alone; they had been
    # joined into a vector of 30 pixels and a width
    beside = {"image": pa.array(files, pa.binary()), "width": np.full(30, 5), "label": np.arange(30) % 2}
    pq.write_table(pa.table(beside), tmp_path / "beside.parquet")
    capsys.readouterr()
    alone = data.load_arrays(FilesData(name="files", path=str(tmp_path / "beside.parquet")), 0)
    assert alone.x.shape == (30, 1, 6, 5) and alone.feature_columns == ["image"]
    assert "data: column 'image' holds images, the input; columns ['width'] are not read" in capsys.readouterr().out
    with pytest.raises(DataError, match=r"feature columns \['image'\] hold lists or images, beside other feature "
                                        r"columns: such a column is a whole input"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "beside.parquet"),
                                   feature_columns=["image", "width"]), 0)
    broken = pa.table({**beside, "image": pa.array(files[:29] + [b"\x89PNG\r\n\x1a\n cut short"], pa.binary())})
    pq.write_table(broken, tmp_path / "broken.parquet")  # a column data.feature_columns leaves out is not decoded
    only_width = data.load_arrays(FilesData(name="files", path=str(tmp_path / "broken.parquet"),
                                            feature_columns=["width"]), 0)
    assert only_width.x.shape == (30, 1)
    pq.write_table(pa.table({"image": pa.array(files[:29] + [b"oops"], pa.binary()), "label": np.arange(30) % 2}),
                   tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=r"row 30 of column 'image' holds no image file \(.b'oops'.\), where the "
                                        r"column's other rows do: fill it in or leave the row out"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "bad.parquet")), 0)


def test_augment_shifts_within_bounds_and_keeps_shape():
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 4, 4] = 1.0
    out = data.augment(x, max_shift_px=1, noise_std=0.0, std=torch.ones(1, 1, 1), generator=torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.allclose(out.sum(dim=(1, 2, 3)), torch.ones(64))
    rows, cols = out[:, 0].nonzero()[:, 1], out[:, 0].nonzero()[:, 2]
    assert set(rows.tolist()) == {3, 4, 5} and set(cols.tolist()) == {3, 4, 5}
    noisy = data.augment(x, 0, 0.1, torch.full((1, 1, 1), 2.0), torch.Generator().manual_seed(0))
    assert 0.15 < (noisy - x).std() < 0.25
    # flip: about half the images mirrored left to right, each whole, the others as they were
    x = torch.arange(400 * 3 * 4 * 5, dtype=torch.float32).reshape(400, 3, 4, 5)
    out = data.augment(x, 0, 0.0, torch.ones(1, 1, 1), torch.Generator().manual_seed(0), flip=True)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert ((out == x).flatten(1).all(1) | mirrored).all() and 160 < int(mirrored.sum()) < 240
    assert torch.equal(data.augment(x, 0, 0.0, torch.ones(1, 1, 1), torch.Generator(), flip=False), x)


# ---- text for the language model --------------------------------------------------------


def test_text_is_byte_windows_whose_targets_are_the_next_bytes(tmp_path):
    (tmp_path / "b.txt").write_bytes(b"world " * 50)
    (tmp_path / "a.txt").write_bytes(b"hello " * 50)
    (tmp_path / "skip.md").write_bytes(b"not read")
    (tmp_path / ".hidden.txt").write_bytes(b"not read")
    cfg = TextData(name="text", path=str(tmp_path), suffixes=[".txt"], block_size=16)
    corpus = data.read_corpus(cfg)
    assert corpus == b"hello " * 50 + b"world " * 50  # files in name order, others left out
    arrays = data.load_arrays(cfg, seed=0)
    n = (len(corpus) - 1) // 16
    assert arrays.x.shape == arrays.y.shape == (n, 16) and arrays.x.dtype == np.int64
    stream = np.frombuffer(corpus, dtype=np.uint8)
    assert np.array_equal(arrays.x.ravel(), stream[: n * 16]) and np.array_equal(arrays.y.ravel(), stream[1 : n * 16 + 1])
    assert len(arrays.label_names) == 256 and arrays.label_names[ord("h")] == "h"


def test_text_splits_in_corpus_order_so_test_text_never_trained_on():
    tr, va, te = ordered_split(100, 0.1, 0.2)
    assert list(tr) == list(range(70)) and list(va) == list(range(70, 80)) and list(te) == list(range(80, 100))
    with pytest.raises(DataError, match="too few"):
        ordered_split(2, 0.1, 0.1)


def test_the_default_corpus_is_the_standard_library_and_max_bytes_bounds_it():
    import sysconfig

    corpus = data.read_corpus(TextData(name="text", max_bytes=5000))
    assert len(corpus) == 5000
    first = sorted(p for p in Path(sysconfig.get_paths()["stdlib"]).iterdir()
                   if p.suffix == ".py" and not p.name.startswith(("_", ".")))[0]
    assert corpus.startswith(first.read_bytes()[:5000])


def test_text_from_s3(s3_bucket, s3_endpoint):
    import boto3

    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.put_object(Bucket=s3_bucket, Key="corpus/one.md", Body=b"# title\n" * 100)
    s3.put_object(Bucket=s3_bucket, Key="corpus/two.py", Body=b"x = 1\n" * 100)
    cfg = TextData(name="text", path=f"s3://{s3_bucket}/corpus", suffixes=[".md"], block_size=32)
    assert data.read_corpus(cfg, s3_endpoint) == b"# title\n" * 100
    assert data.load_arrays(cfg, 0, s3_endpoint).x.shape == (24, 32)


@pytest.mark.parametrize("kwargs, message", [
    ({"path": "/nonexistent/corpus"}, "does not exist"),
    ({"suffixes": [".nothing"]}, "no text in files ending in"),
    ({"block_size": 4096, "max_bytes": 5000}, "too few for 3 sequences"),
])
def test_text_errors_say_what_to_change(kwargs, message):
    with pytest.raises(DataError, match=message):
        data.load_arrays(TextData(name="text", **kwargs), 0)


# ---- image files (one directory per class) ------------------------------------------------------


def _png(path: Path, pixels: np.ndarray, fmt: str = "PNG") -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8)).save(path, fmt)
    return path


def test_images_are_decoded_in_threads_in_order_and_a_long_read_says_how_far_it_is(tmp_path, capsys):
    """A folder of 25,000 photos had been read one file after another, saying nothing for minutes; and a JPEG to
    shrink is decoded at a fraction of its size (libjpeg's scaled decoding), close to the full decode's pixels."""
    import io

    from PIL import Image

    from orchestrator.images import decode_image, decode_images

    rng = np.random.default_rng(0)
    raws = [_png(tmp_path / f"{i}.png", rng.integers(0, 256, (5, 4))).read_bytes() for i in range(40)]
    files = [(lambda raw=raw: raw, f"{i}.png") for i, raw in enumerate(raws)]
    images, kept = decode_images(files, None, every_s=0)
    assert np.array_equal(images, np.stack([decode_image(raw, [1, 5, 4], "x") for raw in raws]))  # in order
    assert kept == list(range(40))
    printed = capsys.readouterr().out
    assert "data: 1 of 40 images decoded (0 s)" in printed and "39 of 40 images" in printed
    assert "40 of 40" not in printed
    def broken(i: int) -> bytes:
        if i in (3, 30):
            raise DataError(f"row {i + 1} holds no image file")
        return raws[i]
    for _ in range(5):  # whichever thread fails first, the first bad file in order is the one named
        with pytest.raises(DataError, match="row 4 holds no image file"):
            decode_images([(functools.partial(broken, i), f"{i}.png") for i in range(40)], [1, 4, 4])
    with pytest.raises(DataError, match=r"images differ in size: 0.png is 4x5, 1.png is 5x4"):
        decode_images([files[0], (lambda: _png(tmp_path / "t.png", np.zeros((4, 5))).read_bytes(), "1.png")], None)
    # a 400x300 photo shrunk to 32x32: decoded at 1/8 (50x38), then resized as any image, near the full decode
    x, y = np.meshgrid(np.linspace(0, 255, 400), np.linspace(0, 255, 300))
    photo = io.BytesIO()
    Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8)).save(photo, "JPEG", quality=95)
    full = np.asarray(Image.open(io.BytesIO(photo.getvalue())).resize((32, 32)), np.float32).transpose(2, 0, 1)
    assert np.abs(decode_image(photo.getvalue(), [3, 32, 32], "photo") - full).mean() < 1.0


def test_a_few_files_of_an_image_folder_that_are_no_images_are_left_out_and_named(tmp_path, capsys):
    """Kaggle's cats and dogs folder holds two empty JPEGs among 25,000 photos: the whole run had been refused for
    one of them. A few (up to 1%) are left out, and named; more stop the run, as the folder is most likely wrong."""
    rng = np.random.default_rng(0)
    for i in range(300):
        _png(tmp_path / "pets" / ["cat", "dog"][i % 2] / f"{i}.png", rng.integers(0, 256, (4, 4)))
    (tmp_path / "pets" / "cat" / "666.jpg").write_bytes(b"")
    (tmp_path / "pets" / "dog" / "11702.jpg").write_bytes(b"\xff\xd8\xff\xe0 cut short")
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "pets")), 0)
    assert arrays.x.shape == (300, 1, 4, 4) and np.bincount(arrays.y).tolist() == [150, 150]
    said = capsys.readouterr().out
    assert "data: 2 of 302 files are no images, and are left out: " in said and "666.jpg: not an image" in said
    assert "11702.jpg: not an image" in said
    for i in range(3):
        (tmp_path / "pets" / "dog" / f"broken-{i}.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match=r"4 of the first \d+ files are no images: is data.path the right folder\?"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "pets"), feature_shape=[1, 4, 4]), 0)


def test_an_image_folder_is_one_directory_per_class(tmp_path):
    # torchvision's ImageFolder layout: the class is the directory, the pixels are the file's, other files are not data
    rng = np.random.default_rng(0)
    pixels = {f"{c}/{i}.png": rng.integers(0, 256, (6, 5)) for c in ["cat", "dog"] for i in range(3)}
    for name, p in pixels.items():
        _png(tmp_path / "pets" / name, p)
    (tmp_path / "pets" / "README.txt").write_text("not an image")
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "pets"), format="images"), seed=0)
    assert arrays.x.shape == (6, 1, 6, 5) and arrays.x.dtype == np.float32 and arrays.label_names == ["cat", "dog"]
    assert np.array_equal(arrays.x[:, 0], np.stack(list(pixels.values()))) and arrays.y.tolist() == [0, 0, 0, 1, 1, 1]
    # colour (a JPEG, found by its suffix) is 3 channels; feature_shape converts and resizes every image
    _png(tmp_path / "rgb" / "red" / "1.jpg", np.full((4, 4, 3), [250, 0, 0]), "JPEG")
    _png(tmp_path / "rgb" / "gray" / "2.png", np.full((8, 8), 100))
    color = data.load_arrays(FilesData(name="files", path=str(tmp_path / "rgb"), feature_shape=[3, 4, 4]), seed=0)
    assert color.x.shape == (2, 3, 4, 4) and color.label_names == ["gray", "red"]
    assert np.allclose(color.x[0], 100) and np.allclose(color.x[1, :, 0, 0], [250, 0, 0], atol=6)  # JPEG is lossy
    with pytest.raises(DataError, match=r"images differ in size: .*2\.png is 8x8, .*1\.jpg is 4x4 \(width x height\): "
                                        r"set data.feature_shape: \[C, H, W\]"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "rgb")), seed=0)
    # the class in label=NAME directories, as for tables partitioned by their label
    _png(tmp_path / "hive" / "label=7" / "a.png", np.zeros((3, 3)))
    _png(tmp_path / "hive" / "label=9" / "b.png", np.ones((3, 3)))
    assert data.load_arrays(FilesData(name="files", path=str(tmp_path / "hive")), seed=0).label_names == ["7", "9"]


def test_images_in_no_class_directory_take_their_class_from_their_names(tmp_path, capsys):
    """Kaggle's dogs vs cats ships train/cat.0.jpg ... dog.12499.jpg, Oxford's pets Abyssinian_1.jpg, in one
    folder: "cat.0.jpg has no class" had asked to move 25,000 files. Names that are no class and a number (a
    camera's IMG_20240101_1.jpg) still are refused."""
    rng = np.random.default_rng(0)
    for i in range(10):
        _png(tmp_path / "train" / f"{'cat' if i % 2 else 'dog'}.{i}.png", rng.integers(0, 256, (4, 4)))
        _png(tmp_path / "pets" / f"{'Abyssinian' if i % 2 else 'american_bulldog'}_{i}.png", np.full((4, 4), i))
        _png(tmp_path / "camera" / f"IMG_2024010{i % 2}_{i}.png", np.full((4, 4), i))
    arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / "train")), seed=0)
    assert arrays.label_names == ["cat", "dog"] and arrays.y.tolist() == [0] * 5 + [1] * 5  # files in name order
    assert f"data: the images of {tmp_path / 'train'} are in no class directory, and each one's name says its " \
           "class: cat.1.png, cat (2 classes)" in capsys.readouterr().out
    pets = data.load_arrays(FilesData(name="files", path=str(tmp_path / "pets")), seed=0)
    assert pets.label_names == ["Abyssinian", "american_bulldog"]
    assert [pets.label_names[k] for k in pets.y[pets.x[:, 0, 0, 0].argsort()]] == [
        "american_bulldog", "Abyssinian"] * 5  # image i's class, by its pixel value i
    with pytest.raises(DataError, match=r"IMG_20240100_0\.png has no class: put each image in a directory"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "camera")), seed=0)


def test_an_image_folder_of_split_directories_keeps_its_split(tmp_path, capsys):
    from orchestrator.images import decode_image

    # as datasets ship: train/ and test/ (and val/), each with a directory per class; the class is not 'train'
    rng = np.random.default_rng(0)
    layout = {"train": 12, "Test": 4}
    for split, n in layout.items():
        for c in ("cat", "dog"):
            for i in range(n):
                _png(tmp_path / "pets" / split / c / f"{i}.png", rng.integers(0, 256, (4, 4)))
    splits = data.load_splits(FilesData(name="files", path=str(tmp_path / "pets")), 0)
    assert splits.label_names == ["cat", "dog"] and splits.num_rows == {"train": 20, "val": 4, "test": 8}
    assert sorted(splits.arrays["test"][1].tolist()) == [0] * 4 + [1] * 4  # the test images, both classes
    assert "each row in the split named by its directory (train/, val/, test/); val drawn from the train rows" in \
        capsys.readouterr().out
    test_pixels = {tuple(x.ravel()) for x in splits.arrays["test"][0]}
    shipped = {tuple(decode_image(p.read_bytes(), [1, 4, 4], str(p)).ravel())
               for p in (tmp_path / "pets" / "Test").rglob("*.png")}
    assert test_pixels == shipped
    # or in split=NAME directories, by data.split_column
    for split, c in [("train", "cat"), ("train", "dog"), ("train", "cat"), ("train", "dog"), ("test", "cat")]:
        _png(tmp_path / "hive" / f"part={split}" / c / f"{rng.integers(1e9)}.png", np.zeros((3, 3)))
    hive = data.load_arrays(FilesData(name="files", path=str(tmp_path / "hive"), split_column="part"), 0)
    assert hive.label_names == ["cat", "dog"] and sorted(hive.split.tolist()) == [0, 0, 0, 0, 2]


def test_deep_and_turned_images_decode_as_viewers_show_them():
    import io

    from PIL import Image

    from orchestrator.images import decode_image, image_shape

    def encoded(image, fmt="PNG", **kwargs) -> bytes:
        out = io.BytesIO()
        image.save(out, fmt, **kwargs)
        return out.getvalue()

    # 16 bits (little- or big-endian): every level kept, scaled to 0-255, where an 8-bit conversion clips at 255
    ramp = np.linspace(0, 65535, 64).reshape(8, 8).astype(np.uint16)
    for dtype in ("<u2", ">u2"):
        raw = encoded(Image.fromarray(ramp.astype(dtype)), "TIFF")
        gray = decode_image(raw, [1, 8, 8], "deep")
        assert np.allclose(gray[0], ramp / 257, atol=1e-3) and len(np.unique(gray)) == 64, dtype
        rgb = decode_image(raw, [3, 4, 4], "deep")  # resized in float, the channel three times
        assert rgb.shape == (3, 4, 4) and (rgb[0] == rgb[2]).all() and 0 < rgb.min() < rgb.max() < 255
    assert image_shape(encoded(Image.fromarray(ramp)), "deep") == [1, 8, 8]
    # 32-bit floats keep their values (a depth map in metres, a 0-1 mask), not rounded to 0 or 1
    depth = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    assert np.allclose(decode_image(encoded(Image.fromarray(depth, "F"), "TIFF"), [1, 8, 8], "depth")[0], depth)
    # a phone photo stored landscape with EXIF orientation 6 stands upright, as viewers show it
    photo = Image.new("RGB", (16, 8))
    photo.paste((255, 255, 255), (0, 0, 8, 8))  # the left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # turn 90 degrees clockwise to view
    raw = encoded(photo, "PNG", exif=exif.tobytes())
    upright = decode_image(raw, [3, 16, 8], "photo", resize=False)
    assert image_shape(raw, "photo") == [3, 16, 8] and upright.shape == (3, 16, 8)
    assert upright[:, :8].min() == 255 and upright[:, 8:].max() == 0  # the white half is now on top


@pytest.mark.parametrize("layout, kwargs, message", [
    ({"1.png": "image"}, {}, r"1\.png has no class: put each image in a directory named for its class"),
    ({"cat/1.png": b"\x89PNG\r\n\x1a\n truncated"}, {}, r"cat/1\.png: not an image that Pillow reads"),
    ({"cat/1.png": b"GIF89a"}, {}, r"cat/1\.png: not an image file of a kind Pillow reads \(PNG, JPEG"),
    ({"cat/1.png": "image"}, {"feature_shape": [2, 3, 3]}, r"images take a shape \[C, H, W\] with C 1 \(grayscale\) "
                                                           r"or 3 \(RGB\), not \[2, 3, 3\]"),
    ({"cat/notes.md": b"x"}, {"format": "images"}, r"holds no image files \(\.png, \.jpg"),
])
def test_image_folder_errors_say_what_to_change(tmp_path, layout, kwargs, message):
    for name, content in layout.items():
        if content == "image":
            _png(tmp_path / "d" / name, np.zeros((3, 3)))
        else:
            (tmp_path / "d" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / "d" / name).write_bytes(content)
    with pytest.raises(DataError, match=message):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "d"), **kwargs), seed=0)


def test_blank_numeric_cells_stay_blank_for_the_model_to_fill_with_training_medians(tmp_path, capsys):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"age": rng.uniform(1, 80, 200).round(1), "kind": rng.choice(["a", "b"], 200),
                          "fare": rng.uniform(5, 50, 200).round(2), "label": rng.integers(0, 2, 200)})
    frame.loc[::5, "age"] = np.nan  # 40 blank ages
    frame.loc[[3, 7], "fare"] = np.nan
    frame.to_csv(tmp_path / "people.csv", index=False)
    cfg = FilesData(name="files", path=str(tmp_path / "people.csv"))
    splits = data.load_splits(cfg, seed=0)
    # features: age, kind=a, kind=b, fare; the blank ones are named with what fills them
    train_rows = split_indices(frame["label"].to_numpy(), 0.15, 0.15, seed=0)[0]
    assert splits.blanks["columns"] == ["age", "fare"] and splits.blanks["index"] == splits.blanks["flags"] == [0, 3]
    assert splits.blanks["fill"] == pytest.approx([frame["age"].iloc[train_rows].median(),
                                                   frame["fare"].iloc[train_rows].median()], rel=1e-6)
    assert splits.input_shape == [4] and np.isnan(splits.arrays["train"][0][:, 0]).sum() > 0  # the model fills them
    assert "blank cells in 2 column(s) of 200 rows ('age' 40, 'fare' 2)" in capsys.readouterr().out
    # normalization covers the filled features and the two 0/1 flags after them: the flag of age is 1 in 1/5 rows
    assert splits.mean.shape == (6,) and splits.mean[4] == pytest.approx(np.isnan(frame["age"].iloc[train_rows]).mean())
    assert splits.info()["blanks"] == splits.blanks
    # refused where filling is off, or where a blank cell is no table's cell
    with pytest.raises(DataError, match=r"in columns \['age', 'fare'\], in 42 of 200 rows.*or set data.fill_blanks"):
        data.load_splits(cfg.model_copy(update={"fill_blanks": False}), seed=0)
    with pytest.raises(DataError, match="fill them in or leave those rows out$"):
        data.load_splits(cfg.model_copy(update={"feature_shape": [2, 2]}), seed=0)
    frame.loc[0, "fare"] = np.inf
    frame.to_csv(tmp_path / "inf.csv", index=False)
    with pytest.raises(DataError, match="NaN or infinity"):
        data.load_splits(cfg.model_copy(update={"path": str(tmp_path / "inf.csv")}), seed=0)
    # a column whose only values are outside the training rows has nothing to fill with
    frame = frame.assign(fare=1.0, note=np.nan)
    frame.loc[frame.index.difference(train_rows)[0], "note"] = 2.0
    frame.to_csv(tmp_path / "note.csv", index=False)
    with pytest.raises(DataError, match=r"columns \['note'\] are blank in every training row"):
        data.load_splits(cfg.model_copy(update={"path": str(tmp_path / "note.csv")}), seed=0)


def test_a_table_naming_image_files_in_data_image_dir_reads_them_as_its_input(tmp_path):
    """Kaggle's image competitions ship a train.csv of ids (or file names) and labels beside a train/ folder of the
    images (aerial cactus, dog breeds); that had no reading at all. With data.image_dir, the column naming the files
    (by path below the folder, file name, or name less its suffix) is the input, its images read as a folder's."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (12, 6, 5, 3))
    for i, image in enumerate(pixels):
        _png(tmp_path / "train" / ("a" if i % 2 else "b") / f"{i:04}.png", image)
    paths = [f"{'a' if i % 2 else 'b'}/{i:04}.png" for i in range(12)]
    for name, cells in (("by_path", paths), ("by_name", [p.split("/")[1] for p in paths]),
                        ("by_id", [p.split("/")[1][:-4] for p in paths])):
        pd.DataFrame({"id": cells, "size": range(12), "label": ["cactus", "none"] * 6}).to_csv(
            tmp_path / f"{name}.csv", index=False)
        arrays = data.load_arrays(FilesData(name="files", path=str(tmp_path / f"{name}.csv"), image_dir="train"), 0)
        assert arrays.feature_columns == ["id"] and arrays.x.shape == (12, 3, 6, 5), name
        assert np.array_equal(arrays.x, pixels.transpose(0, 3, 1, 2)) and arrays.label_names == ["cactus", "none"]
    # without data.image_dir, a column naming the images beside the table says to set it (it had been left out as
    # ids, and the model trained on the other columns, or refused "too many different values to be categories")
    for i in range(24):
        _png(tmp_path / "kaggle" / "train" / f"{i:04x}.jpg", pixels[i % 12], "JPEG")
    pd.DataFrame({"id": [f"{i:04x}.jpg" for i in range(24)], "label": ["a", "b"] * 12}).to_csv(
        tmp_path / "kaggle" / "train.csv", index=False)
    with pytest.raises(DataError, match=r"a column of .*train.csv names the image files in train/: set "
                                        r"data.image_dir: train to read them as the input"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "kaggle" / "train.csv")), 0)
    # rows to predict: the ids of a test folder's files, each row's image as a request carries it
    rows = datafiles.read_rows(str(tmp_path / "by_id.csv"), FilesData(name="files", path="x", image_dir="train"))
    assert len(rows) == 12 and set(rows[0]["id"]) == {"b64"} and rows[0]["size"] == 0
    pd.DataFrame({"id": ["0001", "0099"], "label": ["a", "b"]}).to_csv(tmp_path / "missing.csv", index=False)
    with pytest.raises(DataError, match=r"row 2 of column 'id' names '99', which is no image file under .*train"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "missing.csv"), image_dir="train"), 0)
    pd.DataFrame({"name": ["x", "y"], "label": ["a", "b"]}).to_csv(tmp_path / "none.csv", index=False)
    with pytest.raises(DataError, match=r"no column names the image files under .*train \(such as 'a/0001.png'\) by "
                                        r"their path below it, their name or their name less its suffix; the columns: "
                                        r"'name': \['x', 'y'\]"):
        data.load_arrays(FilesData(name="files", path=str(tmp_path / "none.csv"), image_dir="train"), 0)
