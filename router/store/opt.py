"""A function's ``/opt``: its layers' trees in order, a later layer's file winning over an earlier
one's at the same path, as Lambda extracts them.

One layer is bound as it is. Several are merged once into ``data_dir/layers/.merged/KEY``, KEY
being a digest of their ARNs, and that folder is bound: it is the same for every sandbox mode (a
daemon without a sandbox puts it on the workers' paths instead of /opt), costs nothing per cold
start, and is shared by the functions with the same list. The ARNs are key enough because a
version's content never changes and its number is never given again. The merge hard-links files
(the layers' folders are on the same disk and never written again) and copies links; it reads the
sources with ``lstat``/``readlink`` only and writes each entry into a folder it made itself, so a
link in one layer never leads a later layer's file out of the merge.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import shutil
import stat
from collections.abc import Iterable
from pathlib import Path

from router.store.layers import arn_folder

log = logging.getLogger("headwater.layers")

MERGED = ".merged"


def opt_folder(data_dir: str | Path, arns: Iterable[str]) -> str:
    """The host folder of a function's /opt ("" for no layers); pure, so the pool computes it on
    the loop, and ``ensure`` makes it before any worker needs it."""
    arns = list(arns)
    if not arns:
        return ""
    if len(arns) == 1:
        return str(arn_folder(data_dir, arns[0]))
    key = hashlib.sha256("\n".join(arns).encode()).hexdigest()[:32]
    return str(Path(data_dir, "layers", MERGED, key))


def ensure(data_dir: str | Path, arns: list[str]) -> str:
    """``opt_folder``, merged now if it is not yet. Blocking: run it in a thread on the loop."""
    target = opt_folder(data_dir, arns)
    if len(arns) > 1 and not os.path.isdir(target):
        sources = [arn_folder(data_dir, arn) for arn in arns]
        merge([s for s in sources if s is not None], Path(target))
    return target


def merge(sources: list[Path], target: Path) -> None:
    """Lay ``sources`` over each other into ``target``, which appears only once complete."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".staging-{target.name}-{secrets.token_hex(4)}")
    os.mkdir(staging, 0o700)
    try:
        for source in sources:
            _overlay(source, staging)
        os.chmod(staging, 0o755)
        try:
            os.rename(staging, target)
        except OSError:  # merged meanwhile by another deploy with the same layers
            if not target.is_dir():
                raise
            shutil.rmtree(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _clear(path: str) -> None:
    """Remove whatever an earlier layer put at ``path`` (a later layer's entry replaces it)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)


def _overlay(source: Path, target: Path) -> None:
    for parent, dirs, files in os.walk(source):  # links to folders are listed, not followed
        rel = os.path.relpath(parent, source)
        here = str(target) if rel == "." else os.path.join(target, rel)
        for name in (*dirs, *files):
            src, dst = os.path.join(parent, name), os.path.join(here, name)
            mode = os.lstat(src).st_mode
            if stat.S_ISDIR(mode):
                try:
                    if stat.S_ISDIR(os.lstat(dst).st_mode):
                        continue  # folders merge; a link at dst is not a folder (lstat)
                except FileNotFoundError:
                    pass
                _clear(dst)
                os.mkdir(dst, 0o755)
                os.chmod(dst, 0o755)  # mkdir's mode passes through the umask
                continue
            _clear(dst)
            if stat.S_ISLNK(mode):
                os.symlink(os.readlink(src), dst)
            else:
                os.link(src, dst, follow_symlinks=False)


def prune(data_dir: str | Path, keep: set[str]) -> None:
    """Remove the merged folders (and crashed merges' staging folders) not in ``keep``. Run at
    start-up, before any worker binds one."""
    root = Path(data_dir, "layers", MERGED)
    if not root.is_dir():
        return
    for child in root.iterdir():
        if str(child) not in keep:
            try:
                shutil.rmtree(child)
            except OSError as e:
                log.warning("could not remove %s: %s", child, e)
