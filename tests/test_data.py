"""ftcore.data.split: folder scanning, auditing, decoding, stratified split, transforms, demo data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from ftcore.core.config import DataConfig
from ftcore.core.errors import DatasetError
from ftcore.data.audit import audit_dataset
from ftcore.data.split import (
    ArrayImageDataset,
    balanced_sampler,
    build_transforms,
    class_weights,
    decode_image,
    prepare_split,
    scan_layout,
    split_from_audit,
    write_demo_dataset,
)


def _split(root, val_dir=None, val_fraction=0.2, seed=0, short_side=None):
    return prepare_split(DataConfig(str(root), None if val_dir is None else str(val_dir), val_fraction),
                         seed=seed, short_side=short_side)


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
    with pytest.raises(DatasetError, match=rf"cannot read image .*{p.name}: ") as e:
        decode_image(p)
    assert e.value.kind == {"empty_jpg": "unreadable", "text_png": "not_image", "truncated_png": "unreadable"}[kind]


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
    with pytest.raises(DatasetError, match=r"class 'lonely' has 1 usable image; it needs at least 2 to appear in both"):
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
    make_image_folder(f"ds/{val_name}", classes={"a": 1, "b": 1}, start_seed=500)
    split = _split(tmp_path / "ds")
    assert split.layout == "train_val" and len(split.val_files) == 2


def test_separate_val_folder_labels_follow_training_classes(tmp_path, make_image_folder):
    train = make_image_folder("tr", classes={"a": 3, "b": 3, "c": 3})
    val = make_image_folder("va", classes={"b": 2, "c": 1}, start_seed=500)
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
    val = make_image_folder("va", classes={"a": 1, "zebra": 1}, start_seed=500)
    with pytest.raises(DatasetError, match=r"va/zebra: class 'zebra' has validation images but no usable training"):
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
    unreadable = [p for p in split.problems if p.action == "skipped"]
    assert sorted(Path(p.path).name for p in unreadable) == sorted(b.name for b in bad)
    assert {p.kind for p in unreadable} == {"not_image", "unreadable"}
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
    with pytest.raises(DatasetError, match=r"class 'b' has 1 usable image"):
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
    report = audit_dataset(dest)
    assert report.ok and report.class_names == [str(d) for d in range(10)]
    assert sum(report.classes.values()) == 1797, "no digit is taken for a duplicate"
    assert report.problems == []


def test_split_from_audit_is_the_runs_split_and_decodes_nothing_again(make_image_folder, monkeypatch):
    root = make_image_folder(classes={"a": 10, "b": 6})
    (root / "a" / "broken.png").write_text("not a png")
    cfg = DataConfig(str(root), None, 0.25)
    report = audit_dataset(root, val_fraction=0.25, short_side=8, keep_images=True)
    # a: 10 usable, 0.25 * 10 = 2.5 -> 3; b: 6, 1.5 -> 2 (half up).
    assert report.split_counts() == {"train": {"a": 7, "b": 4}, "val": {"a": 3, "b": 2}}
    import ftcore.data.images

    monkeypatch.setattr(ftcore.data.images, "decode_bytes", lambda *a, **k: pytest.fail("decoded twice"))
    split = split_from_audit(report, seed=3)
    assert split.counts() == report.split_counts()
    assert all(im.shape == (8, 8, 3) for im in split.train_images)
    monkeypatch.undo()
    assert prepare_split(cfg, seed=3, short_side=8).val_files == split.val_files
    assert [Path(p.path).name for p in split.problems if p.kind == "not_image"] == ["broken.png"]


def test_split_from_an_audit_without_images_or_not_ok_is_refused(make_image_folder):
    root = make_image_folder(classes={"a": 4, "b": 4})
    with pytest.raises(DatasetError, match="kept no decoded images; audit it with keep_images=True"):
        split_from_audit(audit_dataset(root))
    with pytest.raises(DatasetError, match="holds 4 files and no class folder"):
        split_from_audit(audit_dataset(root / "a", keep_images=True))


def test_scan_layout_refuses_early_without_decoding(make_image_folder):
    root = make_image_folder(classes={"onlyone": 4})
    with pytest.raises(DatasetError, match=r"needs at least two class folders with images; found 1 \(onlyone\)"):
        scan_layout(DataConfig(str(root)))
    with pytest.raises(DatasetError, match=r"holds 4 files and no class folder; put each class's images"):
        scan_layout(DataConfig(str(root / "onlyone")))
    assert scan_layout(DataConfig(str(make_image_folder("two")))).kind == "class_folders"


# -- class balance ----------------------------------------------------------------------------------

def test_class_weights_are_sklearns_balanced_weights():
    labels = np.array([0] * 8 + [1] * 2)
    w = class_weights(labels, 3)
    assert w.dtype == torch.float32 and w.shape == (3,)
    # n / (k * count) over the classes present: 10 / (2 * 8), 10 / (2 * 2); the absent class gets 1.
    assert torch.allclose(w, torch.tensor([0.625, 2.5, 1.0]))
    loss = torch.nn.functional.cross_entropy(torch.zeros(10, 3), torch.as_tensor(labels), weight=w)
    assert torch.isfinite(loss)


def test_balanced_sampler_draws_classes_equally():
    labels = np.array([0] * 90 + [1] * 10)
    sampler = balanced_sampler(labels, 2, seed=0)
    drawn = labels[np.array(list(sampler))]
    assert len(drawn) == 100
    assert 35 <= (drawn == 1).sum() <= 65, "the minority class is drawn about half the time, not 10%"
    assert list(balanced_sampler(labels, 2, seed=0)) == list(balanced_sampler(labels, 2, seed=0))


def test_train_and_test_folders_are_a_split_not_two_classes(make_image_folder):
    root = make_image_folder(name="data/train", classes={"a": 4, "b": 4}).parent
    make_image_folder(name="data/test", classes={"a": 2, "b": 2}, start_seed=500)
    split = prepare_split(DataConfig(str(root)))
    assert split.layout == "train_val" and split.class_names == ["a", "b"]
    assert split.counts() == {"train": {"a": 4, "b": 4}, "val": {"a": 2, "b": 2}}


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
