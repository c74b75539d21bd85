"""The daemon's lifecycle: bind, serve, and on SIGTERM drain within a bound, then exit 0."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import ssl
from collections.abc import Callable, Mapping

from aiohttp import web

from router import daemonfile, listener, systemd, tls
from router.api.dispatch import build_server
from router.config import Config, ConfigError, split_listen
from router.health import HealthListener
from router.run import images
from router.run.isolation import SandboxUnavailable
from router.run.registry import Registry

log = logging.getLogger("headwater")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
RELOAD_SIGNAL = signal.SIGHUP
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
STORE_WAIT_S = 15.0
QUEUED_WAIT_S = 1.0  # at the listener's close, for the connections it had queued to be answered


def fix_mmap_threshold(size: int = 128 * 1024) -> None:
    """Serve every allocation of ``size`` or more from its own mapping, returned at free.

    glibc raises its threshold each time such a block is freed, after which the event loop's
    256 KiB read buffers come from the heap, which fragments and does not shrink: 16 anonymous
    clients pushing bodies the daemon refuses left it 50-200 MB larger, and this keeps it to a few."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own allocator's business
        ctypes.CDLL(None).mallopt(M_MMAP_THRESHOLD, size)


class Lifecycle:
    """Signal handlers only record the signal; ``serve`` acts on it (a second one forces exit)."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.forced = False

    def handle(self, signum: int) -> None:
        if self.stop.is_set():
            self.forced = True
            raise SystemExit(1)
        self.stop.set()


async def reload(registry: Registry, reread: Callable[[], Config],
                 environ: Mapping[str, str], context: ssl.SSLContext | None) -> None:
    """SIGHUP: read the config file again and put it in effect; a file that fails validation
    leaves the running configuration as it is. With TLS, the certificate files are read again
    (a renewed certificate serves new connections; TLS on or off needs a restart)."""
    systemd.notify(environ, "RELOADING=1")
    try:
        try:
            config = await asyncio.to_thread(reread)
        except ConfigError as e:
            log.error("reload refused, the running configuration is kept: %s", e)
            return
        changes = await registry.reload(config)
        if context is not None and config.server.tls_cert:
            try:
                context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
                changes.append("TLS certificate read again")
            except (OSError, ssl.SSLError) as e:  # changed again since the check: keep serving
                log.error("reload: cannot read the TLS certificate, the old one is kept: %s", e)
        log.info("reloaded: %s", "; ".join(changes) or "nothing changed")
    finally:
        systemd.notify(environ, "READY=1")


async def serve(config: Config, environ: Mapping[str, str],
                reread: Callable[[], Config] | None = None) -> int:
    fix_mmap_threshold()
    loop = asyncio.get_running_loop()
    life = Lifecycle()
    for signum in HANDLED_SIGNALS:
        loop.add_signal_handler(signum, life.handle, signum)
    reloading: list[asyncio.Task[None]] = []

    def on_sighup() -> None:
        # Set before the registry exists: SIGHUP's default would end the daemon without a word.
        if reread is None or life.stop.is_set() or not started.is_set():
            log.warning("SIGHUP: not reloading (%s)", "stopping" if life.stop.is_set()
                        else "still starting" if reread is not None else "no config file")
            return
        if reloading and not reloading[-1].done():
            log.warning("SIGHUP: a reload is already running")
            return
        reloading.append(asyncio.create_task(reload(registry, reread, environ, context)))

    started = asyncio.Event()
    loop.add_signal_handler(RELOAD_SIGNAL, on_sighup)
    # Image functions' images are fetched before the daemon listens, so that none is Pending.
    cache = images.cache_of(config)
    config, failures = await images.resolve(config, cache)
    try:
        registry = Registry(config, environ, failures, cache)
    except SandboxUnavailable as e:
        log.error("cannot start: %s", e)
        return 2
    registry.start()
    # Serve once the event store has answered (or failed to: it is then retried, and Event
    # invokes get 503 until it opens), so that a started daemon does not refuse them for nothing.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(registry.asyncq.tried.wait(), STORE_WAIT_S)
    grace = config.server.shutdown_grace_s
    server = build_server(registry, access_log=log if config.server.access_log else None,
                          keepalive_timeout=config.server.keepalive_timeout_s)
    runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=grace)
    await runner.setup()
    host, port = split_listen(config.server.listen)
    cert = config.server.tls_cert
    context = tls.server_context(cert, config.server.tls_key) if cert else None
    try:
        sockets = listener.bind(host, port)
    except OSError as e:
        log.error("cannot listen on %s: %s", config.server.listen, e.strerror)
        await runner.cleanup()
        await registry.close(0)
        return 1
    sites = [web.SockSite(runner, sock, ssl_context=context) for sock in sockets]
    for site in sites:
        await site.start()
    bound = runner.addresses[0]
    metrics_listen, health_listen = config.server.metrics_listen, config.server.health_listen
    operations = await _serve_operations(registry, metrics_listen) if metrics_listen else None
    health = _serve_health(registry, health_listen) if health_listen else None
    if (metrics_listen and operations is None) or (health_listen and health is None):
        if operations is not None:
            await operations.cleanup()
        if health is not None:
            health.close()
        await runner.cleanup()
        await registry.close(0)
        return 1
    state = daemonfile.State(daemonfile.client_url(host, bound[1], cert != ""), os.getpid(), cert)
    try:
        daemonfile.write(config.server.data_dir, state)
    except OSError as e:  # the client commands then need --url; the daemon itself is fine
        log.warning("cannot write %s: %s", daemonfile.NAME, e.strerror)
    # Last, once daemon.json says where: a client that waits for this line finds it there.
    log.info("Headwater listening on %s://%s:%d with %d function(s)", "https" if cert else "http",
             host, bound[1], len(registry.pools))
    systemd.notify(environ, "READY=1")
    started.set()
    pings = asyncio.create_task(systemd.watchdog(environ))
    await life.stop.wait()
    systemd.notify(environ, "STOPPING=1")
    if reloading:  # a drain must not race a reload's deploys
        await asyncio.gather(*reloading, return_exceptions=True)
    delay = config.server.drain_delay_s
    registry.leaving = True
    if health is not None:
        health.send()  # the balancer's checks see "draining" now, not at the next send
    if delay:
        log.info("draining: /readyz answers 503; still serving for %.1f s", delay)
        await asyncio.sleep(delay)
    log.info("draining: finishing in-flight invocations (up to %.0f s)", grace)
    registry.intake.draining = True  # new requests get 503 from here on, health checks excepted
    # Running invocations finish (or are killed at the grace), so every caller gets its answer
    # before the connections close. The listener stays open meanwhile: a late client gets a 503
    # rather than a refused or reset connection.
    await registry.close(grace)
    await _close_listeners(server, sockets, sites, context)
    await runner.cleanup()
    if operations is not None:
        await operations.cleanup()
    pings.cancel()  # pinged through the drain, which TimeoutStopSec bounds
    if health is not None:
        health.close()  # last: it said "draining" to the end
    daemonfile.remove(config.server.data_dir, state.pid)
    log.info("stopped")
    return 0


async def _close_listeners(server: web.Server, sockets: list[socket.socket],
                           sites: list[web.SockSite], context: ssl.SSLContext | None) -> None:
    """Close the listening sockets without resetting a connection the kernel queued on them: new
    handshakes are refused first, and the queued connections served (see ``router.listener``)."""
    loop = asyncio.get_running_loop()
    for sock in sockets:
        listener.refuse_new(sock)
    await asyncio.sleep(listener.HANDSHAKE_S)
    queued = [conn for sock in sockets for conn in listener.take_queued(sock)]
    for site in sites:
        await site.stop()
    async def serve(conn: socket.socket) -> asyncio.BaseTransport | None:
        with contextlib.suppress(OSError, TimeoutError):  # gone, or no TLS handshake in time
            return (await loop.connect_accepted_socket(
                server, conn, ssl=context,
                ssl_handshake_timeout=QUEUED_WAIT_S if context else None))[0]
        return None

    transports = [t for t in await asyncio.gather(*map(serve, queued)) if t is not None]
    # Each gets its 503 with Connection: close and closes; one that connected and sends nothing
    # is not waited for long (the runner's cleanup closes it). Polled: aiohttp's handler tells
    # nobody when its connection closes.
    deadline = loop.time() + QUEUED_WAIT_S
    while any(not t.is_closing() for t in transports) and loop.time() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)


def _serve_health(registry: Registry, listen: str) -> HealthListener | None:
    """/healthz and /readyz on [server].health_listen, from a process of their own."""
    host, port = split_listen(listen)
    try:
        health = HealthListener(registry, host, port)
    except OSError as e:
        log.error("cannot serve health checks: %s", e)
        return None
    health.start()
    log.info("health checks on http://%s:%d/readyz", host, health.port)
    return health


async def _serve_operations(registry: Registry, listen: str) -> web.ServerRunner | None:
    """/metrics, /healthz and /readyz on [server].metrics_listen, without credentials."""
    runner = web.ServerRunner(build_server(registry, operations_only=True), handle_signals=False)
    await runner.setup()
    host, port = split_listen(listen)
    try:
        await web.TCPSite(runner, host, port, reuse_address=True).start()
    except OSError as e:
        log.error("cannot listen on %s: %s", listen, e.strerror)
        await runner.cleanup()
        return None
    log.info("metrics on http://%s:%d/metrics", host, runner.addresses[0][1])
    return runner
