"""The decoded-image cache gives what decoding gives, and any change of data or size misses it."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import write_image

import ftcore.data.audit
from ftcore.core.config import DataConfig
from ftcore.data.audit import audit_dataset
from ftcore.data.cache import CacheEntryWriter, cache_folder, cache_key, load_entry
from ftcore.data.images import decode_image
from ftcore.data.split import prepare_split


@pytest.fixture
def decodes(monkeypatch):
    """Files read and decoded by the audit, in order."""
    calls: list[str] = []
    real = ftcore.data.audit.read_and_decode

    def counting(path, side):
        calls.append(str(path))
        return real(path, side)

    monkeypatch.setattr(ftcore.data.audit, "read_and_decode", counting)
    return calls


def _audit(folder, store, side=16, **kw):
    return audit_dataset(folder, short_side=side, keep_images=True, store_root=store, workers=1, **kw)


def _items(rep):
    return {it.path: it for it in rep.items}


def test_second_audit_reads_the_cache_and_gives_the_same_report(make_image_folder, tmp_path, decodes):
    folder = make_image_folder(classes={"red": 5, "green": 5}, size=20)
    (folder / "red" / "broken.png").write_bytes(b"not an image")
    first = _audit(folder, tmp_path / "store")
    n = len(decodes)
    assert n == 11
    second = _audit(folder, tmp_path / "store")
    assert len(decodes) == n  # nothing decoded again
    assert second.to_json() == first.to_json()
    a, b = _items(first), _items(second)
    for path, it in a.items():
        assert b[path].usable == it.usable and b[path].sha == it.sha
        if it.usable:
            np.testing.assert_array_equal(b[path].array, decode_image(path, 16))
            np.testing.assert_array_equal(b[path].phash, it.phash)
            assert isinstance(b[path].array.base, np.memmap) or isinstance(b[path].array, np.memmap)
    assert set(second.thumbnails) == set(first.thumbnails)
    for k in first.thumbnails:
        np.testing.assert_array_equal(second.thumbnails[k], first.thumbnails[k])


@pytest.mark.parametrize("change", ["image_size", "file_content", "file_list"])
def test_a_change_of_data_or_image_size_misses_the_cache(make_image_folder, tmp_path, decodes, change):
    folder = make_image_folder(classes={"red": 4, "green": 4}, size=20)
    _audit(folder, tmp_path / "store")
    decodes.clear()
    side = 16
    if change == "image_size":
        side = 18
    elif change == "file_content":
        write_image(folder / "red" / "img_000.png", (0, 0, 0), size=24, seed=99)
        os.utime(folder / "red" / "img_000.png", ns=(1, 10**18))
    else:
        write_image(folder / "green" / "img_new.png", (0, 0, 0), size=24, seed=98)
    rep = _audit(folder, tmp_path / "store", side=side)
    assert len(decodes) == len(rep.items)  # decoded afresh
    for it in rep.items:
        np.testing.assert_array_equal(it.array, decode_image(it.path, side))


def test_the_key_covers_size_and_files(tmp_path):
    f = write_image(tmp_path / "a.png", (1, 2, 3))
    assert cache_key([str(f)], 16) != cache_key([str(f)], 18)
    k = cache_key([str(f)], 16)
    os.utime(f, ns=(1, 10**18))
    assert cache_key([str(f)], 16) != k


def test_a_damaged_entry_is_ignored_and_written_again(make_image_folder, tmp_path, decodes):
    folder = make_image_folder(classes={"red": 3, "green": 3})
    _audit(folder, tmp_path / "store")
    for meta in cache_folder(tmp_path / "store").glob("*.json"):
        meta.write_text("{broken")
    decodes.clear()
    rep = _audit(folder, tmp_path / "store")
    assert len(decodes) == 6 and rep.ok
    decodes.clear()
    _audit(folder, tmp_path / "store")
    assert decodes == []


def test_the_cache_stays_under_its_size_limit(make_image_folder, tmp_path, monkeypatch):
    folder = make_image_folder(classes={"red": 3, "green": 3}, size=20)
    monkeypatch.setenv("FTCORE_CACHE_MAX_GB", "0.000001")  # 1 kB: only the newest entry is kept
    _audit(folder, tmp_path / "store", side=16)
    _audit(folder, tmp_path / "store", side=18)
    assert len(list(cache_folder(tmp_path / "store").glob("*.json"))) == 1
    assert not list(cache_folder(tmp_path / "store").glob("*.tmp-*"))


def test_an_abandoned_audit_writes_no_entry(make_image_folder, tmp_path):
    folder = make_image_folder(classes={"red": 4, "green": 4})

    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _audit(folder, tmp_path / "store", progress=stop)
    assert not cache_folder(tmp_path / "store").exists() or not list(cache_folder(tmp_path / "store").iterdir())


def test_no_cache_when_turned_off(make_image_folder, tmp_path, decodes):
    folder = make_image_folder(classes={"red": 3, "green": 3})
    _audit(folder, tmp_path / "store", cache=False)
    _audit(folder, tmp_path / "store", cache=False)
    assert len(decodes) == 12
    assert not cache_folder(tmp_path / "store").exists()


def test_entry_round_trip(tmp_path):
    arrays = [np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), None, np.full((4, 1, 3), 7, np.uint8)]
    with CacheEntryWriter(tmp_path, "k") as w:
        for i, a in enumerate(arrays):
            w.add(a, {"i": i})
        w.commit()
    back = load_entry(tmp_path, "k", 3)
    for (arr, facts), a, i in zip(back, arrays, range(3)):
        assert facts == {"i": i}
        if a is None:
            assert arr is None
        else:
            np.testing.assert_array_equal(arr, a)
            assert not arr.flags.writeable
    assert load_entry(tmp_path, "k", 4) is None  # another file count is another entry


def test_prepare_split_through_the_cache_gives_the_same_split(make_image_folder, tmp_path):
    folder = make_image_folder(classes={"a": 6, "b": 6}, size=20)
    data = DataConfig(str(folder), None, 0.25)
    first = prepare_split(data, seed=0, short_side=16, store_root=tmp_path / "store")
    again = prepare_split(data, seed=0, short_side=16, store_root=tmp_path / "store")
    assert again.train_files == first.train_files and again.val_files == first.val_files
    for a, b in zip(again.train_images + again.val_images, first.train_images + first.val_images):
        np.testing.assert_array_equal(a, b)


def test_a_name_that_is_not_utf8_is_audited(tmp_path):
    import os as _os

    root = tmp_path / "data"
    for c in ("a", "b"):
        for i in range(3):
            write_image(root / c / f"{i}.png", (200, 20, 20) if c == "a" else (20, 20, 200), seed=i)
    bad = _os.path.join(_os.fsencode(root / "a"), b"\xff\xfe_latin1_\xe9.png")
    with open(bad, "wb") as fh:
        fh.write((root / "a" / "0.png").read_bytes()[:-1] + b"\x82")  # a valid PNG, other bytes than 0.png
    rep = _audit(root, tmp_path / "store")
    assert rep.ok and sum(it.class_name == "a" for it in rep.items) == 4


def test_a_file_rewritten_with_size_and_mtime_restored_misses_the_cache(make_image_folder, tmp_path, decodes):
    folder = make_image_folder(classes={"red": 3, "green": 3})
    target = folder / "red" / "img_000.png"
    _audit(folder, tmp_path / "store")
    st = os.stat(target)
    data = bytearray(target.read_bytes())
    other = (folder / "green" / "img_000.png").read_bytes()
    target.write_bytes(other[:len(data)].ljust(len(data), b"\0"))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    decodes.clear()
    _audit(folder, tmp_path / "store")
    assert len(decodes) == 6  # the change time moved: decoded afresh


def test_an_unwritable_cache_gives_a_warning_and_the_audit_goes_on(make_image_folder, tmp_path, caplog):
    folder = make_image_folder(classes={"red": 3, "green": 3})
    store = tmp_path / "store"
    (store / "cache").mkdir(parents=True)
    (store / "cache" / "decoded").write_text("a file where the cache folder should be")
    rep = _audit(folder, store)
    assert rep.ok and all(it.array is not None for it in rep.items)
    assert "cannot write the decoded-image cache" in caplog.text


@pytest.mark.parametrize("value,expected", [("inf", 2**62), ("1e400", 2**62), ("nan", int(5e9)), ("abc", int(5e9)),
                                            ("0.5", int(0.5e9))])
def test_cache_limits_from_the_environment(monkeypatch, value, expected):
    from ftcore.data.cache import cache_limit_bytes

    monkeypatch.setenv("FTCORE_CACHE_MAX_GB", value)
    assert cache_limit_bytes() == expected


@pytest.mark.parametrize("damage", ["no_facts", "bad_sha", "short_phash", "zero_shape"])
def test_an_entry_with_damaged_facts_is_decoded_again(make_image_folder, tmp_path, decodes, damage):
    import json

    folder = make_image_folder(classes={"red": 3, "green": 3})
    _audit(folder, tmp_path / "store")
    (meta,) = cache_folder(tmp_path / "store").glob("*.json")
    d = json.loads(meta.read_text())
    e = d["entries"][0]
    if damage == "no_facts":
        del e["facts"]
    elif damage == "bad_sha":
        e["facts"]["sha"] = "zz"
    elif damage == "short_phash":
        e["facts"]["phash"] = "00"
    else:
        e["shape"] = [0, 0]
    meta.write_text(json.dumps(d))
    decodes.clear()
    rep = _audit(folder, tmp_path / "store")
    assert rep.ok and len(decodes) == 6
