"""Uploads: folders and zips land in the store safely, or are refused with the member named."""

from __future__ import annotations

import io
import zipfile

import pytest

from ftcore.errors import DatasetError
from ftcore.uploads import extract_zip, save_uploaded_files


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_with_a_wrapper_folder_and_macosx_unpacks_to_the_class_folders(tmp_path):
    data = _zip({"pets/cats/1.png": b"x", "pets/dogs/2.png": b"y", "__MACOSX/pets/._1.png": b"z"})
    root = extract_zip(data, tmp_path)
    assert sorted(p.name for p in root.iterdir()) == ["cats", "dogs"]
    assert root.is_relative_to(tmp_path / "datasets")
    assert not list((tmp_path / "datasets").rglob("__MACOSX"))


@pytest.mark.parametrize("member", ["../evil.png", "/etc/evil.png", "a/../../evil.png"])
def test_zip_member_leaving_the_folder_is_refused(tmp_path, member):
    with pytest.raises(DatasetError, match="would be written outside the folder; refused"):
        extract_zip(_zip({member: b"x"}), tmp_path, "bad.zip")
    assert not (tmp_path / "evil.png").exists()


def test_zip_that_cannot_be_extracted_names_the_member_and_keeps_nothing(tmp_path):
    # A file and a folder of the same name: the second member cannot be written.
    data = _zip({"c/a": b"file", "c/a/1.png": b"x"})
    with pytest.raises(DatasetError, match=r"member 'c/a/1.png' cannot be extracted .*nothing was kept"):
        extract_zip(data, tmp_path, "clash.zip")
    assert list((tmp_path / "datasets").iterdir()) == []


def test_not_a_zip_is_refused_with_its_name(tmp_path):
    with pytest.raises(DatasetError, match="photos.zip is not a readable zip archive"):
        extract_zip(b"not a zip", tmp_path, "photos.zip")


def test_uploaded_folder_keeps_relative_paths(tmp_path):
    root = save_uploaded_files([("pets/cats/1.png", b"x"), ("pets/dogs/2.png", b"y")], tmp_path)
    assert (root / "cats" / "1.png").read_bytes() == b"x"


def test_uploaded_name_with_a_nul_byte_is_refused_and_nothing_kept(tmp_path):
    with pytest.raises(DatasetError, match="is not a safe relative path"):
        save_uploaded_files([("ok/a.png", b"x"), ("bad/\x00.png", b"y")], tmp_path)
    assert list((tmp_path / "datasets").iterdir()) == []
