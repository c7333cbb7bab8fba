"""The decoded-image cache returns what decoding returns, and any change of data or size misses it."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ftcore.cache import cache_key, decode_files
from ftcore.config import DataConfig
from ftcore.data import decode_image, prepare_split
from ftcore.errors import DatasetError

from conftest import write_image


class CountingDecode:
    def __init__(self):
        self.calls = 0

    def __call__(self, path, short_side):
        self.calls += 1
        return decode_image(path, short_side)


def _files(folder):
    return sorted(str(p) for p in folder.rglob("*.png"))


def test_cached_arrays_equal_fresh_decoding_and_are_read_back_without_decoding(make_image_folder, tmp_path):
    files = _files(make_image_folder(size=20))
    dec = CountingDecode()
    first, hit1 = decode_files(files, 16, dec, tmp_path / "cache")
    second, hit2 = decode_files(files, 16, dec, tmp_path / "cache")
    assert (hit1, hit2) == (False, True)
    assert dec.calls == len(files)  # the second call decoded nothing
    for f, a, b in zip(files, first, second):
        np.testing.assert_array_equal(a, decode_image(f, 16))
        np.testing.assert_array_equal(b, a)
        assert isinstance(b.base, np.memmap) or isinstance(b, np.memmap)
        assert min(b.shape[:2]) == 16 and b.shape[2] == 3


@pytest.mark.parametrize("change", ["size", "file_content", "file_list"])
def test_a_change_of_data_or_image_size_misses_the_cache(make_image_folder, tmp_path, change):
    folder = make_image_folder(size=20)
    files = _files(folder)
    dec = CountingDecode()
    decode_files(files, 16, dec, tmp_path / "cache")
    dec.calls = 0
    if change == "size":
        items, hit = decode_files(files, 18, dec, tmp_path / "cache")
        assert min(items[0].shape[:2]) == 18
    elif change == "file_content":
        write_image(folder / "red" / "img_000.png", (0, 0, 0), size=24, seed=99)
        os.utime(folder / "red" / "img_000.png", ns=(1, 10**18))  # a new modification time as well
        items, hit = decode_files(files, 16, dec, tmp_path / "cache")
        np.testing.assert_array_equal(items[files.index(str(folder / "red" / "img_000.png"))],
                                      decode_image(folder / "red" / "img_000.png", 16))
    else:
        items, hit = decode_files(files[:-1], 16, dec, tmp_path / "cache")
    assert not hit and dec.calls > 0
    assert cache_key(files, 16) != cache_key(files, 18)


def test_unreadable_files_are_remembered_as_reasons(make_image_folder, tmp_path):
    folder = make_image_folder()
    bad = folder / "red" / "broken.png"
    bad.write_bytes(b"not an image")
    files = _files(folder)
    items, _ = decode_files(files, None, decode_image, tmp_path / "cache")
    again, hit = decode_files(files, None, decode_image, tmp_path / "cache")
    assert hit
    i = files.index(str(bad))
    assert isinstance(items[i], str) and items[i]
    assert again[i] == items[i]
    assert sum(isinstance(a, str) for a in again) == 1


def test_a_damaged_entry_is_ignored_and_rewritten(make_image_folder, tmp_path):
    files = _files(make_image_folder())
    decode_files(files, None, decode_image, tmp_path / "cache")
    for meta in (tmp_path / "cache").glob("*.json"):
        meta.write_text("{broken")
    items, hit = decode_files(files, None, decode_image, tmp_path / "cache")
    assert not hit and all(isinstance(a, np.ndarray) for a in items)
    _, hit = decode_files(files, None, decode_image, tmp_path / "cache")
    assert hit


def test_cache_stays_under_its_size_limit(make_image_folder, tmp_path, monkeypatch):
    folder = make_image_folder(size=20)
    files = _files(folder)
    monkeypatch.setenv("FTCORE_CACHE_MAX_GB", "0.000001")  # 1 kB: only the newest entry is kept
    decode_files(files, 16, decode_image, tmp_path / "cache")
    decode_files(files, 18, decode_image, tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.json"))) == 1
    assert not list((tmp_path / "cache").glob("*.tmp-*"))


def test_abandoned_decoding_writes_no_entry(make_image_folder, tmp_path):
    files = _files(make_image_folder())

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        decode_files(files, None, decode_image, tmp_path / "cache", progress=stop)
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_prepare_split_through_the_cache_gives_the_same_split(make_image_folder, tmp_path):
    folder = make_image_folder(classes={"a": 6, "b": 6}, size=20)
    data = DataConfig(str(folder), None, 0.25)
    plain = prepare_split(data, seed=0, short_side=16)
    cached = prepare_split(data, seed=0, short_side=16, cache_dir=tmp_path / "cache")
    again = prepare_split(data, seed=0, short_side=16, cache_dir=tmp_path / "cache")
    for s in (cached, again):
        assert s.train_files == plain.train_files and s.val_files == plain.val_files
        for a, b in zip(s.train_images + s.val_images, plain.train_images + plain.val_images):
            np.testing.assert_array_equal(a, b)


def test_decode_errors_other_than_dataset_errors_propagate(tmp_path):
    def boom(path, short):
        raise RuntimeError("bug")

    with pytest.raises(RuntimeError):
        decode_files([str(tmp_path / "x.png")], None, boom, tmp_path / "cache")
    with pytest.raises(DatasetError):
        decode_image(tmp_path / "missing.png")
