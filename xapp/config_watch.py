"""Re-read the O-RAN SC descriptor when it changes, applying what is safe to apply while running.

In a RIC the descriptor is a ConfigMap mounted at ``/opt/ric/config`` (``CONFIG_FILE``); ``kubectl edit`` or
``helm upgrade`` rewrites it in place. :class:`DescriptorWatcher` polls the file, rebuilds the settings with
:func:`xapp.config.load_settings` from the *same* flags and environment the process started with (so the
precedence defaults < descriptor < environment < flags still holds), and then:

* hands the new settings to a callback when only hot-reloadable settings changed (deadlines, strategy, MDP
  parameters, step and token caps, thresholds, log level);
* when settings that need a restart changed too (model, quantization, ports, Chroma, data directory ...),
  logs a warning naming them, keeps their running values, and still applies the hot part;
* when the new file is unreadable or invalid, logs an error and keeps the running settings.

Which settings apply live is declared on each setting (``xapp.config.hot``); applying them is the server's
job (``ArgoServer.apply_settings``): the watcher only polls and calls back.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import inspect
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from xapp.background import stop_task
from xapp.config import HOT_SETTINGS, RESTART_SETTINGS, MDPParams, Settings, descriptor_path, load_settings
from xapp.errors import ConfigError

log = logging.getLogger(__name__)

# What applies live is declared on each setting (``xapp.config.hot``); these are the two sets.
HOT_RELOADABLE = HOT_SETTINGS
RESTART_REQUIRED = RESTART_SETTINGS

Callback = Callable[[Settings], Awaitable[None] | None]


class Reloadable(Protocol):
    """What the watcher drives: the running settings and the one place that applies new ones (the server)."""

    settings: Settings

    def apply_settings(self, new: Settings) -> None: ...


def changed_settings(old: Settings, new: Settings) -> list[str]:
    """Names of the settings that differ, MDP parameters as ``mdp.<name>``; in declaration order."""
    out: list[str] = []
    for f in fields(Settings):
        a, b = getattr(old, f.name), getattr(new, f.name)
        if a == b:
            continue
        if f.name == "mdp":
            out.extend(
                f"mdp.{mf.name}" for mf in fields(MDPParams) if getattr(a, mf.name) != getattr(b, mf.name)
            )
        else:
            out.append(f.name)
    return out


def _top(name: str) -> str:
    return name.split(".", 1)[0]


@dataclass(frozen=True)
class ReloadResult:
    """What one look at the descriptor found and did."""

    changed: bool = False  # the file's content differs from the last one read
    applied: tuple[str, ...] = ()  # hot settings handed to the callback
    restart_required: tuple[str, ...] = ()  # settings that differ but keep their running value
    error: str | None = None  # the file could not be used; the running settings stay


@dataclass(frozen=True)
class _Stamp:
    mtime_ns: int
    size: int
    inode: int

    @classmethod
    def of(cls, path: Path) -> _Stamp:
        st = path.stat()  # follows the ConfigMap's ..data symlink, so a swap changes the inode
        return cls(st.st_mtime_ns, st.st_size, st.st_ino)


class DescriptorWatcher:
    """Polls a descriptor file and applies its hot-reloadable settings through ``on_change``.

    ``current`` is the settings the service runs with (normally ``load_settings(flags)`` at start-up);
    ``flags`` the command-line values the user gave, kept so that they still win over the descriptor;
    ``environ`` defaults to the process environment, read at each reload.
    """

    def __init__(
        self,
        path: Path | str,
        current: Settings,
        on_change: Callback,
        *,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        interval_s: float = 1.0,
    ) -> None:
        if interval_s <= 0:
            raise ConfigError("descriptor poll interval must be > 0")
        self.path = Path(path)
        self.settings = current
        self._on_change = on_change
        self._flags = dict(flags or {})
        self._environ = environ
        self._interval_s = interval_s
        self._task: asyncio.Task[None] | None = None
        self._stamp: _Stamp | None = None
        self._digest: bytes | None = None
        # The file as it is now is what ``current`` was built from: only later changes count.
        with contextlib.suppress(OSError):
            self._stamp = _Stamp.of(self.path)
            self._digest = hashlib.sha256(self.path.read_bytes()).digest()

    @classmethod
    def from_environment(
        cls,
        current: Settings,
        on_change: Callback,
        *,
        flags: Mapping[str, Any] | None = None,
        environ: Mapping[str, str] | None = None,
        interval_s: float = 1.0,
    ) -> DescriptorWatcher | None:
        """A watcher on ``CONFIG_FILE`` / ``XAPP_DESCRIPTOR_PATH``, or None when neither is set."""
        path = descriptor_path(environ)
        if path is None:
            return None
        return cls(path, current, on_change, flags=flags, environ=environ, interval_s=interval_s)

    # -- one look ----------------------------------------------------------------------------------

    async def check(self) -> ReloadResult:
        """Look at the file once; reload and apply if its content changed."""
        try:
            stamp = _Stamp.of(self.path)
        except OSError as exc:
            if self._stamp is None:
                return ReloadResult()  # still missing: already reported
            self._stamp, self._digest = None, None
            return self._fail(f"cannot read descriptor {self.path}: {exc.strerror}")
        if stamp == self._stamp:
            return ReloadResult()
        try:
            data = self.path.read_bytes()
            if _Stamp.of(self.path) != stamp:
                return ReloadResult()  # being written: look again at the next poll
        except OSError as exc:
            return self._fail(f"cannot read descriptor {self.path}: {exc.strerror}")
        self._stamp = stamp
        digest = hashlib.sha256(data).digest()
        if digest == self._digest:
            return ReloadResult()  # touched, or rewritten with the same content
        self._digest = digest

        try:
            new = load_settings(flags=self._flags, environ=self._env(), descriptor=self.path)
        except ConfigError as exc:
            return self._fail(f"descriptor {self.path} rejected, keeping the running settings: {exc}")

        changed = changed_settings(self.settings, new)
        restart = tuple(n for n in changed if _top(n) not in HOT_RELOADABLE)
        hot = tuple(n for n in changed if _top(n) in HOT_RELOADABLE)
        if restart:
            log.warning(
                "descriptor %s changed settings that need a restart to take effect: %s",
                self.path,
                ", ".join(restart),
                extra={"descriptor": str(self.path), "restart_required": list(restart)},
            )
        if not hot:
            if not restart:
                log.info("descriptor %s reloaded: no effective change", self.path)
            return ReloadResult(changed=True, restart_required=restart)

        applied = dataclasses.replace(self.settings, **{f: getattr(new, f) for f in {_top(n) for n in hot}})
        try:
            outcome = self._on_change(applied)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as exc:  # a failing consumer must not kill the watcher
            log.exception("applying settings from descriptor %s failed", self.path)
            self._digest = None  # retry at the next change of the file
            return ReloadResult(changed=True, restart_required=restart, error=f"callback failed: {exc}")
        self.settings = applied
        log.info(
            "descriptor %s reloaded: applied %s",
            self.path,
            ", ".join(hot),
            extra={"descriptor": str(self.path), "applied": list(hot)},
        )
        return ReloadResult(changed=True, applied=hot, restart_required=restart)

    def _env(self) -> Mapping[str, str]:
        return os.environ if self._environ is None else self._environ

    def _fail(self, message: str) -> ReloadResult:
        log.error(message, extra={"descriptor": str(self.path)})
        return ReloadResult(changed=True, error=message)

    # -- the polling task --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self.running:
            return
        self._task = asyncio.create_task(self._run(), name=f"descriptor-watch:{self.path}")

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)

    async def __aenter__(self) -> DescriptorWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.check()
            except Exception:  # keep watching whatever one look ran into
                log.exception("descriptor watch of %s failed", self.path)


# --------------------------------------------------------------------------------------------------
# wiring into the server


def descriptor_extension(
    flags: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    interval_s: float = 1.0,
) -> Callable[[Any], contextlib.AbstractAsyncContextManager[DescriptorWatcher | None]]:
    """A server extension (``xapp.server.app.serve_async(extensions=[...])``) that watches the descriptor.

    Does nothing when neither ``CONFIG_FILE`` nor ``XAPP_DESCRIPTOR_PATH`` is set. On a hot change it calls
    the server's ``apply_settings``. ``flags`` are the command-line values the server was started with.
    """

    @contextlib.asynccontextmanager
    async def extension(server: Reloadable) -> AsyncIterator[DescriptorWatcher | None]:
        watcher = DescriptorWatcher.from_environment(
            server.settings, server.apply_settings, flags=flags, environ=environ, interval_s=interval_s
        )
        if watcher is None:
            yield None
            return
        log.info("watching descriptor %s for changes", watcher.path)
        async with watcher:
            yield watcher

    return extension
