"""The functions this daemon serves, by name, and the tick that enforces deadlines and keep-warm."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

import msgspec
from aiohttp import web

from router.api.routes import RouteTable, parse_route
from router.asyncq.runner import AsyncInvoker
from router.config import (
    NAME_PATTERN,
    AsyncInvoke,
    AuthMode,
    Config,
    FunctionConfig,
    FunctionUrl,
    api_auth_required,
    effective_auth,
    http_triggers,
    trusted_networks,
)
from router.intake.intake import Intake
from router.logs.format import decide, share_stderr
from router.logs.ring import LogRings
from router.metering.record import Meter
from router.metering.sink import LogWriter
from router.metrics.instruments import Metrics
from router.metrics.state import StateCollector
from router.run.capacity import Capacity
from router.run.funclog import FunctionLogs
from router.run.images import cache_of, resolve
from router.run.isolation import Isolation
from router.run.pool import FunctionPool
from router.store import opt
from router.store.images import Images
from router.store.layers import LayerStore, version_arn
from router.store.store import Deployed, Store, stamp
from sources.mappings import Mappings
from sources.scheduler import Scheduler
from workers.process import BOOTSTRAP

log = logging.getLogger("headwater.registry")

TICK_S = 0.02  # a timed-out or over-memory invocation is killed at most this late
SCALE_EVERY = 25  # ticks between keep-warm checks (0.5 s)
LOG_FLUSH_S = 0.05
KILLED_EXIT_S = 5.0  # how long killed workers are given to be reaped

# Lambda's FunctionName pattern: a name, optionally with a qualifier, optionally inside a full
# or partial ARN (arn:aws:lambda:REGION:ACCOUNT:function:NAME, ACCOUNT:function:NAME, function:NAME).
_FUNCTION_NAME = re.compile(
    r"(?:arn:aws[a-zA-Z-]*:lambda:)?(?:[a-z]{2}(?:-gov)?-[a-z]+-\d:)?(?:\d{12}:)?(?:function:)?"
    rf"(?P<name>{NAME_PATTERN})"
    r"(?::(?P<qualifier>\$LATEST|[a-zA-Z0-9_-]{1,128}))?")


def parse_function_name(text: str) -> tuple[str, str | None] | None:
    """Split a FunctionName parameter into name and qualifier; None if it is not one."""
    m = _FUNCTION_NAME.fullmatch(text)
    return (m["name"], m["qualifier"]) if m else None


async def _drain(pools: list[FunctionPool], grace_s: float) -> None:
    """Refuse new work, let running invocations finish within ``grace_s``, then kill them."""
    for pool in pools:
        pool.close()
    try:
        await asyncio.wait_for(asyncio.gather(*(p.stopped() for p in pools)), grace_s)
    except TimeoutError:
        for pool in pools:
            pool.kill_all()
        try:
            await asyncio.wait_for(asyncio.gather(*(p.stopped() for p in pools)), KILLED_EXIT_S)
        except TimeoutError:
            # A process stuck in the kernel outlives SIGKILL for a while; nothing is left to do.
            log.warning("%s: workers still running %.0f s after being killed",
                        ", ".join(p.config.name for p in pools), KILLED_EXIT_S)


def route_table(config: Config) -> RouteTable:
    """The HTTP routes the config file's triggers declare."""
    return RouteTable([parse_route(t.route, f.name, t.auth)
                       for f in config.functions for t in http_triggers(f)])


class Registry:
    def __init__(self, config: Config, environ: Mapping[str, str],
                 image_failures: Mapping[str, str] | None = None,
                 images: Images | None = None) -> None:
        self.config = config
        # One image cache for the daemon (the one the start fetched with, if it did): its
        # record of what each reference named is written under one lock.
        self.images = images if images is not None else cache_of(config)
        # Why the image of a config file's image function could not be had (it is then Failed).
        self.image_failures = dict(image_failures or {})
        self.metrics = Metrics()
        self.metrics.watch(StateCollector(self))
        self.meter = Meter(config.metering)
        self.intake = Intake(self.meter)
        self.loop = asyncio.get_running_loop()
        self.logs = LogWriter(2, delay=LOG_FLUSH_S)  # function logs share the daemon's stderr
        share_stderr(self.logs.end_line)
        self.function_logs = FunctionLogs(self.logs, decide(config.server.log_format, environ),
                                          LogRings(config.server.log_ring_bytes))
        self._environ = dict(environ)
        self.capacity = Capacity(config.server.max_workers)
        self.isolation = Isolation(config, BOOTSTRAP)
        self.isolation.open(config.functions)  # raises SandboxUnavailable
        self.store = Store(config.server.data_dir)
        self.pools: dict[str, FunctionPool] = {}
        self.deployed: dict[str, Deployed] = {}
        self.deleting: dict[str, FunctionPool] = {}  # names being deleted: not to be reused yet
        stored = {d.function.name: d for d in self.store.load()}
        for f in config.functions:
            kept = stored.pop(f.name, None)
            if kept is not None and f.api_writable:
                # Changed through the API since: the stored version is the current one, its
                # triggers and URL still those of the config file.
                kept.function = msgspec.structs.replace(kept.function, triggers=f.triggers,
                                                        url=f.url, api_writable=True)
                self._add(kept)
                continue
            if kept is not None:
                log.warning("%s: deployed through the API but also defined in the config file; "
                            "the config file's wins", f.name)
            self._add_from_file(f)
        for deployed in stored.values():
            if not deployed.url_created:
                # Stored by a version that gave every deployed function an open URL: it has none
                # until CreateFunctionUrlConfig makes one.
                deployed.function = msgspec.structs.replace(deployed.function,
                                                            url=FunctionUrl(enabled=False))
            self._add(deployed)
        self.layers = LayerStore(config.server.data_dir)
        self._settle_layers()
        self.routes = route_table(config)
        # SQS and S3 triggers
        self.mappings = Mappings(config, self.intake, self.lookup, self.metrics)
        self.asyncq = AsyncInvoker(config, self.intake, self.lookup, self.mappings.clients,
                                   self.async_settings, lambda: list(self.pools), self.metrics)
        self.scheduler = Scheduler(config, self.asyncq, self.metrics)
        self.api_mode: AuthMode = "api" if api_auth_required(config.server) else "none"
        self.trusted = trusted_networks(config.server)  # proxies whose X-Forwarded-For counts
        self._ticker: asyncio.Task[None] | None = None
        self.leaving = False  # SIGTERM came: /readyz says so, responses close their connections

    async def prepare_layers(self, layers: list[str]) -> None:
        """A function's /opt made before a worker binds it (``opt.ensure``: a merge, for
        several layers; nothing to make for one or none)."""
        if len(layers) > 1:  # not even a thread for the common case
            await asyncio.to_thread(opt.ensure, self.config.server.data_dir, layers)

    def layers_in_use(self) -> set[str]:
        """The layer versions the deployed functions name (their content must stay)."""
        return {arn for d in self.deployed.values() for arn in d.function.layers}

    def _settle_layers(self) -> None:
        """At start-up, before any worker: the deployed functions' merged /opt folders made,
        and the folders no function needs any more removed (deleted versions, old merges)."""
        server = self.config.server
        self.layers.prune(self.layers_in_use(),
                          lambda name, n: version_arn(server.region, server.account_id, name, n))
        merged = {opt.ensure(server.data_dir, d.function.layers) for d in self.deployed.values()}
        opt.prune(server.data_dir, merged)

    def _add_from_file(self, fn: FunctionConfig) -> FunctionPool:
        """A function of the config file (read-only through the API unless it says otherwise)."""
        return self._add(stamp(Deployed(function=fn, from_config=not fn.api_writable)))

    def lookup(self, name: str) -> FunctionPool | None:
        return self.pools.get(name)

    def async_settings(self, name: str) -> AsyncInvoke:
        """A function's asynchronous invocation settings (the defaults for one that is gone)."""
        deployed = self.deployed.get(name)
        return deployed.function.async_ if deployed is not None else AsyncInvoke()

    def code_in_use(self, name: str) -> set[Path]:
        """The version folders a function's workers run in, and the one its next workers will."""
        pool = self.pools.get(name)
        return {Path(code) for code in pool.code_in_use()} if pool is not None else set()

    def _add(self, deployed: Deployed) -> FunctionPool:
        fn = deployed.function
        pool = FunctionPool(fn, self.config, self.meter, self.function_logs, self._environ,
                            self.capacity, self.isolation, self.metrics.function(fn.name))
        pool.unavailable = self.unavailable(fn)
        self.capacity.pools.append(pool)  # and removed by undeploy: the registry owns the list
        self.pools[fn.name] = pool
        self.deployed[fn.name] = deployed
        return pool

    def unavailable(self, fn: FunctionConfig) -> str | None:
        """Why an image function cannot run, if it cannot: its image was not fetched, or is
        gone from the cache since."""
        if not fn.image:
            return None
        if not fn.code:
            return self.image_failures.get(fn.name, "the image was not fetched")
        if not (Path(fn.code) / "image.json").is_file():
            return "ImageDeleted: the unpacked image is gone from data_dir/images: update the code"
        return None

    def deploy(self, deployed: Deployed) -> None:
        """A function created or changed through the API takes effect at once (a changed one is
        the registered ``Deployed`` itself, changed in place)."""
        pool = self.pools.get(deployed.function.name)
        if pool is None:
            self._add(deployed).start()
        else:
            pool.unavailable = self.unavailable(deployed.function)
            pool.reconfigure(deployed.function)

    async def undeploy(self, name: str) -> None:
        """Delete: no new invocations; running ones finish (within the grace); files go last."""
        pool = self.pools.pop(name)
        del self.deployed[name]
        self.deleting[name] = pool  # still ticked (deadlines, memory) while it drains
        try:
            try:
                await _drain([pool], self.config.server.shutdown_grace_s)
            finally:
                # Even if the wait is cancelled: files left behind would bring the function back at
                # the next start, and the name must not be freed while they are still there.
                self.capacity.pools.remove(pool)
                self.isolation.release(name)
                self.function_logs.rings.drop(name)
                self.metrics.forget(name)
                await asyncio.to_thread(self.store.delete, name)
        finally:
            del self.deleting[name]

    async def reload(self, config: Config) -> list[str]:
        """Put a re-read config file in effect: its functions added, removed and changed (compared
        by value: an unchanged function keeps its warm workers), its routes, queue triggers and
        schedules, and [images]. The [server], [sandbox], [metering], [aws] and [async] tables need
        a restart.
        What changed, one line each."""
        done: list[str] = []
        # [images] applies at once: the config file's images are fetched with it, and so are
        # the API's from here on.
        self.images.registries = config.images.registries
        self.images.timeout_s = config.images.pull_timeout_s
        config, self.image_failures = await resolve(config, self.images)
        kept = {f.name: f for f in self.config.functions}
        wanted = {f.name: f for f in config.functions}
        for name in kept.keys() - wanted.keys():
            if name in self.deployed:
                await self.undeploy(name)
                done.append(f"removed {name}")
        for fn in wanted.values():
            await self.prepare_layers(fn.layers)
        for name, fn in wanted.items():
            deployed = self.deployed.get(name)
            if deployed is None:
                self._add_from_file(fn).start()
                done.append(f"added {name}")
            elif fn != kept.get(name):
                deployed.function = fn
                stamp(deployed)
                self.deploy(deployed)
                done.append(f"changed {name}")
        ignored = [t for t in ("server", "sandbox", "metering", "aws", "async_")
                   if getattr(config, t) != getattr(self.config, t)]
        config = msgspec.structs.replace(self.config, functions=config.functions,
                                         images=config.images)
        self.config = config
        self.routes = route_table(config)
        await self.mappings.reload(config)
        await self.scheduler.reload(config)
        done += [f"[{t.rstrip('_')}] changed: restart the daemon to apply it" for t in ignored]
        return done

    def url_mode(self, pool: FunctionPool) -> AuthMode | None:
        """What a call of the function's URL must carry; None when it has no URL."""
        url = pool.config.url
        return effective_auth(url.auth, self.config.server) if url.enabled else None

    @property
    def draining(self) -> bool:
        """Whether the daemon is on its way out: from SIGTERM (``leaving``, while the drain delay
        runs and everything is still served) or since the intake refuses new work."""
        return self.leaving or self.intake.draining

    def start(self) -> None:
        for pool in self.pools.values():
            pool.start()
        self.mappings.start()
        self.asyncq.start()
        self.scheduler.start()
        self._ticker = asyncio.create_task(self._tick())

    async def _tick(self) -> None:
        n = 0
        while True:
            await asyncio.sleep(TICK_S)
            now = time.monotonic()
            n += 1
            for pool in [*self.pools.values(), *self.deleting.values()]:
                try:
                    pool.check_limits(now)
                    if n % SCALE_EVERY == 0:
                        pool.scale(now)
                except Exception:  # one pool's bug must not stop deadlines for every function
                    log.exception("%s: tick failed", pool.config.name)
            if n % SCALE_EVERY == 0:
                self.meter.check()
                if self.isolation.tree is not None:
                    self.isolation.tree.sweep()

    async def close(self, grace_s: float) -> None:
        """Drain: refuse new work, let running invocations finish within ``grace_s``, then kill."""
        self.intake.draining = True
        self.mappings.stop()  # pollers receive no more; the batches they hold run on
        self.asyncq.stop()  # no more claims; the events claimed run on, or go back unrun
        await self.scheduler.close()
        # Functions being deleted too: their deletes are still draining them, and must not
        # outlive the daemon's grace.
        await _drain([*self.pools.values(), *self.deleting.values()], grace_s)
        await self.asyncq.close()  # every attempt settled in the store
        await self.mappings.close()  # what succeeded is deleted from its queue
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        self.function_logs.rings.close()
        self.logs.flush()
        self.meter.close()
        self.isolation.close()


# What serves a request, given the registry and the function name its path carries ("" when it
# carries none); router/api/dispatch.py picks one for each request.
Handler = Callable[[web.BaseRequest, Registry, str], Awaitable[web.StreamResponse]]
