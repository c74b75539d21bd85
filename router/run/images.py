"""The daemon's side of image functions: their images fetched (in threads) before they run."""

from __future__ import annotations

import asyncio
import logging

import msgspec

from router.config import Config
from router.store.images import ImageError, Images

log = logging.getLogger("headwater.images")


def cache_of(config: Config) -> Images:
    return Images(config.server.data_dir, config.images.registries, config.images.pull_timeout_s)


async def resolve(config: Config, images: Images) -> tuple[Config, dict[str, str]]:
    """The config with each of its image functions' ``code`` its unpacked image, and why each
    that has none could not get it (logged: such a function is Failed, its invocations
    fail at once with the reason, as Lambda's do, while the others serve). A registry that
    cannot be reached leaves a function the image its reference named last, if it is cached."""
    resolved = []
    failures: dict[str, str] = {}
    for fn in config.functions:
        if not fn.image:
            resolved.append(fn)
            continue
        try:
            folder, settings = await asyncio.to_thread(images.fetch, fn.image, fn.image_config,
                                                       fn.env, True)
            log.info("%s: image %s is sha256:%s", fn.name, fn.image, settings.digest)
        except ImageError as e:
            kept = await asyncio.to_thread(images.last_fetched, fn.image, fn.image_config, fn.env)
            if kept is None:
                log.error("%s: image %s cannot be used (%s): %s", fn.name, fn.image, e.reason, e)
                failures[fn.name] = f"{e.reason}: {e}"
                resolved.append(fn)
                continue
            folder, settings = kept
            log.warning("%s: image %s cannot be fetched (%s), so the function keeps the one it "
                        "named last, in the cache: sha256:%s", fn.name, fn.image, e, settings.digest)
        resolved.append(msgspec.structs.replace(fn, code=str(folder)))
    return msgspec.structs.replace(config, functions=resolved), failures
