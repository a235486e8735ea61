"""Reading bundles and stores safely: directories with links, and hostile zip archives (bombs,
path traversal, duplicate names, links, encrypted or truncated members)."""

from __future__ import annotations

import io
import os
import stat
import struct
import warnings
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocol.container import (
    MAX_FILE_BYTES,
    Container,
    DirectoryContainer,
    ZipContainer,
    open_container,
)
from protocol.errors import DecodeError

FILES = {
    "manifest.cose": b"manifest",
    "trust/root.cose": b"root" * 100,
    "media/cam-001/000000000001.ubm": bytes(range(256)) * 4,
}


def _zip(path: Path, files: dict[str, bytes], *, prefix: str = "") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            zf.writestr(prefix + name, data)
    return path


def _zip_infos(path: Path, infos: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about duplicate names: we want them
        with zipfile.ZipFile(path, "w") as zf:
            for info, data in infos:
                zf.writestr(info, data)
    return path


def _read_all(container: Container) -> dict[str, bytes]:
    out = {}
    for name in container.files():
        with container.open(name) as f:
            out[name] = f.read()
    return out


# ----------------------------------------------------------------- directories
@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A bundle-like folder."""
    root = tmp_path / "bundle"
    for name, data in FILES.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def test_directory_container(folder: Path) -> None:
    c = open_container(folder)
    assert isinstance(c, DirectoryContainer)
    assert list(c.files()) == sorted(FILES)
    assert _read_all(c) == FILES
    assert c.exists("trust/root.cose")
    assert not c.exists("trust")
    assert not c.exists("missing")
    assert c.listdir("") == ["manifest.cose", "media", "trust"]
    assert c.listdir("media") == ["cam-001"]
    assert c.listdir("nowhere") == []
    assert c.read("manifest.cose", 8) == b"manifest"
    with pytest.raises(DecodeError, match="larger"):
        c.read("manifest.cose", 7)
    with pytest.raises(FileNotFoundError):
        c.open("missing")
    c.close()


def test_files_are_listed_in_sorted_path_order(tmp_path: Path) -> None:
    names = ["b/a", "a-b", "a/z", "a/b/c", "c", "a.b/c", "a0"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(name)
    listed = list(DirectoryContainer(tmp_path).files())
    assert listed == sorted(names) == ["a-b", "a.b/c", "a/b/c", "a/z", "a0", "b/a", "c"]
    assert listed == list(
        open_container(_zip(tmp_path / "z.zip", dict.fromkeys(names, b""))).files()
    )


@pytest.mark.parametrize(
    "path", ["../x", "/etc/passwd", "a/../b", "./manifest.cose", "a//b", "a\\b", ""]
)
def test_directory_refuses_unsafe_paths(folder: Path, path: str) -> None:
    c = DirectoryContainer(folder)
    with pytest.raises(DecodeError):
        c.open(path)
    assert not c.exists(path)


def test_directory_never_follows_links(folder: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_bytes(b"secret")
    os.symlink(outside / "secret", folder / "trust" / "link.cose")
    os.symlink(outside, folder / "linked-dir")
    c = DirectoryContainer(folder)
    names = list(c.files())
    assert "trust/link.cose" in names  # listed, so that a verifier reports it
    assert "linked-dir" in names
    assert not any(n.startswith("linked-dir/") for n in names)
    assert not c.exists("trust/link.cose")
    with pytest.raises(DecodeError, match="symbolic"):
        c.open("trust/link.cose")
    with pytest.raises(DecodeError, match="symbolic"):
        c.open("linked-dir/secret")
    assert c.listdir("linked-dir") == []


def test_a_linked_root_is_resolved(folder: Path, tmp_path: Path) -> None:
    link = tmp_path / "link-to-bundle"
    os.symlink(folder, link)
    assert _read_all(DirectoryContainer(link)) == FILES


def test_open_container_refuses(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="no such"):
        open_container(tmp_path / "missing")
    junk = tmp_path / "junk.zip"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(DecodeError, match=r"not a directory or a \.zip"):
        open_container(junk)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(DecodeError):
        open_container(empty)


# ----------------------------------------------------------------- zip archives
def test_zip_container(tmp_path: Path) -> None:
    c = open_container(_zip(tmp_path / "b.zip", FILES))
    assert isinstance(c, ZipContainer)
    assert list(c.files()) == sorted(FILES)
    assert _read_all(c) == FILES
    assert c.exists("manifest.cose")
    assert not c.exists("trust")
    assert c.listdir("") == ["manifest.cose", "media", "trust"]
    assert c.listdir("media") == ["cam-001"]
    assert c.listdir("media/cam-001") == ["000000000001.ubm"]
    assert c.read("trust/root.cose", 400) == FILES["trust/root.cose"]
    with pytest.raises(DecodeError, match="larger"):
        c.read("trust/root.cose", 399)
    with pytest.raises(FileNotFoundError):
        c.open("missing")
    with pytest.raises(FileNotFoundError):
        c.read("missing", 10)
    c.close()


def test_zip_with_one_top_folder(tmp_path: Path) -> None:
    c = open_container(_zip(tmp_path / "b.zip", FILES, prefix="export-17/"))
    assert _read_all(c) == FILES  # the folder is taken off


def test_zip_directory_entries_are_ignored(tmp_path: Path) -> None:
    path = tmp_path / "b.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("manifest.cose", b"m")
        zf.writestr("trust/", b"")
        zf.writestr("trust/root.cose", b"r")
    assert list(open_container(path).files()) == ["manifest.cose", "trust/root.cose"]


@pytest.mark.parametrize(
    "name",
    ["../evil", "a/../../evil", "/abs/path", "a/./b", "a//b", "./a", "dir\\file", "a/.."],
)
def test_zip_refuses_unsafe_member_names(tmp_path: Path, name: str) -> None:
    path = _zip_infos(
        tmp_path / "b.zip", [(zipfile.ZipInfo("ok"), b"x"), (zipfile.ZipInfo(name), b"y")]
    )
    with pytest.raises(DecodeError, match="unsafe"):
        open_container(path)


def test_zip_refuses_a_member_without_a_name(tmp_path: Path) -> None:
    path = _zip_infos(
        tmp_path / "b.zip", [(zipfile.ZipInfo("m"), b"m"), (zipfile.ZipInfo(""), b"x")]
    )
    with pytest.raises(DecodeError, match="unsafe"):
        open_container(path)


def test_zip_refuses_duplicate_names(tmp_path: Path) -> None:
    path = _zip_infos(
        tmp_path / "b.zip",
        [(zipfile.ZipInfo("manifest.cose"), b"one"), (zipfile.ZipInfo("manifest.cose"), b"two")],
    )
    with pytest.raises(DecodeError, match="twice"):
        open_container(path)


def test_zip_refuses_encrypted_members(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", {"manifest.cose": b"x"})
    data = bytearray(path.read_bytes())  # zipfile cannot write one: set the flag by hand
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        data[data.index(signature) + offset] |= 0x1
    path.write_bytes(bytes(data))
    with pytest.raises(DecodeError, match="encrypted"):
        open_container(path)


def test_zip_symlink_member_is_only_bytes(tmp_path: Path) -> None:
    info = zipfile.ZipInfo("trust/root.cose")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    path = _zip_infos(tmp_path / "b.zip", [(zipfile.ZipInfo("m"), b"m"), (info, b"/etc/passwd")])
    c = open_container(path)
    # Never followed: a link member reads as the text of its target, like any other bytes.
    assert c.read("trust/root.cose", 100) == b"/etc/passwd"


def test_real_zip_bomb_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    chunk = bytes(1 << 20)
    with (
        zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf,
        zf.open("media/cam-001/000000000001.ubm", "w") as member,
    ):
        for _ in range(65):
            member.write(chunk)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(DecodeError, match="zip bomb"):
        open_container(path)


def _patch_sizes(data: bytes, local: int | None, central: int) -> bytes:
    """Rewrite the uncompressed size of the first member in its headers."""
    out = bytearray(data)
    cd = out.index(b"PK\x01\x02")
    struct.pack_into("<I", out, cd + 24, central)
    if local is not None:
        struct.pack_into("<I", out, out.index(b"PK\x03\x04") + 22, local)
    return bytes(out)


def test_zip_declaring_a_huge_member_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", {"manifest.cose": b"m" * 100})
    path.write_bytes(_patch_sizes(path.read_bytes(), None, MAX_FILE_BYTES + 1))
    with pytest.raises(DecodeError, match="over the limit"):
        open_container(path)


def test_zip_declaring_too_much_for_its_size_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", {"manifest.cose": b"m" * 100})
    path.write_bytes(_patch_sizes(path.read_bytes(), None, 100 << 20))
    with pytest.raises(DecodeError, match="zip bomb"):
        open_container(path)


def test_zip_member_longer_than_declared_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", {"manifest.cose": b"m" * 5000})
    path.write_bytes(_patch_sizes(path.read_bytes(), 10, 10))
    c = open_container(path)
    with pytest.raises(DecodeError), c.open("manifest.cose") as f:
        f.read()


def test_zip_member_shorter_than_declared_is_refused(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", {"manifest.cose": b"m" * 5000})
    path.write_bytes(_patch_sizes(path.read_bytes(), 6000, 6000))
    c = open_container(path)
    with pytest.raises(DecodeError), c.open("manifest.cose") as f:
        f.read()


def test_zip_with_corrupt_deflate_data(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", {"manifest.cose": bytes(range(256)) * 20})
    data = bytearray(path.read_bytes())
    start = data.index(b"PK\x03\x04") + 30 + len("manifest.cose")
    for i in range(start + 2, start + 40):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    c = open_container(path)
    with pytest.raises(DecodeError), c.open("manifest.cose") as f:
        f.read()


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.9, 0.99])
def test_truncated_zip(tmp_path: Path, keep: float) -> None:
    path = _zip(tmp_path / "b.zip", FILES)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(DecodeError):
        open_container(path)


def test_zip_missing_its_middle(tmp_path: Path) -> None:
    path = _zip(tmp_path / "b.zip", FILES)
    data = path.read_bytes()
    path.write_bytes(data[:100] + data[400:])
    try:
        c = open_container(path)
    except DecodeError:
        return
    with pytest.raises(DecodeError):
        _read_all(c)


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(st.data())
def test_mutated_zip_raises_decode_errors_only(tmp_path: Path, data: st.DataObject) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.cose", b"x" * 300, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("trust/root.cose", bytes(range(256)) * 4, compress_type=zipfile.ZIP_DEFLATED)
        zf.writestr("journal/00000000.log", b"\x41a" * 100, compress_type=zipfile.ZIP_STORED)
    raw = bytearray(buf.getvalue())
    for _ in range(data.draw(st.integers(1, 6))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path / "fuzz.zip"
    path.write_bytes(bytes(raw))
    try:
        c = open_container(path)
    except DecodeError:
        return
    try:
        for name in c.files():
            try:
                with c.open(name) as f:
                    f.read()
            except DecodeError:
                pass
    finally:
        c.close()
