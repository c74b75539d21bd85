"""Layer versions published through the Lambda API, kept under ``data_dir/layers/`` across restarts.

``data_dir/layers/NAME/layer.json`` holds a layer's versions (and the last number it gave, so that a
number is never given twice, even after its version is deleted); ``NAME/N/`` is version N's zip,
unpacked once by ``router.store.archive`` (the same checks as function code: no zip-slip, no
symlink out, no bomb) and never written again. A deleted version leaves the API at once, but its
folder stays while a function still names it, as Lambda keeps a deleted version's content for the
functions that use it: it is removed at the delete if no function names it, else by ``prune`` at
the first start after none does.

Pure helpers (ARN parsing, folder paths) take the data folder and import nothing of the config, so
``router.config`` can check a config file's ``layers`` against the disk with them.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec

from router.store import archive

LAYER_NAME = r"[a-zA-Z0-9_-]{1,140}"
# A layer version's ARN, as the API and config files name one: region, account, name, version.
LAYER_ARN = re.compile(r"arn:aws[a-zA-Z-]*:lambda:([a-z0-9-]+):(\d{12}):layer:([a-zA-Z0-9_-]+)")
VERSION_ARN = re.compile(LAYER_ARN.pattern + r":([0-9]{1,9})")
MAX_LAYERS = 5  # Lambda's: a function references at most five layers


class LayerVersion(msgspec.Struct):
    """What the API reports of one version beyond its ARN."""

    version: int
    created: str
    code_sha256: str
    code_size: int  # the zip's bytes (Content.CodeSize, a function's Layers[].CodeSize)
    unzipped: int  # what it unpacks to: counted against a function's 250 MB with its code
    description: str = ""
    license_info: str = ""
    compatible_runtimes: list[str] = []
    compatible_architectures: list[str] = []
    deleted: bool = False  # gone from the API; its folder kept while a function names it


class Layer(msgspec.Struct):
    name: str
    last: int = 0  # the highest version number given, deleted or not
    versions: list[LayerVersion] = []

    def live(self) -> list[LayerVersion]:
        return [v for v in self.versions if not v.deleted]

    def version(self, number: int) -> LayerVersion | None:
        return next((v for v in self.versions if v.version == number), None)


def parse_version_arn(arn: str) -> tuple[str, str, str, int] | None:
    """(region, account, name, version) of a layer version's ARN, or None."""
    m = VERSION_ARN.fullmatch(arn)
    return None if m is None else (m[1], m[2], m[3], int(m[4]))


def layer_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:layer:{name}"


def version_arn(region: str, account: str, name: str, version: int) -> str:
    return f"{layer_arn(region, account, name)}:{version}"


def layers_problem(arns: list[str], region: str, account: str) -> str | None:
    """Why a function cannot have ``arns`` as its layers, in Lambda's words, whatever the disk
    holds: more than five, not layer version ARNs, another region's or account's, or two
    versions of one layer."""
    if len(arns) > MAX_LAYERS:
        return f"Cannot reference more than {MAX_LAYERS} layers."
    names: set[str] = set()
    for arn in arns:
        parsed = parse_version_arn(arn)
        if parsed is None:
            return (f"Layers: {arn!r} is not a layer version ARN "
                    "(arn:aws:lambda:REGION:ACCOUNT:layer:NAME:VERSION)")
        if parsed[:2] != (region, account):
            return f"Layer version {arn} does not exist."
        if parsed[2] in names:
            return ("Two different versions of the same layer are not allowed to be referenced "
                    "in the same function.")
        names.add(parsed[2])
    return None


def content_folder(data_dir: str | Path, name: str, version: int) -> Path:
    """Where version ``version`` of layer ``name`` is unpacked."""
    return Path(data_dir, "layers", name, str(version))


def arn_folder(data_dir: str | Path, arn: str) -> Path | None:
    parsed = parse_version_arn(arn)
    return None if parsed is None else content_folder(data_dir, parsed[2], parsed[3])


def unzipped_size(data: bytes) -> int:
    """The bytes a checked zip unpacks to (its entries' declared sizes, which ``archive.install``
    holds every entry to as it inflates it)."""
    return sum(info.file_size for info in archive.check(data))


def tree_size(folder: str | Path) -> int:
    """The bytes of the files under ``folder`` (a function's unpacked code), links not followed."""
    total = 0
    for parent, _, names in os.walk(folder):
        for name in names:
            try:
                total += os.lstat(os.path.join(parent, name)).st_size
            except FileNotFoundError:
                continue
    return total


def matches(version: LayerVersion, runtime: str | None, architecture: str | None) -> bool:
    """ListLayers' and ListLayerVersions' filters (an unset one matches every version)."""
    return ((runtime is None or runtime in version.compatible_runtimes)
            and (architecture is None or architecture in version.compatible_architectures))


class LayerStore:
    """The layers of one data folder. Every change happens on the event loop (the unpacking of a
    zip in a thread before it), so version numbers need no lock."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.root = self.data_dir / "layers"
        self.layers: dict[str, Layer] = {}
        if self.root.is_dir():
            for path in sorted(self.root.glob("*/layer.json")):
                layer = msgspec.json.decode(path.read_bytes(), type=Layer)
                self.layers[layer.name] = layer

    def _save(self, layer: Layer) -> None:
        folder = self.root / layer.name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".layer.json.{os.getpid()}"
        tmp.write_bytes(msgspec.json.encode(layer))
        os.replace(tmp, folder / "layer.json")

    def unpack(self, name: str, data: bytes) -> tuple[Path, LayerVersion]:
        """Check and unpack a zip into a staging folder of layer ``name``: the folder and the
        version's facts, its number not given yet (``publish`` gives it). Blocking: run it in a
        thread. Raises ``archive.ArchiveError``."""
        unzipped = unzipped_size(data)
        staged = archive.install(data, self.root / name / ".unpacked")
        sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
        return staged, LayerVersion(0, "", sha, len(data), unzipped)

    def publish(self, name: str, staged: Path, version: LayerVersion) -> LayerVersion:
        """Give an unpacked version the next number of its layer and make it visible."""
        layer = self.layers.get(name) or Layer(name)
        version.version = layer.last + 1
        os.rename(staged, content_folder(self.data_dir, name, version.version))
        layer.last = version.version
        layer.versions.append(version)
        self._save(layer)
        self.layers[name] = layer
        return version

    def _find(self, name: str, number: int) -> LayerVersion | None:
        """A version, deleted or not."""
        layer = self.layers.get(name)
        return layer.version(number) if layer is not None else None

    def get(self, name: str, number: int) -> LayerVersion | None:
        """A version the API shows (not deleted)."""
        found = self._find(name, number)
        return None if found is None or found.deleted else found

    def referenced(self, arn: str) -> LayerVersion | None:
        """The version a function's ``Layers`` names, deleted or not, if its content is still
        here: a function keeps the layers it had when their versions were deleted."""
        parsed = parse_version_arn(arn)
        if parsed is None:
            return None
        found = self._find(parsed[2], parsed[3])
        if found is None or not content_folder(self.data_dir, parsed[2], parsed[3]).is_dir():
            return None
        return found

    def delete(self, name: str, number: int) -> bool:
        """Take a version out of the API; whether it was there. Its folder stays for the caller
        to ``remove`` once no function names it."""
        found = self._find(name, number)
        if found is None or found.deleted:
            return False
        found.deleted = True
        self._save(self.layers[name])
        return True

    def remove(self, name: str, number: int) -> None:
        """Remove a deleted version's folder. Blocking: run it in a thread."""
        shutil.rmtree(content_folder(self.data_dir, name, number), ignore_errors=True)

    def prune(self, in_use: Iterable[str], arn_of: Callable[[str, int], str]) -> None:
        """Remove the folders of deleted versions no function names (``arn_of(name, version)``
        gives a version's ARN), and staging folders a crash left. Run at start-up, before any
        worker runs."""
        used = set(in_use)
        for layer in self.layers.values():
            for v in layer.versions:
                if v.deleted and arn_of(layer.name, v.version) not in used:
                    self.remove(layer.name, v.version)
            shutil.rmtree(self.root / layer.name / ".unpacked", ignore_errors=True)
