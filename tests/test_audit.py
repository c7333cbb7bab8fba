"""The data audit: every kind of folder people hand over, written into tmp_path, audited and (a subset) trained.

Each test writes a small case, runs :func:`ftcore.data.audit.audit_dataset` and
checks the outcome and the message; the ``*_trains`` tests also run the
tiny two-model experiment (timm's ``test_resnet``, random init, 32 pixels) on it.
"""

from __future__ import annotations

import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, tiny_run_config, write_image
from PIL import Image

from ftcore.core.errors import DatasetError
from ftcore.data.audit import audit_dataset
from ftcore.data.images import BACKGROUND, decode_bytes, read_and_decode
from ftcore.data.split import split_from_audit


def noisy(colour, size=16, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(np.asarray(colour, np.int16) + rng.integers(-25, 26, (size, size, 3)), 0, 255).astype(np.uint8)


def folder(tmp_path: Path, classes=None, name="data", start=0) -> Path:
    """tmp_path/name/<class>/img_XXX.png, noisy, one colour per class, all distinct."""
    classes = {"red": 6, "green": 6} if classes is None else classes
    root = tmp_path / name
    for ci, (c, n) in enumerate(classes.items()):
        for i in range(n):
            write_image(root / c / f"img_{i:03d}.png", COLOURS[ci % len(COLOURS)], seed=start + 1000 * ci + i)
    return root


def by_kind(report, kind):
    return [p for p in report.problems if p.kind == kind]


def names(problems):
    return sorted(Path(p.path).name for p in problems)


def snapshot(root: Path) -> dict:
    """Every path under root with its mtime and bytes."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            st = p.lstat()
            out[str(p)] = (st.st_mtime_ns, p.read_bytes() if p.is_file() and not p.is_symlink() else None)
    return out


def train(root, store, **kw):
    from ftcore.jobs.writer import run_experiment

    cfg = tiny_run_config(root, **kw)
    run_id = store.create_run(cfg)
    summary = run_experiment(cfg, store, run_id)
    split = json.loads((store.run_dir(run_id) / "split.json").read_text())
    return summary, store.get(run_id).info, split


# -- pixel formats ----------------------------------------------------------------------------------

def _save(arr_or_im, fmt, **kw) -> bytes:
    b = io.BytesIO()
    im = arr_or_im if isinstance(arr_or_im, Image.Image) else Image.fromarray(arr_or_im)
    im.save(b, format=fmt, **kw)
    return b.getvalue()


def _alpha_half(mode):
    im = Image.new(mode, (8, 8))
    if mode == "LA":
        im.paste((100, 255), (0, 0, 8, 8))
        im.paste((100, 0), (0, 0, 4, 8))
    else:
        im.paste((200, 10, 10, 255), (0, 0, 8, 8))
        im.paste((200, 10, 10, 0), (0, 0, 4, 8))
    return im


def _palette(transparent: bool):
    im = Image.new("P", (8, 8), 1)
    im.putpalette([0, 0, 0, 200, 10, 10, 10, 10, 200] + [0] * 759)
    im.paste(2, (0, 0, 4, 8))
    return _save(im, "GIF", transparency=2) if transparent else _save(im, "PNG")


def _animated(fmt):
    frames = [Image.new("RGB", (8, 8), c) for c in ((200, 10, 10), (10, 200, 10), (10, 10, 200))]
    b = io.BytesIO()
    frames[0].save(b, format=fmt, save_all=True, append_images=frames[1:], duration=100, loop=0,
                   **({"lossless": True} if fmt == "WEBP" else {}))
    return b.getvalue()


RED = (200, 10, 10)
CASES = {
    # name: (bytes, expected left pixel, expected right pixel, converted message part or None)
    "grey_L.png": (_save(Image.new("L", (8, 8), 120), "PNG"), (120,) * 3, (120,) * 3, None),
    "grey_alpha_LA.png": (_save(_alpha_half("LA"), "PNG"), BACKGROUND, (100,) * 3, "LA with transparency: composited on white (255, 255, 255)"),
    "palette_P.png": (_palette(False), (10, 10, 200), RED, None),
    "palette_transparent.gif": (_palette(True), BACKGROUND, RED, "with transparency: composited on white"),
    "rgba.png": (_save(_alpha_half("RGBA"), "PNG"), BACKGROUND, RED, "RGBA with transparency: composited on white"),
    "cmyk.jpg": (_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95), (255, 0, 0), (255, 0, 0), "CMYK converted to RGB"),
    "cmyk.tif": (_save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "TIFF"), (255, 0, 0), (255, 0, 0), "CMYK converted to RGB"),
    "i16.png": (_save(Image.fromarray(np.full((8, 8), 65535, np.uint16)), "PNG"), (255,) * 3, (255,) * 3, "(16-bit) scaled to 8 bits (value / 257)"),
    "i16_mid.tif": (_save(Image.fromarray(np.full((8, 8), 257 * 100, np.uint16)), "TIFF"), (100,) * 3, (100,) * 3, "value / 257"),
    "i32.tif": (_save(Image.fromarray(np.tile(np.array([0, 100000], np.int32).repeat(4), (8, 1))), "TIFF"), (0,) * 3, (255,) * 3, "(32-bit integer) scaled from its range [0, 100000]"),
    "float.tif": (_save(Image.fromarray(np.tile(np.array([0.0, 1.0], np.float32).repeat(4), (8, 1))), "TIFF"), (0,) * 3, (255,) * 3, "(32-bit float) scaled from [0, 1]"),
    "one_bit.png": (_save(Image.new("1", (8, 8), 1), "PNG"), (255,) * 3, (255,) * 3, None),
    "animated.gif": (_animated("GIF"), RED, RED, "animated GIF with 3 frames: the first frame is used"),
    "animated.webp": (_animated("WEBP"), RED, RED, "animated WEBP with 3 frames: the first frame is used"),
    "plain.bmp": (_save(Image.new("RGB", (8, 8), RED), "BMP"), RED, RED, None),
    "plain.webp": (_save(Image.new("RGB", (8, 8), RED), "WEBP", lossless=True), RED, RED, None),
    "plain.tiff": (_save(Image.new("RGB", (8, 8), RED), "TIFF"), RED, RED, None),
    "phone.heic": (_save(Image.new("RGB", (8, 8), RED), "HEIF", quality=95), RED, RED, None),
    "phone.avif": (_save(Image.new("RGB", (8, 8), RED), "AVIF", quality=95), RED, RED, None),
}


@pytest.mark.parametrize("name", list(CASES))
def test_pixel_formats_become_correct_rgb(name):
    data, left, right, note = CASES[name]
    dec = decode_bytes(data, name)
    a = dec.array
    assert a.dtype == np.uint8 and a.shape == (8, 8, 3)
    tol = 12 if name.endswith((".jpg", ".heic", ".avif")) else 1
    assert np.abs(a[4, 1].astype(int) - left).max() <= tol, (a[4, 1], left)
    assert np.abs(a[4, 6].astype(int) - right).max() <= tol, (a[4, 6], right)
    msgs = [m for _, m, _ in dec.notes]
    if note is None:
        assert msgs == []
    else:
        assert len(msgs) == 1 and note in msgs[0], msgs
        assert dec.notes[0][2] == "converted"


def test_every_pixel_format_is_audited_converted_and_trains(tmp_path, store):
    root = folder(tmp_path, {"formats": 4, "plain": 6})
    for name, (data, *_rest, _note) in CASES.items():
        (root / "formats" / name).write_bytes(data)
    report = audit_dataset(root, val_fraction=0.25)
    converted = by_kind(report, "converted")
    assert names(converted) == sorted(n for n, c in CASES.items() if c[3])
    assert all(p.action == "converted" for p in converted)
    # The flat red cases are one picture in many formats: near-identical, kept once.
    dups = by_kind(report, "duplicate")
    assert set(names(dups)) < set(CASES) and len(dups) >= 8
    assert {p.kind for p in report.problems} == {"converted", "duplicate"}
    assert report.ok and report.classes == {"formats": 4 + len(CASES) - len(dups), "plain": 6}
    summary, info, split = train(root, store)
    assert summary["status"] == "finished"
    assert sum(info["counts"]["train"].values()) + sum(info["counts"]["val"].values()) == 10 + len(CASES) - len(dups)


def test_heic_without_the_plugin_is_named_unsupported():
    from ftcore.data.images import _unidentified

    heic = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    e = _unidentified(heic, "IMG_0001.HEIC")
    assert e.kind == "unsupported" and "IMG_0001.HEIC" in str(e) and "install pillow-heif" in str(e)
    avif = b"\x00\x00\x00\x1cftypavif" + b"\x00" * 64
    assert _unidentified(avif, "x.avif").kind == "unsupported"


# -- orientation -----------------------------------------------------------------------------------

def test_exif_orientation_is_applied_in_the_audit(tmp_path):
    root = folder(tmp_path)
    im = Image.new("RGB", (20, 10), (0, 0, 255))
    im.paste((255, 0, 0), (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    im.save(root / "red" / "phone.jpg", exif=exif.tobytes(), quality=95)
    report = audit_dataset(root, keep_images=True)
    a = next(it.array for it in report.items if it.path.endswith("phone.jpg"))
    assert a.shape == (20, 10, 3), "upright: 10 wide, 20 high"
    assert a[2, 5, 0] > 200 and a[17, 5, 2] > 200, "the left (red) half is on top"


# -- broken files -----------------------------------------------------------------------------------

def _broken(root: Path) -> dict[str, str]:
    """Write broken files into root/red; name -> expected kind."""
    d = root / "red"
    jpg = _save(noisy(RED, 64), "JPEG")
    (d / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    png = _save(noisy(RED, 64), "PNG")
    (d / "truncated.png").write_bytes(png[: len(png) // 2])
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (d / "zero.png").write_bytes(b"")
    (d / "notes.png").write_text("this is a text file\n")
    (d / "readme.txt").write_text("not an image either\n")
    return {"truncated.jpg": "unreadable", "truncated.png": "unreadable", "corrupt.jpg": "unreadable",
            "zero.png": "unreadable", "notes.png": "not_image", "readme.txt": "not_image"}


def test_broken_files_are_found_by_decoding_named_and_left_out(tmp_path, store):
    root = folder(tmp_path)
    expected = _broken(root)
    (root / "green" / "no_extension").write_bytes(_save(noisy(COLOURS[1], seed=77), "PNG"))
    (root / "green" / "photo.txt").write_bytes(_save(noisy(COLOURS[1], seed=78), "JPEG"))
    report = audit_dataset(root)
    assert report.ok and report.classes == {"green": 8, "red": 6}
    skipped = {Path(p.path).name: p for p in report.problems if p.action == "skipped"}
    assert {n: p.kind for n, p in skipped.items()} == expected
    assert "empty (0 bytes)" in skipped["zero.png"].message
    assert "truncated" in skipped["truncated.png"].message or "corrupt" in skipped["truncated.png"].message
    assert "ends in '.png' but the content is no image format" in skipped["notes.png"].message
    misnamed = {Path(p.path).name: p for p in by_kind(report, "misnamed")}
    assert set(misnamed) == {"no_extension", "photo.txt"} and misnamed["photo.txt"].action == "included"
    assert "content is a JPEG image" in misnamed["photo.txt"].message
    summary, info, split = train(root, store)
    assert summary["status"] == "finished"
    used = split["train"] + split["val"]
    assert len(used) == 14 and not any(Path(f).name in expected for f in used)


# -- huge images -------------------------------------------------------------------------------------

def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's header)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def test_decompression_bomb_header_is_refused_before_decoding(tmp_path):
    root = folder(tmp_path)
    (root / "red" / "bomb.png").write_bytes(_png_claiming(100_000, 100_000))  # 30 GB if decoded
    report = audit_dataset(root)
    (p,) = by_kind(report, "huge_image")
    assert p.path.endswith("bomb.png") and p.action == "skipped"
    assert "decompression bomb" in p.message and "refused" in p.message
    assert report.ok and report.classes == {"green": 6, "red": 6}


def test_large_images_over_the_pixel_limit_are_downscaled_or_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)
    root = folder(tmp_path)
    Image.fromarray(noisy(RED, 120)).save(root / "red" / "big.jpg", quality=90)   # 14,400 px: JPEG, 1/2 scale
    Image.fromarray(noisy(RED, 110)).save(root / "red" / "big.png")               # 12,100 px: PNG cannot reduce
    Image.fromarray(noisy(RED, 200)).save(root / "red" / "bigger.png")            # 40,000 px: Pillow refuses
    report = audit_dataset(root, keep_images=True)
    huge = {Path(p.path).name: p for p in by_kind(report, "huge_image")}
    assert huge["big.jpg"].action == "downscaled" and "decoded at 1/2 scale (60x60)" in huge["big.jpg"].message
    assert huge["big.png"].action == "skipped" and "cannot be decoded at a reduced scale" in huge["big.png"].message
    assert huge["bigger.png"].action == "skipped"
    arr = next(it.array for it in report.items if it.path.endswith("big.jpg"))
    assert arr.shape == (60, 60, 3)
    assert report.classes == {"green": 6, "red": 7}


# -- junk entries ---------------------------------------------------------------------------------------

def test_junk_entries_are_ignored_listed_and_never_a_class(tmp_path, store):
    root = folder(tmp_path)
    (root / "__MACOSX" / "red").mkdir(parents=True)
    (root / "__MACOSX" / "red" / "._img_000.png").write_bytes(b"\x00\x05\x16\x07")
    write_image(root / ".hidden_class" / "x.png", COLOURS[2])
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "red" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "red" / "._img_000.png").write_bytes(b"\x00\x05\x16\x07")
    write_image(root / "green" / ".ipynb_checkpoints" / "copy.png", COLOURS[3])
    write_image(root / "green" / ".thumbs" / "t.png", COLOURS[4])
    (root / "green" / "desktop.ini").write_text("[.ShellClassInfo]")
    report = audit_dataset(root)
    assert report.ok and report.class_names == ["green", "red"] and report.classes == {"green": 6, "red": 6}
    ignored = by_kind(report, "ignored")
    assert names(ignored) == sorted(["__MACOSX", ".hidden_class", ".DS_Store", "Thumbs.db", "._img_000.png",
                                     ".ipynb_checkpoints", ".thumbs", "desktop.ini"])
    assert {p.action for p in ignored} == {"ignored"}
    assert len(report.problems) == len(ignored)
    summary, info, split = train(root, store)
    assert info["class_names"] == ["green", "red"]
    assert not any("/." in f or "__MACOSX" in f for f in split["train"] + split["val"])


# -- folder shapes ---------------------------------------------------------------------------------------

def test_images_at_the_root_are_refused_with_how_to_fix(tmp_path, store):
    root = folder(tmp_path)
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in (root / "red").iterdir():
        (flat / f.name).write_bytes(f.read_bytes())
    report = audit_dataset(flat)
    assert not report.ok and report.layout == "images_at_root"
    (p,) = report.refusals()
    assert p.kind == "images_at_root" and "holds 6 files and no class folder" in p.message
    assert f"{flat / 'cats'}/*.jpg" in p.message
    with pytest.raises(DatasetError, match="holds 6 files and no class folder"):
        train(flat, store)


def test_one_wrapper_folder_is_gone_through_and_said(tmp_path, store):
    inner = folder(tmp_path, name="outer/pets")
    report = audit_dataset(tmp_path / "outer")
    assert report.ok and report.layout == "wrapper_folder" and report.split_layout == "class_folders"
    assert report.root == str(inner) and report.classes == {"green": 6, "red": 6}
    (p,) = by_kind(report, "wrapper_folder")
    assert p.action == "used" and "holds only the folder 'pets'" in p.message
    assert any("only wraps" in w for w in report.warnings)
    summary, info, _ = train(tmp_path / "outer", store)
    assert info["class_names"] == ["green", "red"]


def test_nested_folders_inside_a_class_are_included_and_said(tmp_path):
    root = folder(tmp_path)
    write_image(root / "red" / "more" / "deep" / "x.png", COLOURS[0], seed=555)
    report = audit_dataset(root)
    assert report.classes == {"green": 6, "red": 7}
    (p,) = by_kind(report, "nested")
    assert p.action == "included" and p.path.endswith("more/deep") and "count as 'red'" in p.message


def test_empty_class_folders_and_classes_without_usable_images_are_not_classes(tmp_path):
    root = folder(tmp_path, {"red": 4, "green": 4, "blue": 4})
    (root / "empty").mkdir()
    (root / "broken").mkdir()
    (root / "broken" / "a.jpg").write_bytes(b"")
    (root / "broken" / "b.png").write_text("x")
    report = audit_dataset(root)
    assert report.ok and report.class_names == ["blue", "green", "red"]
    empty = {Path(p.path).name: p for p in by_kind(report, "empty_class")}
    assert set(empty) == {"empty", "broken"}
    assert "holds no files" in empty["empty"].message
    assert "none of its 2 files is a usable image" in empty["broken"].message


def test_a_single_class_is_refused(tmp_path, store):
    root = folder(tmp_path, {"red": 5})
    (root / "green").mkdir()
    report = audit_dataset(root)
    assert not report.ok
    (p,) = report.refusals()
    assert p.kind == "single_class" and "at least two class folders with usable images; found 1 (red)" in p.message
    with pytest.raises(DatasetError, match=r"found 1 \(red\)"):
        train(root, store)


def test_train_val_class_sets_that_differ_are_named(tmp_path, store):
    folder(tmp_path, {"red": 6, "green": 6, "blue": 6}, name="ds/train")
    folder(tmp_path, {"red": 2, "green": 2}, name="ds/val", start=500)
    folder(tmp_path, {"red": 2, "green": 2}, name="ds/test", start=700)
    report = audit_dataset(tmp_path / "ds")
    assert report.ok and report.layout == "train_val"
    assert report.classes == {"train": {"blue": 6, "green": 6, "red": 6}, "val": {"green": 2, "red": 2}}
    (p,) = by_kind(report, "class_mismatch")
    assert p.action == "kept" and "class 'blue' has no usable validation image" in p.message
    assert any("classes without validation images: blue" in w for w in report.warnings)
    (t,) = by_kind(report, "unused_split")
    assert t.path.endswith("test") and t.action == "ignored"
    summary, info, split = train(tmp_path / "ds", store)
    assert summary["status"] == "finished" and info["counts"]["val"]["blue"] == 0
    # a class only in validation is refused
    folder(tmp_path, {"red": 2, "green": 2, "zebra": 1}, name="ds/val", start=900)
    report = audit_dataset(tmp_path / "ds")
    assert not report.ok
    assert any(p.kind == "class_mismatch" and p.action == "refused" and "'zebra' has validation images but no "
               "usable training image" in p.message for p in report.problems)


# -- too few images; imbalance -------------------------------------------------------------------------

def test_a_class_too_small_to_split_is_named_with_the_smallest_workable_numbers(tmp_path, store):
    root = folder(tmp_path, {"red": 6, "green": 1})
    report = audit_dataset(root, val_fraction=0.2)
    (p,) = report.refusals()
    assert p.kind == "too_few" and p.path.endswith("green")
    assert "class 'green' has 1 usable image; it needs at least 2" in p.message
    assert "5 or more for a 20% validation share" in p.message
    with pytest.raises(DatasetError, match="class 'green' has 1 usable image"):
        train(root, store)


def test_imbalance_is_warned_with_the_majority_class_accuracy(tmp_path, store):
    root = folder(tmp_path, {"red": 24, "green": 4})
    report = audit_dataset(root, val_fraction=0.25)
    # validation: red 6, green 1 -> always answering 'red' scores 6/7
    assert report.split_counts()["val"] == {"red": 6, "green": 1}
    assert report.imbalance == 6.0 and report.majority_accuracy == pytest.approx(6 / 7)
    (w,) = [w for w in report.warnings if "imbalanced" in w]
    assert "'red' has 24 training images, 'green' 4 (6.0x, above 3x)" in w
    assert "scores 0.86 validation accuracy" in w and "class-balanced loss or sampler" in w
    assert report.ok
    assert not any("imbalanced" in w for w in audit_dataset(folder(tmp_path, {"a": 6, "b": 3}, "even")).warnings)
    split = split_from_audit(audit_dataset(root, val_fraction=0.25, keep_images=True))
    assert split.majority_accuracy == pytest.approx(6 / 7) and any("imbalanced" in w for w in split.warnings)
    summary, info, split = train(root, store)
    assert summary["status"] == "finished"
    # Stored with the run, for the Compare page to show beside the metrics.
    assert info["majority_accuracy"] == pytest.approx(6 / 7)
    assert any("imbalanced" in w for w in info["data_warnings"])



def test_majority_accuracy_answers_the_first_of_the_largest_classes():
    from ftcore.data.audit import majority_accuracy

    assert majority_accuracy({"a": 5, "b": 9, "c": 9}, {"a": 1, "b": 2, "c": 3}) == pytest.approx(2 / 6)
    assert majority_accuracy({"a": 5, "b": 9}, {"a": 4}) == 0.0  # the largest class has no validation image
    assert majority_accuracy({"a": 5}, {}) is None and majority_accuracy({}, {"a": 1}) is None

# -- duplicates and leakage ----------------------------------------------------------------------------

def test_duplicates_within_a_class_are_kept_once(tmp_path, store):
    root = folder(tmp_path)
    src = root / "red" / "img_000.png"
    (root / "red" / "copy of img_000.png").write_bytes(src.read_bytes())
    yy, xx = np.mgrid[0:96, 0:96]
    scene = np.stack([xx * 2.5, yy * 2.5, 255 - xx - yy], -1)  # smooth, like a photo
    scene[(xx - 60) ** 2 + (yy - 35) ** 2 < 300] = (250, 240, 20)
    big = Image.fromarray(np.clip(scene, 0, 255).astype(np.uint8))
    big.save(root / "red" / "original.png")
    big.resize((64, 64), Image.BICUBIC).save(root / "red" / "resized.jpg", quality=80)
    report = audit_dataset(root, keep_images=True)
    dups = {Path(p.path).name: p for p in by_kind(report, "duplicate")}
    assert set(dups) == {"img_000.png", "resized.jpg"} or set(dups) == {"copy of img_000.png", "resized.jpg"}
    byte = next(p for n, p in dups.items() if n != "resized.jpg")
    assert byte.message.startswith("byte-identical copy of") and "kept once" in byte.message
    assert dups["resized.jpg"].message.startswith("near-identical (same perceptual hash) copy of")
    assert str(root / "red" / "original.png") in dups["resized.jpg"].message
    assert report.classes == {"green": 6, "red": 7}
    summary, info, split = train(root, store)
    assert sum(map(len, (split["train"], split["val"]))) == 13


def test_the_same_image_in_two_classes_is_a_label_conflict(tmp_path):
    root = folder(tmp_path)
    (root / "green" / "stray.png").write_bytes((root / "red" / "img_001.png").read_bytes())
    Image.new("RGB", (16, 16), (255, 0, 0)).save(root / "red" / "flat_red.png")
    Image.new("RGB", (16, 16), (0, 0, 255)).save(root / "green" / "flat_blue.png")
    report = audit_dataset(root)
    conflicts = by_kind(report, "label_conflict")
    assert names(conflicts) == ["img_001.png", "stray.png"] and {p.action for p in conflicts} == {"skipped"}
    assert "in different classes: 'green'" in conflicts[0].message and "'red'" in conflicts[0].message
    assert report.classes == {"green": 7, "red": 6}, "both copies out; flat images of different colours are no copies"


def test_leakage_between_train_and_validation_is_named_and_removed(tmp_path, store):
    folder(tmp_path, {"red": 6, "green": 6}, name="ds/train")
    val = folder(tmp_path, {"red": 2, "green": 2}, name="ds/val", start=500)
    leaked = val / "red" / "leaked.png"
    leaked.write_bytes((tmp_path / "ds/train/red/img_003.png").read_bytes())
    report = audit_dataset(tmp_path / "ds", keep_images=True)
    (p,) = by_kind(report, "leakage")
    assert p.path == str(leaked) and p.action == "skipped"
    assert "copy of the training image" in p.message and "dropped from validation" in p.message
    assert report.classes["val"] == {"green": 2, "red": 2}
    split = split_from_audit(report)
    assert str(leaked) not in split.val_files and len(split.val_files) == 4
    summary, info, run_split = train(tmp_path / "ds", store)
    assert str(leaked) not in run_split["val"]
    # The run lists the leaked copy among the files it left out (the CLI and the train page show that list).
    assert any(p["path"] == str(leaked) and p["kind"] == "leakage" for p in info["skipped"])


# -- names ---------------------------------------------------------------------------------------------

def test_non_ascii_and_spaced_names_work_end_to_end(tmp_path, store):
    root = folder(tmp_path, {"chats noirs": 5, "Ölfässer 🐝": 5}, name="mes données")
    write_image(root / "chats noirs" / "été 2024 (1).png", COLOURS[0], seed=321)
    report = audit_dataset(root)
    assert report.ok and report.class_names == ["chats noirs", "Ölfässer 🐝"]
    assert json.loads(json.dumps(report.to_json(), ensure_ascii=False))["classes"] == {"chats noirs": 6,
                                                                                       "Ölfässer 🐝": 5}
    summary, info, split = train(root, store)
    assert info["class_names"] == ["chats noirs", "Ölfässer 🐝"]
    assert str(root / "chats noirs" / "été 2024 (1).png") in split["train"] + split["val"]


# -- archives and data roots ---------------------------------------------------------------------------

def _zip_of(root: Path, dest: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(dest, "w") as zf:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                zf.write(f, f"{root.name}/{f.relative_to(root)}")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return dest


def test_a_zip_is_extracted_into_the_store_never_beside_it(tmp_path, store):
    root = folder(tmp_path, name="pets")
    z = _zip_of(root, tmp_path / "pets.zip", {"pets/red/__MACOSX/._x.png": b"junk", "__MACOSX/pets/._y": b"j"})
    before = snapshot(tmp_path / "pets") | {str(z): z.stat().st_mtime_ns}
    report = audit_dataset(z, store_root=store.root)
    assert report.ok and report.classes == {"green": 6, "red": 6} and report.layout == "wrapper_folder"
    assert Path(report.root).is_relative_to(store.root / "datasets")
    assert not list((store.root / "datasets").rglob("__MACOSX"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pets", "pets.zip", "store"]
    assert audit_dataset(z, store_root=store.root).root == report.root, "the same zip is extracted once"
    assert snapshot(tmp_path / "pets") | {str(z): z.stat().st_mtime_ns} == before


def test_data_roots_refuse_paths_and_links_outside_them(tmp_path, monkeypatch):
    allowed = tmp_path / "allowed"
    root = folder(allowed)
    outside = folder(tmp_path, name="elsewhere")
    (root / "red" / "link.png").symlink_to(outside / "red" / "img_000.png")
    (allowed / "sneaky").symlink_to(outside, target_is_directory=True)
    monkeypatch.setenv("FTCORE_DATA_ROOTS", os.pathsep.join([str(allowed), str(tmp_path / "other")]))
    report = audit_dataset(root)
    assert report.ok and report.classes == {"green": 6, "red": 6}
    (p,) = by_kind(report, "outside_roots")
    assert p.path.endswith("link.png") and p.action == "skipped" and "outside the allowed data folders" in p.message
    with pytest.raises(DatasetError, match=r"elsewhere is outside the data folders this server allows .*"
                                           r"FTCORE_DATA_ROOTS"):
        audit_dataset(outside)
    with pytest.raises(DatasetError, match=r"sneaky \(a link to .*elsewhere\) is outside the data folders"):
        audit_dataset(allowed / "sneaky")
    monkeypatch.delenv("FTCORE_DATA_ROOTS")
    assert audit_dataset(outside).ok, "without FTCORE_DATA_ROOTS any readable folder serves"


# -- the user's folder is never written; progress; reading once ------------------------------------------

def test_the_users_folder_is_never_written_to(tmp_path, store):
    root = folder(tmp_path)
    _broken(root)
    (root / ".DS_Store").write_bytes(b"x")
    (root / "red" / "dup.png").write_bytes((root / "red" / "img_000.png").read_bytes())
    before = snapshot(root)
    audit_dataset(root)
    train(root, store)
    assert snapshot(root) == before


def test_progress_is_reported_per_file_and_each_file_is_read_once(tmp_path, monkeypatch):
    import ftcore.data.images as images

    root = folder(tmp_path, {"red": 5, "green": 5})
    reads: list[str] = []
    real = images.read_and_decode
    monkeypatch.setattr(images, "read_and_decode", lambda p, s=None: (reads.append(p), real(p, s))[1])
    import ftcore.data.audit as audit_mod
    monkeypatch.setattr(audit_mod, "read_and_decode", images.read_and_decode)
    seen = []
    audit_dataset(root, progress=lambda d, t: seen.append((d, t)))
    assert seen == [(i, 10) for i in range(1, 11)]
    assert sorted(reads) == sorted(map(str, root.rglob("*.png")))


def test_a_progress_callback_that_raises_stops_the_audit(tmp_path):
    root = folder(tmp_path, {"red": 20, "green": 20})

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        audit_dataset(root, progress=stop, workers=1)


def test_read_and_decode_returns_the_bytes_it_hashed(tmp_path):
    p = write_image(tmp_path / "x.png", COLOURS[0])
    data, dec = read_and_decode(p)
    assert data == p.read_bytes() and dec.format == "PNG" and dec.size == (16, 16)


def test_a_pipe_or_device_in_a_class_folder_is_left_out_not_read(tmp_path):
    import os as _os

    root = folder(tmp_path)
    _os.mkfifo(root / "red" / "pipe.png")
    (root / "green" / "zero.png").symlink_to("/dev/zero")
    report = audit_dataset(root)
    assert report.ok
    for name in ("pipe.png", "zero.png"):
        (p,) = [p for p in report.problems if p.path.endswith(name)]
        assert p.action == "skipped" and "not a regular file" in p.message
