"""ftcore.data: folder scanning, auditing, decoding, stratified split, transforms, demo data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from conftest import COLOURS, write_image
from ftcore.config import DataConfig
from ftcore.data import (
    ArrayImageDataset,
    build_transforms,
    decode_image,
    prepare_split,
    scan_folder,
    write_demo_dataset,
)
from ftcore.errors import DatasetError


def _split(root, val_dir=None, val_fraction=0.2, seed=0, short_side=None):
    return prepare_split(DataConfig(str(root), None if val_dir is None else str(val_dir), val_fraction),
                         seed=seed, short_side=short_side)


# -- scan_folder -------------------------------------------------------------------

def test_scan_class_folders(make_image_folder):
    root = make_image_folder(classes={"cat": 3, "ant": 2, "bee": 4})
    scan = scan_folder(root)
    assert scan.class_names == ["ant", "bee", "cat"]
    assert scan.counts() == {"ant": 2, "bee": 4, "cat": 3}
    assert len(scan.files) == len(scan.labels) == 9
    for f, y in zip(scan.files, scan.labels):
        assert Path(f).parent.name == scan.class_names[y]
    assert scan.problems == []


def test_scan_includes_nested_files(make_image_folder):
    root = make_image_folder(classes={"a": 2, "b": 2})
    write_image(root / "a" / "sub" / "deep.jpg", COLOURS[0])
    scan = scan_folder(root)
    assert scan.counts() == {"a": 3, "b": 2}
    assert str(root / "a" / "sub" / "deep.jpg") in scan.files


def test_scan_ignores_junk_and_reports_it(make_image_folder):
    root = make_image_folder(classes={"a": 3, "b": 3})
    (root / "__MACOSX" / "a").mkdir(parents=True)
    (root / "__MACOSX" / "a" / "._img_000.png").write_bytes(b"\x00\x05\x16\x07")
    (root / ".hidden_class").mkdir()
    write_image(root / ".hidden_class" / "x.png", COLOURS[2])
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "a" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "a" / "._img_000.png").write_bytes(b"\x00\x05\x16\x07")
    (root / "b" / ".ipynb_checkpoints").mkdir()
    write_image(root / "b" / ".ipynb_checkpoints" / "copy.png", COLOURS[1])
    (root / "b" / "desktop.ini").write_text("[.ShellClassInfo]")
    scan = scan_folder(root)
    assert scan.class_names == ["a", "b"]
    assert scan.counts() == {"a": 3, "b": 3}
    assert all("__MACOSX" not in f and "/." not in f and "Thumbs" not in f for f in scan.files)
    ignored = {Path(p.path).name for p in scan.problems if p.kind == "ignored"}
    assert ignored == {"__MACOSX", ".hidden_class", ".DS_Store", "Thumbs.db", "._img_000.png",
                       ".ipynb_checkpoints", "desktop.ini"}
    assert all(p.action == "ignored" for p in scan.problems if p.kind == "ignored")


def test_scan_reports_non_images_empty_classes_and_loose_files(make_image_folder):
    root = make_image_folder(classes={"a": 2, "b": 2})
    (root / "a" / "notes.txt").write_text("hello")
    (root / "empty").mkdir()
    (root / "only_text").mkdir()
    (root / "only_text" / "readme.md").write_text("x")
    write_image(root / "loose.png", COLOURS[0])
    scan = scan_folder(root)
    assert scan.class_names == ["a", "b"]
    kinds = {(Path(p.path).name, p.kind) for p in scan.problems}
    assert ("notes.txt", "not_image") in kinds
    assert ("readme.md", "not_image") in kinds
    assert ("empty", "empty_class") in kinds
    assert ("only_text", "empty_class") in kinds
    assert ("loose.png", "not_in_class") in kinds
    msg = next(p.message for p in scan.problems if p.kind == "not_image" and p.path.endswith("notes.txt"))
    assert "suffix '.txt' is not an image type" in msg


def test_scan_suffix_case_insensitive(make_image_folder):
    root = make_image_folder(classes={"a": 2, "b": 2})
    write_image(root / "a" / "UPPER.JPG", COLOURS[0], fmt="JPEG")
    assert scan_folder(root).counts()["a"] == 3


def test_scan_one_class_raises_with_what_was_found(make_image_folder):
    root = make_image_folder(classes={"onlyone": 4})
    with pytest.raises(DatasetError, match=r"needs at least two class folders with images; found 1 \(onlyone\)"):
        scan_folder(root)


def test_scan_no_classes_raises(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "empty").mkdir()
    with pytest.raises(DatasetError, match="needs at least two class folders with images; found none"):
        scan_folder(tmp_path / "d")


def test_scan_missing_folder_raises(tmp_path):
    with pytest.raises(DatasetError, match=r"data folder .*nowhere does not exist; give a folder"):
        scan_folder(tmp_path / "nowhere")
    f = tmp_path / "file.png"
    f.write_bytes(b"")
    with pytest.raises(DatasetError, match="is a file, not a folder"):
        scan_folder(f)


# -- decode_image -----------------------------------------------------------------------

def test_decode_rgb_uint8_and_downscale(tmp_path):
    p = tmp_path / "x.png"
    Image.new("RGB", (40, 20), (10, 20, 30)).save(p)
    a = decode_image(p)
    assert a.dtype == np.uint8 and a.shape == (20, 40, 3)
    assert tuple(a[0, 0]) == (10, 20, 30)
    b = decode_image(p, max_short_side=10)
    assert b.shape == (10, 20, 3)
    assert decode_image(p, max_short_side=100).shape == (20, 40, 3), "never upscaled"


def test_decode_grey_and_transparent(tmp_path):
    g = tmp_path / "g.png"
    Image.new("L", (8, 8), 128).save(g)
    assert decode_image(g).shape == (8, 8, 3) and decode_image(g)[0, 0].tolist() == [128, 128, 128]
    t = tmp_path / "t.png"
    Image.new("RGBA", (8, 8), (0, 0, 0, 0)).save(t)
    assert decode_image(t)[0, 0].tolist() == [255, 255, 255], "transparent pixels composite on white"


def _rotated_jpeg(path: Path, width: int, height: int) -> Path:
    """A JPEG, left half red and right half blue, tagged EXIF orientation 6 (turn 90 degrees clockwise)."""
    im = Image.new("RGB", (width, height), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, width // 2, height))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_decode_exif_rotation_upright(tmp_path):
    # 20 wide x 10 high, left half red, right half blue; EXIF orientation 6 = rotate 90 degrees clockwise.
    a = decode_image(_rotated_jpeg(tmp_path / "rot.jpg", 20, 10))
    assert a.shape == (20, 10, 3), "displayed upright: 10 wide, 20 high"
    top, bottom = a[2, 5].astype(int), a[17, 5].astype(int)
    assert top[0] > 200 and top[2] < 60, "the left (red) half is on top after a clockwise turn"
    assert bottom[2] > 200 and bottom[0] < 60


@pytest.mark.parametrize("mode, colour, expected", [("RGB", (200, 10, 10), (200, 10, 10)), ("L", 120, (120, 120, 120)),
                                                     ("CMYK", (0, 255, 255, 0), (255, 0, 0))])
def test_decode_large_jpeg_downscaled(tmp_path, mode, colour, expected):
    p = tmp_path / f"{mode}.jpg"
    Image.new(mode, (400, 300), colour).save(p, quality=95)
    a = decode_image(p, max_short_side=30)
    assert a.shape[0] == 30 and abs(a.shape[1] - 40) <= 1 and a.shape[2] == 3
    assert np.abs(a[5, 5].astype(int) - expected).max() <= 3


def test_decode_large_rotated_jpeg_downscaled(tmp_path):
    a = decode_image(_rotated_jpeg(tmp_path / "rot.jpg", 400, 300), max_short_side=30)
    assert a.shape[1] == 30 and abs(a.shape[0] - 40) <= 1
    assert a[2, 15, 0] > 200 and a[-3, 15, 2] > 200


@pytest.mark.parametrize("kind", ["empty_jpg", "text_png", "truncated_png"])
def test_decode_unreadable_names_file(tmp_path, kind):
    p = _write_bad(tmp_path, kind)
    with pytest.raises(DatasetError, match=rf"cannot read image .*{p.name}"):
        decode_image(p)


def _write_bad(folder: Path, kind: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "empty_jpg":
        p = folder / "zero.jpg"
        p.write_bytes(b"")
    elif kind == "text_png":
        p = folder / "text.png"
        p.write_text("this is not an image\n")
    else:
        p = folder / "truncated.png"
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(p)
        data = p.read_bytes()
        p.write_bytes(data[: len(data) // 2])
    return p


# -- prepare_split: stratified split ----------------------------------------------------------

def test_stratified_split_proportions(make_image_folder):
    counts = {"a": 10, "b": 15, "c": 5}
    root = make_image_folder(classes=counts)
    split = _split(root, val_fraction=0.2)
    assert split.layout == "class_folders"
    assert split.class_names == ["a", "b", "c"]
    n = sum(counts.values())
    assert len(split.val_images) == math.ceil(0.2 * n) == 6
    assert len(split.train_images) == n - 6
    c = split.counts()
    for name, total in counts.items():
        assert abs(c["val"][name] - 0.2 * total) <= 1, (name, c)
        assert c["train"][name] + c["val"][name] == total
        assert c["val"][name] >= 1 and c["train"][name] >= 1
    assert c["val"] == {"a": 2, "b": 3, "c": 1}
    # no image is in both splits; every file is used exactly once
    assert not set(split.train_files) & set(split.val_files)
    assert len(set(split.train_files) | set(split.val_files)) == n
    for files, labels in ((split.train_files, split.train_labels), (split.val_files, split.val_labels)):
        assert labels.dtype == np.int64
        for f, y in zip(files, labels):
            assert Path(f).parent.name == split.class_names[y]


def test_split_images_match_their_files(make_image_folder):
    root = make_image_folder(classes={"a": 5, "b": 5})
    split = _split(root, val_fraction=0.4)
    for img, f in zip(split.val_images + split.train_images, split.val_files + split.train_files):
        assert np.array_equal(img, decode_image(f))


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5, 0.7])
def test_split_fraction(make_image_folder, fraction):
    root = make_image_folder(classes={"a": 12, "b": 12, "c": 12})
    c = _split(root, val_fraction=fraction).counts()
    # Each class: fraction * 12 rounded half up, clamped to [1, 11].
    want = min(max(math.floor(fraction * 12 + 0.5), 1), 11)
    assert c["val"] == {n: want for n in "abc"}, c
    assert c["train"] == {n: 12 - want for n in "abc"}, c


def test_split_seed(make_image_folder):
    root = make_image_folder(classes={"a": 10, "b": 10, "c": 10})
    s0 = _split(root, seed=0)
    assert _split(root, seed=0).val_files == s0.val_files
    assert _split(root, seed=0).train_files == s0.train_files
    s1 = _split(root, seed=1)
    assert s1.val_files != s0.val_files
    assert s1.counts() == s0.counts()


def test_split_class_with_one_image_names_it(make_image_folder):
    root = make_image_folder(classes={"a": 6, "lonely": 1})
    with pytest.raises(DatasetError, match=r"classes lonely \(1\) have fewer than 2 readable images"):
        _split(root)


def test_split_two_images_per_class_keeps_one_in_each_split(make_image_folder):
    root = make_image_folder(classes={"a": 2, "b": 2, "c": 2})
    for fraction in (0.05, 0.5, 0.95):
        c = _split(root, val_fraction=fraction).counts()
        assert c["train"] == c["val"] == {"a": 1, "b": 1, "c": 1}


def test_split_small_class_appears_in_validation(make_image_folder):
    root = make_image_folder(classes={"few": 2, "many": 20})
    try:
        split = _split(root, val_fraction=0.2)
    except DatasetError as e:  # raising and naming the class is also acceptable
        assert "few" in str(e)
        return
    assert split.counts()["val"]["few"] >= 1


# -- prepare_split: layouts ----------------------------------------------------------------------

def test_train_val_layout_detected(tmp_path, make_image_folder):
    make_image_folder("ds/train", classes={"a": 4, "b": 5})
    make_image_folder("ds/val", classes={"a": 2, "b": 3}, start_seed=500)
    split = _split(tmp_path / "ds")
    assert split.layout == "train_val"
    assert split.class_names == ["a", "b"]
    assert split.counts() == {"train": {"a": 4, "b": 5}, "val": {"a": 2, "b": 3}}
    assert all("/ds/val/" in f for f in split.val_files)
    assert all("/ds/train/" in f for f in split.train_files)


@pytest.mark.parametrize("val_name", ["valid", "validation"])
def test_train_valid_names(tmp_path, make_image_folder, val_name):
    make_image_folder("ds/train", classes={"a": 3, "b": 3})
    make_image_folder(f"ds/{val_name}", classes={"a": 1, "b": 1})
    split = _split(tmp_path / "ds")
    assert split.layout == "train_val" and len(split.val_files) == 2


def test_separate_val_folder_labels_follow_training_classes(tmp_path, make_image_folder):
    train = make_image_folder("tr", classes={"a": 3, "b": 3, "c": 3})
    val = make_image_folder("va", classes={"b": 2, "c": 1})
    split = _split(train, val_dir=val)
    assert split.layout == "separate_val"
    assert split.class_names == ["a", "b", "c"]
    assert split.counts()["val"] == {"a": 0, "b": 2, "c": 1}
    for f, y in zip(split.val_files, split.val_labels):
        assert Path(f).parent.name == split.class_names[y]
        assert str(val) in f
    assert len(split.train_files) == 9


def test_separate_val_with_extra_class_raises(tmp_path, make_image_folder):
    train = make_image_folder("tr", classes={"a": 3, "b": 3})
    val = make_image_folder("va", classes={"a": 1, "zebra": 1})
    with pytest.raises(DatasetError, match=r"validation folder .*va has classes \['zebra'\] that the training folder"):
        _split(train, val_dir=val)


def test_split_missing_folder(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        _split(tmp_path / "nope")


# -- prepare_split: unreadable files ------------------------------------------------------------

def test_unreadable_files_are_named_and_left_out(make_image_folder):
    root = make_image_folder(classes={"a": 5, "b": 5})
    bad = [_write_bad(root / "a", "empty_jpg"), _write_bad(root / "b", "text_png"),
           _write_bad(root / "b", "truncated_png")]
    seen = []
    split = prepare_split(DataConfig(str(root), None, 0.2), progress=lambda d, t: seen.append((d, t)))
    unreadable = [p for p in split.problems if p.kind == "unreadable"]
    assert sorted(Path(p.path).name for p in unreadable) == sorted(b.name for b in bad)
    for p in unreadable:
        assert p.action == "skipped" and "cannot be decoded as an image" in p.message
    used = set(split.train_files) | set(split.val_files)
    assert len(used) == 10 and not used & {str(b) for b in bad}
    assert split.counts()["train"]["a"] + split.counts()["val"]["a"] == 5
    assert seen[-1] == (13, 13) and len(seen) == 13
    # the remaining data still trains: the dataset yields tensors
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    tr_tf, va_tf, _ = build_transforms(model, 32)
    x, y = ArrayImageDataset(split.train_images, split.train_labels, tr_tf)[0]
    assert x.shape == (3, 32, 32) and y in (0, 1)


def test_unreadable_files_can_leave_a_class_too_small(make_image_folder):
    root = make_image_folder(classes={"a": 5, "b": 1})
    _write_bad(root / "b", "empty_jpg")
    with pytest.raises(DatasetError, match=r"classes b \(1\) have fewer than 2 readable images"):
        _split(root)


def test_short_side_downscales_on_decode(make_image_folder):
    root = make_image_folder(classes={"a": 3, "b": 3}, size=40)
    split = _split(root, val_fraction=0.34, short_side=20)
    assert {im.shape for im in split.train_images + split.val_images} == {(20, 20, 3)}


# -- datasets and transforms ------------------------------------------------------------------

def test_build_transforms_sizes():
    model = timm.create_model("test_resnet", pretrained=False, num_classes=2)
    tr, va, short = build_transforms(model, 32)
    crop = model.pretrained_cfg["crop_pct"]
    assert short == math.ceil(32 / crop)
    img = Image.fromarray(np.full((50, 70, 3), 100, np.uint8))
    assert tr(img).shape == (3, 32, 32) and va(img).shape == (3, 32, 32)
    # normalisation from the model's pretrained_cfg (mean 0.5, std 0.5): 100/255 -> (0.392 - 0.5) / 0.5
    assert torch.allclose(va(img), torch.full((3, 32, 32), (100 / 255 - 0.5) / 0.5), atol=1e-5)
    _, _, default_short = build_transforms(model)
    assert default_short == math.ceil(160 / crop)


def test_array_dataset():
    imgs = [np.full((8, 8, 3), i * 40, np.uint8) for i in range(3)]
    ds = ArrayImageDataset(imgs, np.array([2, 0, 1]), lambda im: torch.as_tensor(np.array(im)).float())
    assert len(ds) == 3
    x, y = ds[1]
    assert y == 0 and isinstance(y, int) and float(x.mean()) == 40.0


# -- demo data set --------------------------------------------------------------------------------

def test_write_demo_dataset(tmp_path):
    from sklearn.datasets import load_digits

    dest = write_demo_dataset(tmp_path / "digits", size=16)
    assert dest == tmp_path / "digits"
    target = load_digits().target
    classes = sorted(p.name for p in dest.iterdir() if p.is_dir())
    assert classes == [str(d) for d in range(10)]
    for d in range(10):
        assert len(list((dest / str(d)).glob("*.png"))) == int((target == d).sum())
    assert (tmp_path / "digits.complete").exists()  # beside the folder, so the data set holds images only
    img = Image.open(dest / "0" / "0000.png")
    assert img.size == (16, 16)
    arr = np.asarray(img)
    assert arr[0, 0] == 255, "white background, dark ink"
    assert arr.min() < 100
    # complete output is reused, not rewritten
    stamp = (dest / "0" / "0000.png").stat().st_mtime_ns
    write_demo_dataset(dest, size=16)
    assert (dest / "0" / "0000.png").stat().st_mtime_ns == stamp
    scan = scan_folder(dest)
    assert scan.class_names == [str(d) for d in range(10)] and len(scan.files) == 1797
    assert scan.problems == []


def test_inspect_dataset_reports_the_runs_split(make_image_folder):
    from ftcore.data import inspect_dataset

    root = make_image_folder(classes={"a": 10, "b": 6})
    (root / "a" / "broken.png").write_text("not a png")
    cfg = DataConfig(str(root), None, 0.25)
    report = inspect_dataset(cfg, seed=3, n_samples=2)
    split = prepare_split(cfg, seed=3)
    assert report.layout == "class_folders" and report.class_names == ["a", "b"]
    # a: 10 readable, 0.25 * 10 = 2.5 -> 3; b: 6, 1.5 -> 2 (half up).
    assert report.counts == split.counts() == {"train": {"a": 7, "b": 4}, "val": {"a": 3, "b": 2}}
    assert report.n_images == 16
    assert [len(v) for v in report.samples.values()] == [2, 2]
    for cls, files in report.samples.items():
        assert all(f in split.train_files and Path(f).parent.name == cls for f in files)
    assert [Path(p.path).name for p in report.problems if p.kind == "unreadable"] == ["broken.png"]
    with pytest.raises(DatasetError, match="needs at least two class folders with images; found none"):
        inspect_dataset(DataConfig(str(root / "a")))  # images but no class sub-folders


def test_train_and_test_folders_are_a_split_not_two_classes(make_image_folder):
    root = make_image_folder(name="data/train", classes={"a": 4, "b": 4}).parent
    make_image_folder(name="data/test", classes={"a": 2, "b": 2})
    split = prepare_split(DataConfig(str(root)))
    assert split.layout == "train_val" and split.class_names == ["a", "b"]
    assert split.counts() == {"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}}


def test_nested_folders_inside_a_class_are_included_and_said(make_image_folder):
    from ftcore.data import scan_folder

    root = make_image_folder(classes={"a": 3, "b": 3})
    make_image_folder(name="data/a/more", classes={"x": 2})  # data/a/more/x/*.png
    scan = scan_folder(root)
    assert scan.counts() == {"a": 5, "b": 3}
    nested = [p for p in scan.problems if p.kind == "nested"]
    assert len(nested) == 1 and nested[0].action == "included"
    assert nested[0].path.endswith("more/x") and "count as 'a'" in nested[0].message


def test_sixteen_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    ramp16 = np.linspace(0, 65535, 256).astype(np.uint16).reshape(16, 16)
    Image.fromarray(ramp16).save(tmp_path / "g16.png")
    d = decode_image(tmp_path / "g16.png")
    assert d.min() == 0 and d.max() == 255 and len(np.unique(d)) > 200
    Image.fromarray(np.linspace(0, 1, 256, dtype=np.float32).reshape(16, 16)).save(tmp_path / "f.tiff")
    d = decode_image(tmp_path / "f.tiff")
    assert d.min() == 0 and d.max() == 255


def test_validation_folder_equal_to_the_training_folder_is_refused(make_image_folder):
    root = make_image_folder(classes={"a": 4, "b": 4})
    with pytest.raises(DatasetError, match="is the training folder: the metrics would be measured on training"):
        prepare_split(DataConfig(str(root), str(root)))


def test_unreadable_folder_is_named(make_image_folder, monkeypatch):
    root = make_image_folder(classes={"a": 4, "b": 4})

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", denied)
    with pytest.raises(DatasetError, match=r"cannot read .*data \(Permission denied\); check that the folder"):
        prepare_split(DataConfig(str(root)))


def test_validation_path_that_is_a_file_is_called_the_validation_folder(make_image_folder, tmp_path):
    root = make_image_folder(classes={"a": 4, "b": 4})
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(DatasetError, match=r"validation folder .*notes.txt is a file, not a folder"):
        prepare_split(DataConfig(str(root), str(tmp_path / "notes.txt")))
