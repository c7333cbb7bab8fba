"""Uploads: folders and zips land in the store safely, or are refused with the member named."""

from __future__ import annotations

import io
import zipfile

import pytest

from ftcore.core.errors import DatasetError
from ftcore.data.scan import find_layout, unwrap
from ftcore.data.uploads import class_root, extract_zip, extract_zip_file, save_uploaded_files


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


def test_one_wrapper_walk_serves_uploads_and_the_layout(tmp_path):
    """class_root (uploads) and find_layout (scan) go through the same wrapper folders: scan.unwrap."""
    for f in ("a/b/pets/cats/1.png", "a/b/pets/dogs/2.png", "a/.DS_Store", "a/b/__MACOSX/x"):
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_bytes(b"x")
    root, wrappers = unwrap(tmp_path / "a")
    assert root == tmp_path / "a/b/pets" and wrappers == [tmp_path / "a", tmp_path / "a/b"]
    assert class_root(tmp_path / "a") == root
    layout = find_layout(tmp_path / "a")
    assert layout.root == str(root) and layout.wrapper == str(tmp_path / "a")
    assert [(p.path, p.kind) for p in layout.problems] == [(str(w), "wrapper_folder") for w in wrappers]
    assert "holds only the folder 'pets'" in layout.problems[1].message
    assert unwrap(root) == (root, [])  # class folders hold files, not folders: not a wrapper


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


def test_nested_macosx_and_link_members(tmp_path):
    data = _zip({"pets/cats/1.png": b"x", "pets/dogs/2.png": b"y", "pets/cats/__MACOSX/._1.png": b"z"})
    root = extract_zip(data, tmp_path)
    assert not list((tmp_path / "datasets").rglob("__MACOSX")), "__MACOSX at any depth is not extracted"
    assert sorted(p.name for p in (root / "cats").iterdir()) == ["1.png"]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("pets/cats/1.png", b"x")
        link = zipfile.ZipInfo("pets/dogs/passwd.png")
        link.external_attr = (0o120777 << 16)  # a symlink member pointing at /etc/passwd
        zf.writestr(link, "/etc/passwd")
    with pytest.raises(DatasetError, match=r"member 'pets/dogs/passwd.png' is a link; links are not followed"):
        extract_zip(buf.getvalue(), tmp_path, "links.zip")


def test_zip_file_on_the_server_is_extracted_once_into_the_store(tmp_path):
    z = tmp_path / "in" / "pets.zip"
    z.parent.mkdir()
    z.write_bytes(_zip({"pets/cats/1.png": b"x", "pets/dogs/2.png": b"y"}))
    store = tmp_path / "store"
    dest = extract_zip_file(z, store)
    assert dest.parent == store / "datasets" and dest.name.startswith("zip-")
    assert (dest / "pets" / "cats" / "1.png").read_bytes() == b"x"
    (dest / "pets" / "cats" / "1.png").write_bytes(b"kept")  # a second call reuses, not re-extracts
    assert extract_zip_file(z, store) == dest and (dest / "pets" / "cats" / "1.png").read_bytes() == b"kept"
    assert sorted(p.name for p in z.parent.iterdir()) == ["pets.zip"], "nothing is written beside the zip"
    bad = tmp_path / "in" / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(DatasetError, match="bad.zip is not a readable zip archive"):
        extract_zip_file(bad, store)
