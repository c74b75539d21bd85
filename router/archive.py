"""Deployment packages: a zip is checked whole before anything is written, then unpacked into a
new version folder that nothing else ever writes to.

Refused, naming the entry: absolute paths, ``..`` escapes, links pointing outside the folder,
devices and pipes, duplicate names, more than Lambda's 50 MB zipped or 250 MB unzipped (counted
from the real bytes while unpacking too, since a zip's headers can lie), a corrupt archive.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import stat
import time
import zipfile
from io import BytesIO
from pathlib import Path

MAX_ZIPPED = 50 * 1024 * 1024
MAX_UNZIPPED = 250 * 1024 * 1024
MAX_ENTRIES = 20_000  # far above any real function; bounds the work a hostile zip can ask for


class ArchiveError(ValueError):
    """A zip refused before anything is written; the message names the offending entry."""


def _kind(info: zipfile.ZipInfo) -> int:
    return stat.S_IFMT(info.external_attr >> 16) if info.create_system == 3 else 0


def _inside(name: str) -> str:
    """The entry's normalised relative path; ArchiveError if it is absolute or escapes."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise ArchiveError(f'entry "{name}" is an absolute path')
    normal = posixpath.normpath(name.replace("\\", "/"))
    if normal == ".." or normal.startswith("../"):
        raise ArchiveError(f'entry "{name}" escapes the function folder')
    return normal


def check(data: bytes, *, max_zipped: int = MAX_ZIPPED,
          max_unzipped: int = MAX_UNZIPPED) -> list[zipfile.ZipInfo]:
    if len(data) > max_zipped:
        raise ArchiveError(f"the zip is {len(data)} bytes; the limit is {max_zipped} bytes")
    try:
        with zipfile.ZipFile(BytesIO(data)) as z:
            entries = z.infolist()
            links = {info.filename: z.read(info).decode(errors="replace")
                     for info in entries if _kind(info) == stat.S_IFLNK}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError) as e:
        raise ArchiveError(f"not a valid zip archive: {e}") from None
    if not entries:
        raise ArchiveError("the zip archive is empty")
    if len(entries) > MAX_ENTRIES:
        raise ArchiveError(f"the zip has {len(entries)} entries; the limit is {MAX_ENTRIES}")
    seen: set[str] = set()
    total = 0
    for info in entries:
        path = _inside(info.filename)
        kind = _kind(info)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
            raise ArchiveError(f'entry "{info.filename}" is a device or pipe, not a file')
        if path in seen:
            raise ArchiveError(f'entry "{info.filename}" appears twice')
        seen.add(path)
        if kind == stat.S_IFLNK:
            target = links[info.filename]
            if target.startswith("/") or posixpath.normpath(
                    posixpath.join(posixpath.dirname(path), target)).startswith(".."):
                raise ArchiveError(f'entry "{info.filename}" is a link pointing outside the '
                                   f'function folder ("{target}")')
        total += info.file_size
        if total > max_unzipped:
            raise ArchiveError(f"the zip unpacks to more than {max_unzipped} bytes "
                               f'(at entry "{info.filename}")')
    return entries


def install(data: bytes, root: Path, *, max_zipped: int = MAX_ZIPPED,
            max_unzipped: int = MAX_UNZIPPED) -> Path:
    """Unpack a checked zip into a new folder under ``root`` and return it; the folder appears
    under its final name only once complete, so no invocation ever sees a half-written tree."""
    entries = check(data, max_zipped=max_zipped, max_unzipped=max_unzipped)
    name = f"v-{time.time_ns()}-{os.urandom(3).hex()}"
    partial = root / f".{name}.partial"
    partial.mkdir(parents=True)
    try:
        _unpack(data, entries, partial, max_unzipped)
        final = root / name
        partial.rename(final)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return final


def _unpack(data: bytes, entries: list[zipfile.ZipInfo], folder: Path, max_unzipped: int) -> None:
    base = folder.resolve()
    written = 0
    links = []
    with zipfile.ZipFile(BytesIO(data)) as z:
        for info in entries:
            path = _inside(info.filename)
            target = (folder / path).resolve()
            if target != base and base not in target.parents:
                raise ArchiveError(f'entry "{info.filename}" escapes the function folder')
            kind = _kind(info)
            if info.is_dir() or kind == stat.S_IFDIR:
                target.mkdir(parents=True, exist_ok=True)
                continue
            if kind == stat.S_IFLNK:
                links.append((target, z.read(info).decode()))  # last, so no write follows one
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as source, open(target, "xb") as sink:
                while chunk := source.read(1 << 16):
                    written += len(chunk)
                    if written > max_unzipped:
                        raise ArchiveError(f"the zip unpacks to more than {max_unzipped} bytes "
                                           f'(at entry "{info.filename}")')
                    sink.write(chunk)
            mode = (info.external_attr >> 16) & 0o777
            os.chmod(target, 0o755 if mode & 0o111 else 0o644)
    for target, link in links:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(link, target)


def prune(root: Path, keep: set[Path]) -> None:
    """Remove version folders under ``root`` other than ``keep``."""
    keep = {p.resolve() for p in keep}
    for path in root.iterdir():
        # A dot-folder is an install in progress: never ours to remove.
        if path.is_dir() and not path.name.startswith(".") and path.resolve() not in keep:
            shutil.rmtree(path, ignore_errors=True)
