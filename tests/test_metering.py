"""Metering fails closed: while records cannot be written the daemon is unready and refuses new
invocations, records wait in memory, and none is lost or written twice; no descriptor is closed
twice. The metering folder is removed and restored under a running daemon, and filled up (a small
tmpfs, where the machine lets the test mount one)."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Daemon, Response, function_toml

from router.metering import sink


def metering_toml(path: str) -> str:
    return f'[metering]\npath = "{path}"\n'


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def wait_until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def in_background(call: Callable[[], Response]) -> tuple[threading.Thread, list[Response]]:
    out: list[Response] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def idle_connections(daemon: Daemon, n: int) -> list[socket.socket]:
    socks = []
    for _ in range(n):
        sock = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        socks.append(sock)
    return socks


def still_served(socks: list[socket.socket]) -> int:
    ok = 0
    for sock in socks:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            ok += sock.recv(4096).startswith(b"HTTP/1.1 200")
        except OSError:
            pass
        sock.close()
    return ok


def assert_fails_closed(daemon: Daemon, meter: Path, break_it: Callable[[], None],
                        repair: Callable[[], None]) -> None:
    """Break the metering file's storage under a running daemon, then repair it: in between,
    unready and 503 for new invocations; every answered invocation has exactly one record."""
    answered = [daemon.invoke("sleeps", {"seconds": 0}).headers["x-amzn-RequestId"]]
    socks = idle_connections(daemon, 5)
    in_flight, out = in_background(lambda: daemon.invoke("sleeps", {"seconds": 1}))
    time.sleep(0.3)
    break_it()
    in_flight.join()
    assert out[0].status == 200  # it ran before the failure; its record waits in memory
    answered.append(out[0].headers["x-amzn-RequestId"])
    # A full disk shows at the first record that does not fit (the file's last block may still
    # hold a few): until then invocations are served, and each must keep its record.
    for _ in range(50):
        if daemon.request("GET", "/readyz").status == 503:
            break
        more = daemon.invoke("sleeps", {"seconds": 0})
        if more.status == 503:
            break
        assert more.status == 200, more
        answered.append(more.headers["x-amzn-RequestId"])
    wait_until(lambda: daemon.request("GET", "/readyz").status == 503)
    assert daemon.request("GET", "/readyz").json()["status"] == "metering unavailable"
    refused = daemon.invoke("sleeps", {"seconds": 0})
    assert refused.status == 503, refused
    assert refused.headers["x-amzn-ErrorType"] == "ServiceException"
    assert daemon.request("GET", "/urls/sleeps/").status == 503
    repair()
    wait_until(lambda: daemon.request("GET", "/readyz").status == 200)
    answered.append(daemon.invoke("sleeps", {"seconds": 0}).headers["x-amzn-RequestId"])
    time.sleep(0.1)
    ids = [r["request_id"] for r in records(meter)]
    for rid in answered[1:]:
        assert ids.count(rid) == 1, (rid, ids)
    assert refused.headers.get("x-amzn-RequestId") not in ids
    assert still_served(socks) == 5  # no descriptor of theirs was closed by the sink
    assert any("metering: cannot write" in line for line in daemon.lines)
    assert not any("Traceback" in line for line in daemon.lines)


FUNCTIONS = function_toml("sleeps", "outcomes.sleeps", url={"auth": "none"})


def test_metering_folder_removed_then_restored(make_daemon) -> None:  # type: ignore[no-untyped-def]
    daemon = make_daemon(metering_toml("meter/metering.jsonl") + FUNCTIONS)
    folder = daemon.folder / "meter"
    meter = folder / "metering.jsonl"

    def remove() -> None:
        shutil.rmtree(folder)

    # The first record after the removal went into the deleted file: kept, rewritten later.
    assert_fails_closed(daemon, meter, remove, lambda: folder.mkdir())
    assert daemon.stop() == 0


@pytest.fixture
def small_filesystem(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_metering_on_a_full_filesystem(make_daemon, small_filesystem: Path) -> None:  # type: ignore[no-untyped-def]
    meter = small_filesystem / "metering.jsonl"
    daemon = make_daemon(metering_toml(str(meter)) + FUNCTIONS)
    filler = small_filesystem / "filler"

    def fill() -> None:
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full
            pass
        finally:
            os.close(fd)

    assert_fails_closed(daemon, meter, fill, lambda: filler.unlink())
    assert daemon.stop() == 0
    lines = meter.read_text().splitlines()
    assert all(json.loads(line) for line in lines)  # no half record left by a failed write


# --- the sink itself, in process ------------------------------------------------------------------


async def test_a_failed_write_is_kept_retried_and_never_closes_a_descriptor_twice(
        tmp_path: Path) -> None:
    folder = tmp_path / "m"
    path = folder / "metering.jsonl"
    file = sink.RotatingFile(path, rotate_bytes=1 << 20, backups=1, buffer_bytes=100)
    file.write(b"one\n")
    file.flush()
    old_fd = file.fd
    shutil.rmtree(folder)
    file.write(b"two\n")
    file.flush()
    assert file.failing is not None and file.fd == -1
    # The kernel gives the freed number to the next file opened: the sink must leave it alone.
    reused = os.open(os.devnull, os.O_RDONLY)
    assert reused == old_fd
    file.write(b"x" * 200)  # over the buffer: dropped, counted
    assert file.dropped == 1
    folder.mkdir()
    for _ in range(int(sink.RETRY_S * 4 / 0.05)):  # the retry timer runs on this loop
        if file.failing is None:
            break
        await asyncio.sleep(0.05)
    assert file.failing is None and path.read_bytes() == b"two\n"
    file.close()
    os.fstat(reused)  # still open: close() closed the sink's own descriptor only
    os.close(reused)
