"""TLS on the listener: boto3 and the client commands over https with a certificate the test makes,
plain HTTP refused, config errors, and a renewed certificate read again at a reload."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from botocore.config import Config as BotoConfig
from conftest import Daemon, function_toml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from router.config import ConfigError, parse


def make_certificate(folder: Path, name: str = "cert") -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"headwater {name}")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def served_fingerprint(port: int, cafile: Path) -> str:
    context = ssl.create_default_context(cafile=str(cafile))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def tls_daemon(make_daemon: Callable[..., Daemon]) -> Daemon:
    return make_daemon(function_toml("echo", "outcomes.echo"),
                       server='tls_cert = "tls/cert.pem"\ntls_key = "tls/cert.key"\n',
                       before_start=lambda folder: make_certificate(folder / "tls"))


def test_boto3_and_the_cli_invoke_over_https(make_daemon: Callable[..., Daemon]) -> None:
    daemon = tls_daemon(make_daemon)
    assert daemon.url.startswith("https://127.0.0.1:")
    cert = daemon.folder / "tls" / "cert.pem"
    client = boto3.client("lambda", endpoint_url=daemon.url, region_name="us-east-1",
                          aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                          verify=str(cert), config=BotoConfig(retries={"max_attempts": 1}))
    r = client.invoke(FunctionName="echo", Payload=b'{"over": "tls"}')
    assert json.loads(r["Payload"].read())["event"] == {"over": "tls"}
    # The client command finds the daemon and its certificate in daemon.json.
    done = subprocess.run([sys.executable, "-m", "router", "invoke", "echo", "--payload",
                           '{"from": "cli"}'], cwd=daemon.folder, capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["event"] == {"from": "cli"}
    # Without the certificate, the client refuses the connection rather than trust it.
    untrusting = boto3.client("lambda", endpoint_url=daemon.url, region_name="us-east-1",
                              aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="secret",
                              config=BotoConfig(retries={"max_attempts": 1}))
    with pytest.raises(Exception, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        untrusting.invoke(FunctionName="echo", Payload=b"{}")


def test_plain_http_on_the_tls_port_gets_no_answer_and_the_daemon_goes_on(
        make_daemon: Callable[..., Daemon]) -> None:
    daemon = tls_daemon(make_daemon)
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        answer = sock.recv(4096)
    assert not answer.startswith(b"HTTP/")
    cert = daemon.folder / "tls" / "cert.pem"
    assert served_fingerprint(daemon.port, cert)  # still serving TLS


def test_a_reload_serves_a_renewed_certificate(make_daemon: Callable[..., Daemon]) -> None:
    daemon = tls_daemon(make_daemon)
    folder = daemon.folder / "tls"
    first = served_fingerprint(daemon.port, folder / "cert.pem")
    make_certificate(folder)  # renewed in place, as certbot does
    assert daemon.proc is not None
    daemon.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 20
    while not any("TLS certificate read again" in line for line in daemon.lines):
        assert time.monotonic() < deadline, "\n".join(daemon.lines)
        time.sleep(0.05)
    second = served_fingerprint(daemon.port, folder / "cert.pem")
    assert second != first
    assert daemon.stop() == 0


@pytest.mark.parametrize(("server", "message"), [
    ({"tls_cert": "tls/cert.pem"}, "server.tls_cert: TLS needs both tls_cert and tls_key"),
    ({"tls_key": "tls/cert.key"}, "server.tls_cert: TLS needs both tls_cert and tls_key"),
    ({"tls_cert": "tls/missing.pem", "tls_key": "tls/cert.key"}, "cannot read"),
    ({"tls_cert": "tls/cert.key", "tls_key": "tls/cert.key"}, "not a certificate and matching key"),
    ({"tls_cert": "tls/cert.pem", "tls_key": "tls/other.key"}, "not a certificate and matching key"),
])
def test_tls_config_errors(tmp_path: Path, server: dict[str, str], message: str) -> None:
    make_certificate(tmp_path / "tls")
    make_certificate(tmp_path / "tls", "other")
    with pytest.raises(ConfigError, match=message):
        parse({"server": server}, tmp_path, {})
