"""TLS on the daemon's listener, from a certificate chain and key in the config.

The context is made once at start; a reload loads the files again into the same context, so a
renewed certificate (certbot, cert-manager) takes effect for new connections without a restart
and without dropping the connections open meanwhile.
"""

from __future__ import annotations

import ssl


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """A server context for ``cert`` (PEM, the chain leaf first) and ``key``; raises ``OSError``
    or ``ssl.SSLError`` when they cannot be read or do not match."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def load_problem(cert: str, key: str) -> str | None:
    """Why ``cert`` and ``key`` cannot serve TLS, in one line; None if they can."""
    try:
        server_context(cert, key)
    except ssl.SSLError as e:
        return f"not a certificate and matching key ({e.reason or e})"
    except OSError as e:
        return f"cannot read {e.filename or cert}: {e.strerror}"
    return None


def client_context(cafile: str | None) -> ssl.SSLContext:
    """What the client commands verify the daemon with: the system's CAs, and ``cafile`` (the
    daemon's own certificate, for a self-signed one) as well."""
    context = ssl.create_default_context()
    if cafile:
        context.load_verify_locations(cafile)
    return context
