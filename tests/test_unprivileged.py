"""The sandbox of a daemon that does not run as root: bubblewrap in a user namespace, as the
daemon's own uid (here ``nobody``), without cgroups it cannot create.

The daemon needs to read its code and libraries, which the test run keeps in folders only root may
enter (a 0700 virtualenv, pytest's temporary folders). It is started in a mount namespace of its own
where both are bind-mounted under a world-readable folder, then drops to ``nobody``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import sys
import sysconfig
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import FUNCTIONS, Daemon, function_toml

import router

NOBODY = 65534
REPO = Path(router.__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="starting a daemon as another user needs root")


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    top = Path(tempfile.mkdtemp(prefix="headwater-nonroot-", dir="/tmp"))
    try:
        top.chmod(0o755)
        src, site, home = top / "src", top / "site", top / "daemon"
        for folder in (src, site, home):
            folder.mkdir(mode=0o755)
        shutil.copytree(FUNCTIONS, home / "functions", ignore=shutil.ignore_patterns("__pycache__"))
        for path in [home, *home.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        os.chown(home, NOBODY, NOBODY)  # its data folder (var/) goes here
        mounts = 'mount --bind "$1" "$2" && mount --bind "$3" "$4" && shift 4 && exec "$@"'
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", mounts, "sh",
                   str(REPO), str(src), sysconfig.get_paths()["purelib"], str(site),
                   "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                   os.path.realpath(sys.executable)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": f"{src}:{site}",
               "HOME": str(home)}
        functions = "".join([
            function_toml("probe", "escape.probe", network="none", timeout_s=20),
            function_toml("victim", "outcomes.echo", network="none",
                          env={"VICTIM_SECRET": "victim-env-secret"}),
            # Given layers through the API (pasta cannot give a sandbox a network here).
            function_toml("layered", "outcomes.echo", network="none", api_writable=True),
        ])
        config = f'[server]\ntokens = ["t0ken"]\n{functions}'
        d = Daemon(home, config, command=command, env=env).start()
        try:
            yield d
        finally:
            d.stop()
    finally:
        shutil.rmtree(top, ignore_errors=True)


def test_the_daemon_runs_as_nobody_and_its_functions_do_too(daemon: Daemon) -> None:
    assert daemon.proc is not None
    r = daemon.invoke("probe", {}, headers={"Authorization": "Bearer t0ken"})
    assert r.status == 200 and "X-Amz-Function-Error" not in r.headers, r
    report = r.json()
    host_pid = daemon.record(r.headers["x-amzn-RequestId"])["worker_pid"]
    uids = Path(f"/proc/{host_pid}/status").read_text().split("Uid:")[1].split()[:4]
    assert set(uids) == {str(NOBODY)}
    assert report["cap_eff"] == "0000000000000000"  # none inside its user namespace either
    assert "NoNewPrivs:\t1" in report["status"]


def test_its_functions_reach_nothing_of_the_daemon_or_each_other(daemon: Daemon) -> None:
    """The daemon and both functions share one uid: namespaces alone keep them apart."""
    assert daemon.proc is not None
    auth = {"Authorization": "Bearer t0ken"}
    victim = daemon.invoke("victim", {}, headers=auth)
    victim_pid = daemon.record(victim.headers["x-amzn-RequestId"])["worker_pid"]
    targets = [str(daemon.config_path), str(daemon.folder / "var" / "metering.jsonl"),
               f"/proc/{daemon.proc.pid}/environ", f"/proc/{victim_pid}/environ",
               str(daemon.folder / "functions" / "outcomes.py")]
    r = daemon.invoke("probe", {"read": targets, "write": [str(daemon.config_path)],
                                "kill": [daemon.proc.pid, victim_pid],
                                "connect": [daemon.port]}, headers=auth)
    assert r.status == 200 and "X-Amz-Function-Error" not in r.headers, r
    report = r.json()
    for target in targets:
        assert not report[f"read {target}"]["ok"], (target, report[f"read {target}"])
    assert not report[f"write {daemon.config_path}"]["ok"]
    for pid in (daemon.proc.pid, victim_pid):
        assert not report[f"kill {pid}"]["ok"] and not report[f"ptrace {pid}"]["ok"], pid
    assert not report[f"connect {daemon.port}"]["ok"]
    assert "t0ken" not in str(report) and "victim-env-secret" not in str(report)
    assert len(report["pids"]) <= 3, report["pids"]
    assert daemon.proc.poll() is None
    assert daemon.invoke("victim", {}, headers=auth).status == 200


def test_without_cgroups_it_says_memory_is_polled(daemon: Daemon) -> None:
    assert daemon.proc is not None
    uids = Path(f"/proc/{daemon.proc.pid}/status").read_text().split("Uid:")[1].split()[:4]
    assert set(uids) == {str(NOBODY)}
    ready = daemon.request("GET", "/readyz").json()
    assert ready["sandbox"] == "bubblewrap" and ready["memory_limits"] == "rss-poll", ready
    daemon.wait_for_line("resident memory polled every 20 ms")


def test_layers_merge_and_bind_in_a_user_namespace(daemon: Daemon) -> None:
    """The merged /opt (hard links made by an unprivileged daemon) is bound and read-only."""
    auth = {"Authorization": "Bearer t0ken"}
    arns = []
    for name, text in (("first", "X = 'first'\n"), ("second", "X = 'second'\n")):
        body = {"Content": {"ZipFile": zip_base64({"python/which.py": text})}}
        r = daemon.request("POST", f"/2018-10-31/layers/{name}/versions",
                           json.dumps(body).encode(), auth)
        assert r.status == 201, r
        arns.append(r.json()["LayerVersionArn"])  # type: ignore[index]
    code = ("import os, which\n\ndef handler(event, context):\n"
            "    return [which.X, bool(os.statvfs('/opt').f_flag & os.ST_RDONLY)]\n")
    functions = "/2015-03-31/functions/layered"
    r = daemon.request("PUT", f"{functions}/code",
                       json.dumps({"ZipFile": zip_base64({"app.py": code})}).encode(), auth)
    assert r.status == 200, r
    r = daemon.request("PUT", f"{functions}/configuration",
                       json.dumps({"Handler": "app.handler", "Layers": arns}).encode(), auth)
    assert r.status == 200, r
    r = daemon.invoke("layered", {}, headers=auth)
    assert r.status == 200 and r.json() == ["second", True], r


def zip_base64(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()
