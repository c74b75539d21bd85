"""``data_dir/daemon.json``: where a running daemon listens, so that the client commands find a
daemon started with ``serve --listen`` without being given ``--url`` again."""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

NAME = "daemon.json"


class State(msgspec.Struct, frozen=True):
    url: str  # an address a client on this machine can reach
    pid: int
    # With TLS, the daemon's certificate: a client trusts it as well as the system's CAs, so a
    # self-signed one works for the client commands on this machine.
    cert: str = ""


def client_url(host: str, port: int, tls: bool = False) -> str:
    """The URL a local client uses for a daemon bound to ``host``: a wildcard address is
    reached through loopback."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def write(data_dir: str | Path, state: State) -> None:
    folder = Path(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{NAME}.{state.pid}"
    tmp.write_bytes(msgspec.json.encode(state))
    os.replace(tmp, folder / NAME)


def _load(data_dir: str | Path) -> State | None:
    try:
        return msgspec.json.decode((Path(data_dir) / NAME).read_bytes(), type=State)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None


def remove(data_dir: str | Path, pid: int) -> None:
    """Remove the file if it is still this daemon's (another may have started on the folder)."""
    state = _load(data_dir)
    if state is not None and state.pid == pid:
        (Path(data_dir) / NAME).unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def read(data_dir: str | Path) -> State | None:
    """The running daemon's state, or None: no file, an unreadable one, or one left by a daemon
    that is gone (killed before it could remove it)."""
    state = _load(data_dir)
    return state if state is not None and alive(state.pid) else None
