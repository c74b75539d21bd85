"""Deployment packages: hostile zips are refused naming the entry, before anything is written;
good ones unpack into a fresh version folder that is complete before it appears."""

from __future__ import annotations

import io
import os
import re
import stat
import time
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from router.store import archive
from router.store.archive import ArchiveError, check, install, prune

Entries = list[tuple[str | zipfile.ZipInfo, bytes]]


def make_zip(entries: Entries, compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: some cases want one
        with zipfile.ZipFile(buffer, "w", compression) as z:
            for name, data in entries:
                z.writestr(name, data)
    return buffer.getvalue()


def special(name: str, kind: int, mode: int = 0o644) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix: the mode in external_attr's high half counts
    info.external_attr = (kind | mode) << 16
    return info


def link(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    return special(name, stat.S_IFLNK, 0o777), target.encode()


def patch_central(data: bytes, offset: int, value: int, size: int) -> bytes:
    """Overwrite a field of the last entry's central directory header: what zipfile trusts."""
    patched = bytearray(data)
    at = patched.rfind(b"PK\x01\x02")
    patched[at + offset:at + offset + size] = value.to_bytes(size, "little")
    return bytes(patched)


def tree(folder: Path) -> dict[str, bytes | str]:
    """Everything under folder: file contents, and link targets (prefixed "->")."""
    found: dict[str, bytes | str] = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_symlink():
            found[key] = "->" + os.readlink(path)
        elif path.is_file():
            found[key] = path.read_bytes()
    return found


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "code"
    folder.mkdir()
    return folder


def assert_nothing_written(root: Path) -> None:
    assert list(root.iterdir()) == []  # not even a staging folder
    assert list(root.parent.iterdir()) == [root]  # and nothing beside it either


GOOD: Entries = [("app.py", b"def handler(e, c):\n    return 1\n"), ("pkg/__init__.py", b""),
                 ("pkg/mod.py", b"X = 1\n")]


# --- hostile archives --------------------------------------------------------------------------


@pytest.mark.parametrize(("entries", "words"), [
    ([("../evil.py", b"x")], 'entry "../evil.py" escapes the function folder'),
    ([("a/../../evil.py", b"x")], 'entry "a/../../evil.py" escapes the function folder'),
    ([("..\\evil.py", b"x")], 'entry "..\\evil.py" escapes the function folder'),
    ([("/etc/cron.d/x", b"x")], 'entry "/etc/cron.d/x" is an absolute path'),
    ([("C:\\windows\\x", b"x")], 'entry "C:\\windows\\x" is an absolute path'),
    ([("\\\\server\\share", b"x")], 'entry "\\\\server\\share" is an absolute path'),
    ([("\\evil.py", b"x")], 'entry "\\evil.py" is an absolute path'),
    ([("a/..", b"x")], 'entry "a/.." has no file name'),
    ([("x" * 256, b"x")], "has a name longer than 255 bytes"),
    ([link("link", "/etc/passwd")], 'entry "link" is a link pointing outside the function folder'),
    ([link("a/link", "../../x")], 'entry "a/link" is a link pointing outside the function folder'),
    # Each link alone stays inside, but "self/.." is root/.. once "self" is followed.
    ([link("self", "."), link("up", "self/../x")], 'entry "up" is a link pointing outside'),
    ([link("a", "b"), link("b", "a")], 'entry "a" is a link in a loop'),
    ([link("empty", "")], 'entry "empty" is a link with an empty or invalid target'),
    ([(special("bad", stat.S_IFLNK, 0o777), b"\xff\xfe")], 'entry "bad" is a link with a target that is not'),
    ([link("lib", "pkg"), ("pkg/x.py", b""), ("lib/evil.py", b"x")],
     'entry "lib/evil.py" is inside "lib", which is a link'),
    ([("app.py", b"x"), ("app.py/x", b"x")], 'entry "app.py/x" is inside "app.py", which is a file'),
    ([(special("fifo", stat.S_IFIFO), b"")], 'entry "fifo" is a device or pipe'),
    ([(special("dev", stat.S_IFCHR), b"")], 'entry "dev" is a device or pipe'),
    ([(special("disk", stat.S_IFBLK), b"")], 'entry "disk" is a device or pipe'),
    ([(special("sock", stat.S_IFSOCK), b"")], 'entry "sock" is a device or pipe'),
    ([("app.py", b"1"), ("app.py", b"2")], 'entry "app.py" appears twice'),
    ([("pkg/mod.py", b"1"), ("pkg/./mod.py", b"2")], 'entries "pkg/mod.py" and "pkg/./mod.py" unpack to'),
    ([], "the zip archive is empty"),
    ([("pkg/", b""), ("pkg/sub/", b"")], "no files, only folders"),
], ids=lambda value: None if isinstance(value, list) else value[:40])
def test_hostile_zips_are_refused_naming_the_entry(root: Path, entries: Entries, words: str) -> None:
    data = make_zip(entries)
    with pytest.raises(ArchiveError) as by_check:
        check(data)
    assert words in str(by_check.value)
    with pytest.raises(ArchiveError) as by_install:
        install(data, root)
    assert str(by_install.value) == str(by_check.value)
    assert_nothing_written(root)


def test_a_hostile_name_is_shown_escaped(root: Path) -> None:
    with pytest.raises(ArchiveError) as caught:
        check(make_zip([("../\x1b[2Jx", b"")]))
    assert str(caught.value) == 'entry "../\\x1b[2Jx" escapes the function folder'


@pytest.mark.parametrize(("offset", "value", "size", "words"), [
    (8, 0x1, 2, 'entry "app.py" is encrypted'),  # general purpose flag bit 0
    (10, 99, 2, 'entry "app.py" uses compression method 99'),  # 99: WinZip AES
])
def test_entries_zipfile_cannot_read_are_refused(root: Path, offset: int, value: int, size: int,
                                                 words: str) -> None:
    data = patch_central(make_zip([("app.py", b"x = 1\n")]), offset, value, size)
    with pytest.raises(ArchiveError, match=words):
        install(data, root)
    assert_nothing_written(root)


@pytest.mark.parametrize("data", [b"", b"not a zip", b"PK\x03\x04" + b"\0" * 40, make_zip(GOOD)[:-30]],
                         ids=["empty-bytes", "text", "bare-header", "truncated"])
def test_not_a_zip_is_refused_clearly(root: Path, data: bytes) -> None:
    with pytest.raises(ArchiveError, match=r"^the upload is not a valid zip archive"):
        check(data)
    with pytest.raises(ArchiveError):
        install(data, root)
    assert_nothing_written(root)


def test_corrupt_contents_fail_the_install_and_leave_nothing(root: Path) -> None:
    # check() does not inflate contents (install verifies each CRC as it streams), so this passes
    # check and must still fail before any version appears.
    payload = b"def handler(e, c):\n    return 1\n" * 100
    data = bytearray(make_zip([("app.py", payload)], zipfile.ZIP_DEFLATED))
    middle = data.find(b"app.py") + len("app.py") + 20  # inside the deflated stream
    data[middle:middle + 8] = b"\xff" * 8
    assert [info.filename for info in check(bytes(data))] == ["app.py"]
    with pytest.raises(ArchiveError, match=re.escape('entry "app.py" is corrupt')):
        install(bytes(data), root)
    assert_nothing_written(root)


# --- limits ------------------------------------------------------------------------------------


def test_zipped_size_limit(root: Path) -> None:
    data = make_zip([("big.bin", b"\0" * 100_000)])
    with pytest.raises(ArchiveError, match="the limit is 1000 bytes"):
        check(data, max_zipped=1000)
    with pytest.raises(ArchiveError):
        install(data, root, max_zipped=len(data) - 1)
    assert_nothing_written(root)
    assert check(data, max_zipped=len(data))  # exactly at the limit is legal


@pytest.mark.parametrize(("entries", "limit", "entry"), [
    ([("big.bin", b"\0" * 100_000)], 50_000, "big.bin"),
    ([("a.bin", b"\0" * 30_000), ("b.bin", b"\0" * 30_000)], 50_000, "b.bin"),  # the sum counts
    ([("a.bin", b"\0" * 30_000), ("b.bin", b"\0" * 30_000)], 59_999, "b.bin"),
])
def test_unzipped_size_limit_names_the_entry_that_crosses_it(root: Path, entries: Entries, limit: int,
                                                             entry: str) -> None:
    words = rf'more than {limit} bytes.*"{re.escape(entry)}"'
    with pytest.raises(ArchiveError, match=words):
        check(make_zip(entries), max_unzipped=limit)  # from the headers alone: nothing inflated
    with pytest.raises(ArchiveError, match=words):
        install(make_zip(entries), root, max_unzipped=limit)
    assert_nothing_written(root)


def test_a_compressed_bomb_is_refused_from_its_headers(root: Path) -> None:
    data = make_zip([("bomb.bin", b"\0" * 20_000_000)], zipfile.ZIP_DEFLATED)
    assert len(data) < 100_000
    for refuse in (check, lambda data, **limits: install(data, root, **limits)):
        with pytest.raises(ArchiveError, match=r'more than 1000000 bytes.*"bomb\.bin"'):
            refuse(data, max_unzipped=1_000_000)
    assert_nothing_written(root)


def test_real_bytes_are_counted_when_the_headers_lie(root: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # zipfile itself stops at the declared size, so stand in for a header that gets past the
    # declared-size check: the bytes that really come out must still be held to the limit.
    monkeypatch.setattr(archive, "_check_declared_size", lambda infos, limit: None)
    data = make_zip([("small.bin", b"\0" * 40_000), ("bomb.bin", b"\0" * 40_000)], zipfile.ZIP_DEFLATED)
    with pytest.raises(ArchiveError, match=r'more than 50000 bytes.*"bomb\.bin"'):
        install(data, root, max_unzipped=50_000)
    assert_nothing_written(root)


def test_a_header_understating_the_size_is_refused_while_unpacking(root: Path) -> None:
    # The central directory claims 10 bytes; 200 kB follow. zipfile stops at 10 and the CRC fails.
    data = patch_central(make_zip([("bomb.bin", b"\0" * 200_000)]), 24, 10, 4)
    assert check(data, max_unzipped=50_000)
    with pytest.raises(ArchiveError, match=re.escape('"bomb.bin"')):
        install(data, root, max_unzipped=50_000)
    assert_nothing_written(root)


def test_entry_count_limit(root: Path) -> None:
    data = make_zip([(f"m{i}.py", b"") for i in range(11)])
    with pytest.raises(ArchiveError, match="has 11 entries; the limit is 10"):
        install(data, root, max_entries=10)
    assert_nothing_written(root)
    assert len(check(data, max_entries=11)) == 11


def test_large_but_legal_content_fits_small_limits_exactly(root: Path) -> None:
    entries: Entries = [("a.bin", os.urandom(30_000)), ("b.bin", os.urandom(20_000)), ("c/", b"")]
    data = make_zip(entries, zipfile.ZIP_DEFLATED)
    version = install(data, root, max_zipped=len(data), max_unzipped=50_000, max_entries=3)
    assert tree(version) == {"a.bin": entries[0][1], "b.bin": entries[1][1]}


# --- good archives -----------------------------------------------------------------------------


@pytest.fixture
def strict_umask() -> Iterator[None]:
    # Modes must come from the zip, not from whatever umask the daemon was started with.
    old = os.umask(0o077)
    yield
    os.umask(old)


def test_good_zip_unpacks_completely_with_its_modes(root: Path, strict_umask: None) -> None:
    entries: Entries = [
        *GOOD,
        ("data/", b""),
        (special("run.sh", stat.S_IFREG, 0o755), b"#!/bin/sh\n"),
        (special("suid", stat.S_IFREG, 0o4777), b"x"),
        (special("private.txt", stat.S_IFREG, 0o600), b"x"),
        link("lib", "pkg"),
        link("pkg/alias.py", "mod.py"),
        link("pkg/top", ".."),  # up to the version folder itself: still inside
        ("./readme.txt", b"hi"),
        ("win\\mod.py", b"W = 1\n"),  # Windows zippers write backslashes, as unzip reads them
    ]
    data = make_zip(entries, zipfile.ZIP_DEFLATED)
    assert [info.filename for info in check(data)] == [
        name.filename if isinstance(name, zipfile.ZipInfo) else name for name, _ in entries]
    version = install(data, root)
    assert version.parent == root and version.name.startswith("v-")
    assert list(root.iterdir()) == [version]  # no staging folder left behind
    assert tree(version) == {
        "app.py": b"def handler(e, c):\n    return 1\n", "lib": "->pkg",
        "pkg/__init__.py": b"", "pkg/alias.py": "->mod.py", "pkg/mod.py": b"X = 1\n", "pkg/top": "->..",
        "private.txt": b"x", "readme.txt": b"hi", "run.sh": b"#!/bin/sh\n", "suid": b"x",
        "win/mod.py": b"W = 1\n",
    }
    modes = {path.relative_to(version).as_posix(): stat.S_IMODE(path.lstat().st_mode)
             for path in [version, *version.rglob("*")] if not path.is_symlink()}
    assert modes == {".": 0o755, "app.py": 0o644, "data": 0o755, "pkg": 0o755, "pkg/__init__.py": 0o644,
                     "pkg/mod.py": 0o644, "private.txt": 0o644, "readme.txt": 0o644, "run.sh": 0o755,
                     "suid": 0o755, "win": 0o755, "win/mod.py": 0o644}
    assert (version / "lib" / "mod.py").read_text() == "X = 1\n"  # the links work


def test_each_install_is_a_new_folder_and_the_old_one_is_untouched(root: Path) -> None:
    first = install(make_zip(GOOD), root)
    before = tree(first)
    second = install(make_zip([("app.py", b"VERSION = 2\n"), ("pkg/mod.py", b"X = 2\n")]), root)
    assert second != first
    assert tree(first) == before
    assert tree(second) == {"app.py": b"VERSION = 2\n", "pkg/mod.py": b"X = 2\n"}
    assert sorted(root.iterdir()) == sorted([first, second])


def test_install_creates_a_missing_root_but_not_for_a_refused_zip(tmp_path: Path) -> None:
    missing = tmp_path / "functions" / "fn" / "code"
    with pytest.raises(ArchiveError):
        install(make_zip([("../evil.py", b"x")]), missing)
    assert list(tmp_path.iterdir()) == []
    version = install(make_zip(GOOD), missing)
    assert (version / "pkg" / "mod.py").is_file()


def test_the_version_appears_only_once_complete(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    copy = archive._copy

    def watching(*args: object, **kwargs: object) -> int:
        seen.append(sorted(p.name for p in root.iterdir()))
        return copy(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(archive, "_copy", watching)
    version = install(make_zip(GOOD), root)
    assert len(seen) == 3
    assert all(len(names) == 1 and names[0].startswith(".") for names in seen)  # hidden while unpacking
    assert [p.name for p in root.iterdir()] == [version.name] and not version.name.startswith(".")


@pytest.mark.parametrize("entries", [
    [link("a/link", "../../x")],
    [link("self", "."), link("up", "self/../x")],
])
def test_links_are_checked_again_on_the_disk(root: Path, monkeypatch: pytest.MonkeyPatch,
                                             entries: Entries) -> None:
    # Were the check on names ever wrong, the unpacked links are still resolved before they appear.
    monkeypatch.setattr(archive, "_link_problem", lambda entry, links: None)
    with pytest.raises(ArchiveError, match="is a link pointing outside the function folder"):
        install(make_zip([*GOOD, *entries]), root)
    assert_nothing_written(root)


# --- prune -------------------------------------------------------------------------------------


def test_prune_removes_only_unlisted_versions(root: Path) -> None:
    versions = [install(make_zip(GOOD), root) for _ in range(4)]
    alias = root.parent / "alias"
    alias.symlink_to(root)
    unrelated = [root / ".v-in-progress.partial", root / "notes"]
    for folder in unrelated:
        folder.mkdir()
    (root / "v-not-a-folder").write_text("x")
    fresh = root / ".staging-v-1-fresh"  # an install under way
    stale = root / ".staging-v-0-stale"  # left by a crash
    fresh.mkdir()
    stale.mkdir()
    old = time.time() - archive.STALE_STAGING_S - 60
    os.utime(stale, (old, old))
    prune(root, {versions[3], versions[1], alias / versions[2].name})  # the same folder, spelt another way
    assert sorted(p.name for p in root.iterdir()) == sorted(
        [*(v.name for v in versions[1:]), *(f.name for f in unrelated), "v-not-a-folder", fresh.name])
    assert tree(versions[3]) == tree(versions[1])  # the kept ones are whole


def test_prune_of_a_missing_root_does_nothing(tmp_path: Path) -> None:
    prune(tmp_path / "missing", set())
    assert list(tmp_path.iterdir()) == []
