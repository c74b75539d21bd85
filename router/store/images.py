"""Container images: fetched with skopeo, unpacked with umoci into a rootfs cached by digest.

An image function's code is a folder ``data_dir/images/<hex digest>/`` holding the image's
``rootfs/`` and ``image.json`` (its ENTRYPOINT, CMD, WORKDIR and ENV), shared by every function
of that image. ``fetch`` asks skopeo for the source's manifest first: an image already unpacked
costs that one request. Otherwise skopeo copies it into an OCI layout in a staging folder (it
checks every blob against its digest), umoci unpacks it there (``--rootless``: no device nodes,
no ownership from the image), the rootfs is made safe to bind and checked for its entry point,
and only then is the folder renamed into place, so a failure leaves nothing behind.

Registry credentials go to skopeo in an auth file of mode 0600 that lives as long as the copy,
never on its command line, in a log line or in what the API reports.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import threading
from pathlib import Path, PurePosixPath

import msgspec

from workers.sandbox import HOST_DIR, IMAGE_ETC_FILES

# A registry reference: [host[:port]/]path[:tag][@sha256:hex], as docker and skopeo take one.
_REFERENCE = re.compile(
    r"(?P<name>(?:(?P<host>[A-Za-z0-9.-]+(?::\d{1,5})?|\[[0-9A-Fa-f:]+\](?::\d{1,5})?)/)?"
    r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?(?:@(?P<digest>sha256:[0-9a-f]{64}))?")
LOCAL_TRANSPORTS = ("oci:", "docker-archive:")
TIMEOUT_S = 300.0  # a pull that takes longer is given up
MAX_LINK_HOPS = 40
# Mount points the sandbox needs in an image's read-only root; made at unpack if the image lacks them.
MOUNT_POINTS = ("proc", "dev", "tmp", HOST_DIR.lstrip("/"))
# An image's PATH when its ENV has none: what its workers get and its entry point is looked up on.
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class ImageError(Exception):
    """An image that cannot be fetched or run; the message says why in one line, and
    ``reason`` is Lambda's StateReasonCode for it."""

    def __init__(self, message: str, reason: str = "InvalidImage") -> None:
        super().__init__(message)
        self.reason = reason


class Source(msgspec.Struct, frozen=True):
    """Where an image comes from, as skopeo names it."""

    transport: str  # "docker://…", "oci:PATH:TAG" or "docker-archive:PATH"
    registry: str = ""  # the registry's host[:port], for a docker:// source


class Registry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How to reach one registry: its credentials (HTTP basic or a registry's token service,
    which skopeo negotiates from the challenge) and whether to check TLS."""

    username: str = ""
    password: str = ""
    tls_verify: bool = True


class ImageSettings(msgspec.Struct, frozen=True):
    """An image's own run settings, from its config: Lambda honours these."""

    digest: str  # the manifest's sha256, hex
    entrypoint: list[str] = []
    cmd: list[str] = []
    workdir: str = ""
    env: dict[str, str] = {}


class Overrides(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Lambda's ImageConfig: each set part replaces the image's own."""

    entrypoint: list[str] | None = None
    command: list[str] | None = None
    working_directory: str = ""


class Launch(msgspec.Struct, frozen=True):
    """What a worker of an image function runs: argv, cwd and the image's environment."""

    argv: tuple[str, ...]
    cwd: str
    env: dict[str, str]
    handler: str  # the CMD's first word: what the entry point is given, Lambda's _HANDLER


def parse_reference(text: str, local: bool) -> Source:
    """The source an image reference names; ``local`` allows ``oci:PATH[:TAG]`` and
    ``docker-archive:PATH`` (the config file's, not the API's). Raises ``ImageError``."""
    if text.startswith(LOCAL_TRANSPORTS):
        if not local:
            raise ImageError(f"ImageUri: {text.split(':', 1)[0]}: references are for config.toml "
                             "only; the API takes a registry's image (host/repository:tag)")
        path = text.split(":", 1)[1]
        if not path.startswith("/"):
            raise ImageError(f"image: {json.dumps(text)}: the path must be absolute")
        return Source(text)
    ref = text.removeprefix("docker://")
    m = _REFERENCE.fullmatch(ref)
    if m is None:
        raise ImageError(f"image: {json.dumps(text)} is not an image reference such as "
                         "\"127.0.0.1:5000/repository:tag\" or \"repository@sha256:…\"")
    host = m["host"] or ""
    if not host or not ("." in host or ":" in host or host == "localhost"):
        # "library/python": a Docker Hub repository, as docker reads it; then the first part is
        # a path component, which is lower-case.
        if host != host.lower():
            raise ImageError(f"image: {json.dumps(text)} is not an image reference (repository "
                             "names are lower-case)")
        host = "docker.io"
    if not m["tag"] and not m["digest"]:
        ref += ":latest"
    return Source(f"docker://{ref}", host)


def resolve_local(text: str, base: Path) -> str:
    """An ``oci:``/``docker-archive:`` reference with its path made absolute against ``base``
    (the config file's folder); any other reference unchanged."""
    for prefix in LOCAL_TRANSPORTS:
        if text.startswith(prefix):
            return prefix + str(base / text[len(prefix):])
    return text


def tls_flags(source: Source, registries: dict[str, Registry], flag: str) -> list[str]:
    registry = registries.get(source.registry)
    if source.registry and registry is not None and not registry.tls_verify:
        return [f"{flag}=false"]
    return []


def auth_file(source: Source, registries: dict[str, Registry]) -> bytes | None:
    """The containers-auth.json skopeo reads this source's credentials from, if it has any."""
    registry = registries.get(source.registry)
    if not source.registry or registry is None or not registry.username:
        return None
    token = base64.b64encode(f"{registry.username}:{registry.password}".encode()).decode()
    return json.dumps({"auths": {source.registry: {"auth": token}}}).encode()


def inspect_argv(source: Source, registries: dict[str, Registry], auth: str | None) -> list[str]:
    return ["skopeo", "inspect", "--raw", *tls_flags(source, registries, "--tls-verify"),
            *(["--authfile", auth] if auth else []), source.transport]


def copy_argv(source: Source, registries: dict[str, Registry], auth: str | None,
              layout: str) -> list[str]:
    return ["skopeo", "copy", "--quiet", *tls_flags(source, registries, "--src-tls-verify"),
            *(["--src-authfile", auth] if auth else []), source.transport, f"oci:{layout}:image"]


def pinned(source: Source, digest: str) -> Source:
    """A registry source pinned to the manifest ``digest`` that was inspected, so the copy is of
    that manifest even if its tag moves meanwhile (the cache folder is named by it); a local
    source as it is."""
    if not source.transport.startswith("docker://"):
        return source
    return Source(f"{untagged(source.transport)}@sha256:{digest}", source.registry)


def untagged(reference: str) -> str:
    """A registry reference without its tag or digest: the repository, as ``…@sha256:`` takes it."""
    name = reference.split("@", 1)[0]
    if name.rfind(":") > name.rfind("/"):  # a tag, not a registry's port
        name = name[:name.rfind(":")]
    return name


def unpack_argv(layout: str, bundle: str) -> list[str]:
    return ["umoci", "--log", "error", "unpack", "--rootless", "--image", f"{layout}:image", bundle]


def explain(tool: str, stderr: str) -> ImageError:
    """skopeo's or umoci's last words, as one line and Lambda's StateReasonCode."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    text = lines[-1] if lines else f"{tool} failed"
    text = re.sub(r'^time="[^"]*" level=\w+ msg="(.*)"$', r"\1", text)
    lowered = text.lower()
    if "unauthorized" in lowered or "authentication required" in lowered or "401" in text \
            or "denied" in lowered:
        return ImageError(f"access denied: {text}", "ImageAccessDenied")
    if "manifest unknown" in lowered or "not found" in lowered or "no such file" in lowered:
        return ImageError(f"not found: {text}", "ImageDeleted")
    if "digest" in lowered:
        return ImageError(f"corrupt: {text}", "InvalidImage")
    return ImageError(text)


def settings_of(digest: str, config: bytes) -> ImageSettings:
    """An OCI image config's ENTRYPOINT, CMD, WORKDIR and ENV."""
    try:
        doc = json.loads(config).get("config") or {}
        env = dict(item.split("=", 1) for item in doc.get("Env") or [] if "=" in item)
        return ImageSettings(digest, list(doc.get("Entrypoint") or []), list(doc.get("Cmd") or []),
                             str(doc.get("WorkingDir") or ""), env)
    except (ValueError, AttributeError, TypeError):
        raise ImageError("the image's config is not an OCI image config") from None


def launch(image: ImageSettings, overrides: Overrides | None) -> Launch:
    """Lambda's rule: ImageConfig's EntryPoint, Command and WorkingDirectory replace the image's
    ENTRYPOINT, CMD (the handler the entry point is given) and WORKDIR; the worker runs
    ENTRYPOINT + CMD in WORKDIR (``/`` when it has none)."""
    o = overrides or Overrides()
    cmd = image.cmd if o.command is None else o.command
    argv = (*(image.entrypoint if o.entrypoint is None else o.entrypoint), *cmd)
    if not argv or not argv[0]:
        raise ImageError("the image has no ENTRYPOINT or CMD, and ImageConfig gives none")
    return Launch(argv, o.working_directory or image.workdir or "/", image.env, cmd[0] if cmd else "")


def read_settings(folder: Path) -> ImageSettings:
    """The settings of an image in the cache (``Images.fetch``'s folder)."""
    return msgspec.json.decode((folder / "image.json").read_bytes(), type=ImageSettings)


def inside(root: Path, path: str) -> Path | None:
    """Where ``path`` of the image is on the host, following its links as they would be followed
    inside the image (an absolute link is the image's, never the host's); None if a link leads
    nowhere or loops."""
    parts = list(PurePosixPath("/", path).parts[1:])
    at = root
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            at = at.parent if at != root else root
            continue
        nxt = at / part
        if nxt.is_symlink():
            hops += 1
            if hops > MAX_LINK_HOPS:
                return None
            target = PurePosixPath(os.readlink(nxt))
            if target.is_absolute():
                at = root
            parts[:0] = list(target.parts[1:] if target.is_absolute() else target.parts)
            continue
        at = nxt
    return at


def entrypoint_problem(root: Path, run: Launch, env: dict[str, str]) -> str | None:
    """Why the worker's first argument cannot be run in the image (Lambda's wording), if so:
    a path is looked up in the image, a bare name on the worker's PATH there."""
    program = run.argv[0]
    if "/" in program:
        candidates = [program if program.startswith("/") else f"{run.cwd}/{program}"]
    else:
        candidates = [f"{d}/{program}" for d in env.get("PATH", IMAGE_PATH).split(":") if d]
    for candidate in candidates:
        host = inside(root, candidate)
        if host is not None and host.is_file():
            if not host.stat().st_mode & 0o001:  # the function's uid is "other" to its files
                return f"fork/exec {candidate}: permission denied"
            return None
    return f"Couldn't find valid entrypoint: [{program}]"


def workdir_problem(root: Path, run: Launch) -> str | None:
    host = inside(root, run.cwd)
    return None if host is not None and host.is_dir() else \
        f"WorkingDirectory {run.cwd}: no such folder in the image"


def prepare_rootfs(root: Path) -> None:
    """Make an unpacked rootfs safe to bind read-only as a sandbox's root: its mount points
    exist (a link where one should be is replaced by a folder: it would lead the mount out of
    the image), no set-id bit or device node is left to a host user who can reach the cache,
    and the files bound over the image's own exist."""
    for name in MOUNT_POINTS:
        point = root / name
        if point.is_symlink() or (point.exists() and not point.is_dir()):
            point.unlink()
        point.mkdir(mode=0o755, exist_ok=True)
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                os.unlink(path)
            elif not stat.S_ISLNK(mode) and mode & (stat.S_ISUID | stat.S_ISGID):
                os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_ISUID | stat.S_ISGID))
    etc = root / "etc"
    if etc.is_symlink() or (etc.exists() and not etc.is_dir()):
        return  # the image's own; nothing is bound over it
    etc.mkdir(mode=0o755, exist_ok=True)
    for name in (path.lstrip("/") for path in IMAGE_ETC_FILES):
        path = root / name
        if not path.is_symlink() and not path.exists():
            path.touch(mode=0o644)


def check_launch(folder: Path, settings: ImageSettings, overrides: Overrides | None,
                 env: dict[str, str]) -> None:
    """That the image unpacked in ``folder`` has the working directory and the entry point this
    function's ``overrides`` and environment make it run; raises ``ImageError``."""
    run = launch(settings, overrides)
    root = folder / "rootfs"
    if problem := workdir_problem(root, run) or entrypoint_problem(root, run, run.env | env):
        raise ImageError(problem, "InvalidImage")


REFERENCES = "references.json"  # reference → the digest it named at its last fetch


class Images:
    """The cache of unpacked images under ``data_dir/images``; blocking (runs skopeo and
    umoci): callers use a thread."""

    def __init__(self, data_dir: str | Path, registries: dict[str, Registry],
                 timeout_s: float = TIMEOUT_S) -> None:
        self.root = Path(data_dir) / "images"
        self.registries = registries
        self.timeout_s = timeout_s
        self._lock = threading.Lock()

    def last_fetched(self, reference: str, overrides: Overrides | None,
                     env: dict[str, str]) -> tuple[Path, ImageSettings] | None:
        """The image ``reference`` named when it was last fetched, if it is still in the cache and
        still starts with these settings: what a function keeps while its registry cannot be
        reached (at a start or a reload), rather than failing."""
        digest = self._references().get(reference)
        folder = self.root / str(digest)
        try:
            settings = read_settings(folder)
            check_launch(folder, settings, overrides, env)
        except (OSError, ValueError, ImageError):
            return None
        return folder, settings

    def _references(self) -> dict[str, str]:
        try:
            return msgspec.json.decode((self.root / REFERENCES).read_bytes(), type=dict[str, str])
        except (OSError, msgspec.DecodeError, msgspec.ValidationError):
            return {}

    def _remember(self, reference: str, digest: str) -> None:
        with self._lock:  # fetches run in threads of their own
            known = self._references()
            if known.get(reference) == digest:
                return
            known[reference] = digest
            tmp = self.root / f".{REFERENCES}.{secrets.token_hex(4)}"
            tmp.write_bytes(msgspec.json.encode(known))
            os.replace(tmp, self.root / REFERENCES)

    def fetch(self, reference: str, overrides: Overrides | None, env: dict[str, str],
              local: bool) -> tuple[Path, ImageSettings]:
        """The cache folder of the image ``reference`` names (fetched and unpacked if it is not
        there yet) and its settings, once its entry point is known to exist for this function's
        ``overrides`` and environment. Raises ``ImageError``."""
        source = parse_reference(reference, local)
        staging = self.root / f".staging-{secrets.token_hex(8)}"
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            staging.mkdir(mode=0o700)
            auth = self._auth(source, staging)
            manifest = self._run(inspect_argv(source, self.registries, auth), "skopeo", staging)
            digest = hashlib.sha256(manifest).hexdigest()
            folder = self.root / digest
            if (folder / "image.json").is_file():
                unpacked, settings = folder, read_settings(folder)
            else:
                unpacked, settings = staging / "bundle", self._unpack(source, auth, staging, digest)
            check_launch(unpacked, settings, overrides, env)
            if unpacked != folder:
                try:
                    os.rename(unpacked, folder)
                except OSError:  # the same image, unpacked by a concurrent fetch: theirs is kept
                    if not (folder / "image.json").is_file():
                        raise
            self._remember(reference, digest)
            return folder, settings
        except OSError as e:  # a tree umoci wrote that cannot be prepared, a full disk
            raise ImageError(f"cannot unpack the image: {e}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _auth(self, source: Source, staging: Path) -> str | None:
        data = auth_file(source, self.registries)
        if data is None:
            return None
        path = staging / "auth.json"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return str(path)

    def _unpack(self, source: Source, auth: str | None, staging: Path,
                digest: str) -> ImageSettings:
        """The image copied and unpacked into ``staging/bundle``, and its settings."""
        layout = str(staging / "layout")
        self._run(copy_argv(pinned(source, digest), self.registries, auth, layout), "skopeo",
                  staging)
        self._run(unpack_argv(layout, str(staging / "bundle")), "umoci", staging)
        settings = settings_of(digest, self._config_blob(Path(layout)))
        bundle = staging / "bundle"
        for leftover in bundle.iterdir():  # the runtime spec and mtree umoci writes: not ours
            if leftover.name != "rootfs":
                leftover.unlink()
        prepare_rootfs(bundle / "rootfs")
        (bundle / "image.json").write_bytes(msgspec.json.encode(settings))
        return settings

    @staticmethod
    def _config_blob(layout: Path) -> bytes:
        def blob(descriptor: dict[str, str]) -> bytes:
            algorithm, _, hexdigest = descriptor["digest"].partition(":")
            return (layout / "blobs" / algorithm / hexdigest).read_bytes()

        try:
            index = json.loads((layout / "index.json").read_bytes())
            manifest = json.loads(blob(index["manifests"][0]))
            return blob(manifest["config"])
        except (OSError, ValueError, KeyError, IndexError, TypeError):
            raise ImageError("the image's manifest or config cannot be read") from None

    def _run(self, argv: list[str], tool: str, staging: Path) -> bytes:
        # Nothing of the daemon's environment; skopeo's temporary files (a docker-archive is
        # extracted first) go to the staging folder, which goes whatever happens.
        env = {"PATH": os.defpath, "HOME": str(staging), "TMPDIR": str(staging)}
        try:
            done = subprocess.run(argv, capture_output=True, timeout=self.timeout_s,
                                  stdin=subprocess.DEVNULL, env=env)
        except FileNotFoundError:
            raise ImageError(f"{tool} is not installed (apt-get install skopeo umoci)") from None
        except subprocess.TimeoutExpired:
            raise ImageError(f"{tool} did not finish within {self.timeout_s:.0f} s") from None
        if done.returncode != 0:
            raise explain(tool, done.stderr.decode(errors="replace"))
        return done.stdout
