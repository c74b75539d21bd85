"""Deployment packages: check a Lambda-style zip, then unpack it into a new version folder.

A zip comes from the network (``CreateFunction``'s ``Code.ZipFile``, ``UpdateFunctionCode``), so it
is hostile until checked. ``check`` refuses, before anything is written, whatever could land outside
the function's folder or fill the disk. ``install`` unpacks into a hidden staging folder and renames
it to ``v-<time_ns>-<random>`` only once complete, so a version folder is never seen half-written,
and it never touches an existing version: invocations running on an older one keep their tree.

``check`` does not inflate file contents (only symlink targets, a few bytes each): ``install``
verifies every file's CRC-32 as it streams it out, so a corrupt zip still fails before it becomes
visible, without inflating up to 250 MB twice on the request path. A caller of ``install`` must
therefore expect ``ArchiveError`` from it too, not only from ``check``.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import shutil
import stat
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

log = logging.getLogger("headwater.archive")

MAX_ZIPPED = 50 * 1024 * 1024  # Lambda: 50 MB zipped, direct upload
MAX_UNZIPPED = 250 * 1024 * 1024  # Lambda: 250 MB unzipped
# Lambda documents no limit on the number of files; this is a sanity bound. Packages that vendor
# numpy, pandas and botocore stay under 10,000 files, while 50 MB of empty entries would otherwise
# unpack to about a million inodes.
MAX_ENTRIES = 20_000

MAX_LINK_TARGET = 4095  # PATH_MAX less its NUL: the kernel refuses a longer target anyway
MAX_NAME_PART = 255  # NAME_MAX, in bytes: a longer name fails midway through the unpacking
MAX_LINK_HOPS = 40  # Linux's MAXSYMLINKS: a longer chain fails with ELOOP at open() anyway
STALE_STAGING_S = 3600  # unpacking takes seconds: a staging folder this old was left by a crash
CHUNK = 1024 * 1024

VERSION_PREFIX = "v-"
STAGING_PREFIX = ".staging-"  # hidden, and not "v-": prune never takes it for a version

_DRIVE = re.compile(r"[A-Za-z]:")
_SEPARATORS = re.compile(r"[/\\]")
_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
_SPECIAL = {stat.S_IFCHR: "character device", stat.S_IFBLK: "block device",
            stat.S_IFIFO: "named pipe", stat.S_IFSOCK: "socket"}

Kind = Literal["dir", "file", "link"]


class ArchiveError(ValueError):
    """A zip refused, with nothing of it left on disk; ``str(e)`` is one sentence naming the
    offending entry when there is one, e.g. ``entry "../evil.py" escapes the function folder``."""


@dataclass(frozen=True, slots=True)
class _Entry:
    info: zipfile.ZipInfo
    parts: tuple[str, ...]  # where it unpacks, relative to the version folder
    kind: Kind
    target: str = ""  # a link's target, exactly as it will be written


def _quote(name: str) -> str:
    # A hostile name may hold newlines or escape sequences; the message goes to logs and terminals.
    shown = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode() for ch in name)
    return f'"{shown}"'


def _refused(info: zipfile.ZipInfo, problem: str) -> ArchiveError:
    # Quoted only here, once an entry is refused: most archives have thousands that are not.
    return ArchiveError(f"entry {_quote(info.filename)} {problem}")


def _is_absolute(path: str) -> bool:
    return path.startswith(("/", "\\")) or _DRIVE.match(path) is not None


def _normalize(name: str) -> tuple[str, ...] | None:
    """The entry's path inside the folder, or None if it climbs out. Backslashes count as
    separators, as Info-ZIP's unzip reads zips made by Windows tools (Compress-Archive)."""
    parts: list[str] = []
    for part in _SEPARATORS.split(name):
        if part == "..":
            if not parts:
                return None
            parts.pop()
        elif part not in ("", "."):
            parts.append(part)
    return tuple(parts)


def _open(data: bytes, max_zipped: int) -> zipfile.ZipFile:
    if len(data) > max_zipped:
        raise ArchiveError(f"the zip archive is {len(data)} bytes; the limit is {max_zipped} bytes")
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except Exception as e:  # the bytes are in memory: whatever fails to parse is the archive's fault
        raise ArchiveError(f"the upload is not a valid zip archive ({e})") from e


def _kind(info: zipfile.ZipInfo) -> Kind:
    mode = info.external_attr >> 16
    file_type = stat.S_IFMT(mode)
    if file_type == stat.S_IFLNK:
        return "link"
    if file_type == stat.S_IFDIR or (file_type in (0, stat.S_IFREG) and info.filename.endswith(("/", "\\"))):
        return "dir"
    if file_type in (0, stat.S_IFREG):  # 0: made on Windows, which stores no Unix mode
        return "file"
    raise _refused(info, f"is a device or pipe ({_SPECIAL.get(file_type, 'special file')}), "
                         "not a file, folder or link")


def _link_target(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> str:
    if info.file_size > MAX_LINK_TARGET:
        raise _refused(info, f"is a link with a target longer than {MAX_LINK_TARGET} bytes")
    try:
        with zf.open(info) as src:
            raw = src.read(MAX_LINK_TARGET + 1)
    except Exception as e:  # in memory: any failure to inflate is the archive's fault
        raise _refused(info, f"is corrupt ({e})") from e
    try:
        target = raw.decode()
    except UnicodeDecodeError:
        raise _refused(info, "is a link with a target that is not UTF-8") from None
    if not target or "\0" in target:
        raise _refused(info, "is a link with an empty or invalid target")
    if _is_absolute(target):
        raise _refused(info, "is a link pointing outside the function folder "
                             f"(to the absolute path {_quote(target)})")
    return target


def _entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Entry:
    if _is_absolute(info.filename):
        raise _refused(info, "is an absolute path")
    parts = _normalize(info.filename)
    if parts is None:
        raise _refused(info, "escapes the function folder")
    if any(len(os.fsencode(part)) > MAX_NAME_PART for part in parts):
        raise _refused(info, f"has a name longer than {MAX_NAME_PART} bytes")
    if info.flag_bits & 0x1:
        raise _refused(info, "is encrypted")
    if info.compress_type not in _METHODS:
        raise _refused(info, f"uses compression method {info.compress_type}, which is not "
                             "supported (use deflate)")
    kind = _kind(info)
    if not parts and kind != "dir":  # "a/.." as a file: there is no name left to write
        raise _refused(info, "has no file name")
    return _Entry(info, parts, kind, _link_target(zf, info) if kind == "link" else "")


def _check_layout(entries: list[_Entry]) -> None:
    """Refuse two entries unpacking to one path, and entries beneath a file or a symlink: writing
    under a symlink is how an archive escapes with names that look innocent."""
    seen: dict[tuple[str, ...], _Entry] = {}
    for entry in entries:
        if not entry.parts:
            continue
        first = seen.setdefault(entry.parts, entry)
        if first is entry:
            continue
        if first.info.filename == entry.info.filename:
            raise _refused(entry.info, "appears twice in the zip")
        raise ArchiveError(f"entries {_quote(first.info.filename)} and {_quote(entry.info.filename)} "
                           f"unpack to the same path")
    for entry in entries:
        for depth in range(1, len(entry.parts)):
            above = seen.get(entry.parts[:depth])
            if above is not None and above.kind != "dir":
                what = "link" if above.kind == "link" else "file"
                raise _refused(entry.info, f"is inside {_quote(above.info.filename)}, "
                                           f"which is a {what}, not a folder")


def _link_problem(link: _Entry, links: dict[tuple[str, ...], str]) -> str | None:
    """Follow a link through the zip's own links, as realpath() will on the unpacked tree: a link
    to another link's "..", e.g. to a link to ".", can leave the folder though each looks inside."""
    resolved = list(link.parts[:-1])
    pending = link.target.split("/")  # the kernel's separator: a backslash is part of a name here
    hops = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return "pointing outside the function folder"
            resolved.pop()
            continue
        resolved.append(part)
        target = links.get(tuple(resolved))
        if target is not None:
            hops += 1
            if hops > MAX_LINK_HOPS:
                return f"in a loop or a chain of more than {MAX_LINK_HOPS} links"
            resolved.pop()
            pending[:0] = target.split("/")
    return None


def _plan(zf: zipfile.ZipFile, max_unzipped: int, max_entries: int) -> list[_Entry]:
    infos = zf.infolist()
    if not infos:
        raise ArchiveError("the zip archive is empty")
    if len(infos) > max_entries:
        raise ArchiveError(f"the zip archive has {len(infos)} entries; the limit is {max_entries}")
    _check_declared_size(infos, max_unzipped)
    entries = [_entry(zf, info) for info in infos]
    if all(entry.kind == "dir" for entry in entries):
        raise ArchiveError("the zip archive has no files, only folders")
    _check_layout(entries)
    links = {entry.parts: entry.target for entry in entries if entry.kind == "link"}
    for entry in entries:
        problem = _link_problem(entry, links) if entry.kind == "link" else None
        if problem is not None:
            raise _refused(entry.info, f"is a link {problem} (to {_quote(entry.target)})")
    return [entry for entry in entries if entry.parts]  # "./" names the version folder itself


def _too_big(info: zipfile.ZipInfo, max_unzipped: int) -> ArchiveError:
    return ArchiveError(f"the zip archive unzips to more than {max_unzipped} bytes (the limit), "
                        f"reached at entry {_quote(info.filename)}")


def _check_declared_size(infos: list[zipfile.ZipInfo], max_unzipped: int) -> None:
    declared = 0
    for info in infos:
        declared += info.file_size
        if declared > max_unzipped:
            raise _too_big(info, max_unzipped)


def check(data: bytes, *, max_zipped: int = MAX_ZIPPED, max_unzipped: int = MAX_UNZIPPED,
          max_entries: int = MAX_ENTRIES) -> list[zipfile.ZipInfo]:
    """Validate a deployment package without writing anything; return the entries to unpack.

    Raises ArchiveError for: not a zip, over ``max_zipped`` bytes, more than ``max_entries`` entries,
    a declared unzipped size over ``max_unzipped``, no files; and for an entry that is an absolute
    path (``/x``, ``\\x``, ``C:x``), climbs out with ``..``, has a name part over 255 bytes, is
    encrypted or compressed with a method zipfile cannot inflate, is a device, pipe or socket,
    unpacks to the same path as another entry, lies beneath a file or symlink entry, or is a symlink
    whose target is absolute or, followed through the zip's other links, leaves the folder or loops.
    """
    with _open(data, max_zipped) as zf:
        return [entry.info for entry in _plan(zf, max_unzipped, max_entries)]


def _make_dirs(base: str, parts: tuple[str, ...], made: set[tuple[str, ...]]) -> str:
    """``base/parts``, made where missing. ``made`` holds the folders made and checked already, so
    each is checked once, not once per file in it: nothing can turn one into a link afterwards, as
    links are written last and _check_layout refuses an entry beneath a link."""
    if parts in made:
        return os.path.join(base, *parts)
    path = base
    for part in parts:
        path = os.path.join(path, part)
        try:
            os.mkdir(path, 0o755)
        except FileExistsError:
            continue
        os.chmod(path, 0o755)  # mkdir's mode passes through the umask
    # Re-check on the disk what _check_layout proved on the names: no link on the way down.
    if os.path.realpath(path) != path:
        raise ArchiveError(f"folder {_quote('/'.join(parts))} would resolve outside the function folder")
    made.update(parts[:depth] for depth in range(len(parts) + 1))  # no link above it either
    return path


def _copy(zf: zipfile.ZipFile, entry: _Entry, out: BinaryIO, budget: int, max_unzipped: int) -> int:
    """Stream one member out, counting the bytes it really inflates to; return that count."""
    written = 0
    try:
        src = zf.open(entry.info)
    except Exception as e:  # the zip is in memory: a failure here is the archive's, never the disk's
        raise _refused(entry.info, f"is corrupt ({e})") from e
    with src:
        while True:
            try:
                chunk = src.read(CHUNK)
            except Exception as e:  # zlib.error, lzma.LZMAError, OSError from bz2, bad CRC, EOFError
                raise _refused(entry.info, f"is corrupt ({e})") from e
            if not chunk:
                return written
            written += len(chunk)
            # A header may lie about the size (zip bombs do): what counts is what comes out.
            if written > budget:
                raise _too_big(entry.info, max_unzipped)
            out.write(chunk)


def _extract(zf: zipfile.ZipFile, entries: list[_Entry], folder: Path, max_unzipped: int) -> None:
    base = os.path.realpath(folder)
    budget = max_unzipped
    order = {"dir": 0, "file": 1, "link": 2}  # links last: nothing is ever written through one
    made: set[tuple[str, ...]] = set()
    for entry in sorted(entries, key=lambda e: order[e.kind]):
        if entry.kind == "dir":
            _make_dirs(base, entry.parts, made)
            continue
        path = os.path.join(_make_dirs(base, entry.parts[:-1], made), entry.parts[-1])
        if entry.kind == "link":
            os.symlink(entry.target, path)
            continue
        executable = (entry.info.external_attr >> 16) & 0o111
        # O_EXCL and O_NOFOLLOW: never reuse a path already there, let alone follow a link at it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            budget -= _copy(zf, entry, out, budget, max_unzipped)
            os.fchmod(out.fileno(), 0o755 if executable else 0o644)  # no setuid, no world-writable
    for entry in entries:
        if entry.kind == "link":
            real = os.path.realpath(os.path.join(base, *entry.parts))
            if os.path.commonpath([base, real]) != base:
                raise _refused(entry.info, "is a link pointing outside the function folder "
                                           f"(to {_quote(entry.target)})")


def install(data: bytes, root: Path, *, max_zipped: int = MAX_ZIPPED, max_unzipped: int = MAX_UNZIPPED,
            max_entries: int = MAX_ENTRIES) -> Path:
    """Validate the zip, unpack it into a new folder ``root/v-<time_ns>-<random>`` and return it.

    The folder appears under that name only once complete; until then it is a hidden staging folder,
    removed if anything fails (ArchiveError for the archive's faults, OSError for the disk's).
    Nothing outside it is written, and existing versions are never touched.
    """
    root = Path(root)
    with _open(data, max_zipped) as zf:
        entries = _plan(zf, max_unzipped, max_entries)
        root.mkdir(parents=True, exist_ok=True)
        name = f"{VERSION_PREFIX}{time.time_ns()}-{secrets.token_hex(4)}"
        staging = root / f"{STAGING_PREFIX}{name}"
        os.mkdir(staging, 0o700)  # private until complete
        try:
            _extract(zf, entries, staging, max_unzipped)
            os.chmod(staging, 0o755)
            version = root / name
            os.rename(staging, version)  # atomic: the version is complete or absent
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return version


def prune(root: Path, keep: set[Path]) -> None:
    """Remove the version folders under root that are not in keep (the router passes the versions
    its workers still run), and staging folders left by a crash. A folder that cannot be removed
    is logged and left for the next prune: the install that called this has already succeeded."""
    root = Path(root)
    try:
        children = list(root.iterdir())
    except FileNotFoundError:
        return
    kept = {os.path.realpath(path) for path in keep}
    now = time.time()
    for child in children:
        try:
            if child.is_symlink() or not child.is_dir():
                continue
            if child.name.startswith(VERSION_PREFIX):
                doomed = os.path.realpath(child) not in kept
            elif child.name.startswith(STAGING_PREFIX):
                doomed = now - child.stat().st_mtime > STALE_STAGING_S
            else:
                continue
            if doomed:
                shutil.rmtree(child)
        except FileNotFoundError:
            continue  # renamed or removed meanwhile by another install or prune
        except OSError as e:
            log.warning("could not remove %s: %s", child, e)
