"""Settings: precedence defaults < descriptor < environment < flags, bad input, and the descriptor watcher.

The watcher tests rewrite real files (in place, by atomic rename, and the way Kubernetes updates a mounted
ConfigMap: a ``..data`` symlink swapped to a new folder) under a real asyncio polling task.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from xapp.config import MDPParams, Settings, descriptor_path, load_settings
from xapp.config_watch import HOT_RELOADABLE, RESTART_REQUIRED, DescriptorWatcher, changed_settings
from xapp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
WATCH_LOGGER = "xapp.config_watch"


def write_descriptor(path: Path, controls: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"xapp_name": "argo-xapp", "version": "0.1.0", "controls": controls}))
    return path


def rewrite_in_place(path: Path, controls: dict[str, Any]) -> None:
    """Rewrite the same inode; make sure the stat changes even within one timestamp tick."""
    before = path.stat()
    write_descriptor(path, controls)
    after = path.stat()
    if (after.st_mtime_ns, after.st_size) == (before.st_mtime_ns, before.st_size):
        os.utime(path, ns=(after.st_atime_ns, after.st_mtime_ns + 1_000_000))


def replace_atomically(path: Path, controls: dict[str, Any]) -> None:
    tmp = write_descriptor(path.with_suffix(".tmp"), controls)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------------
# precedence


def test_defaults_without_descriptor() -> None:
    settings = load_settings(environ={})
    assert settings == Settings().validate()


def test_precedence_defaults_descriptor_environment_flags(tmp_path: Path) -> None:
    path = write_descriptor(
        tmp_path / "config-file.json",
        {"deadline_ms": 700, "strategy": "fixed-k", "top_k": 6, "mdp": {"gamma": 0.9, "mu": 0.7}},
    )
    env = {"CONFIG_FILE": str(path), "ARGO_DEADLINE_MS": "600", "ARGO_STRATEGY": "random",
           "ARGO_MDP_GAMMA": "0.8"}
    flags = {"deadline_ms": 500, "max_steps": None}  # None: the flag was not given

    defaults = Settings()
    only_descriptor = load_settings(environ={"CONFIG_FILE": str(path)})
    with_env = load_settings(environ=env)
    with_flags = load_settings(flags=flags, environ=env)

    # descriptor over defaults
    assert only_descriptor.deadline_ms == 700 and only_descriptor.strategy == "fixed-k"
    assert only_descriptor.mdp.gamma == 0.9 and only_descriptor.mdp.mu == 0.7
    assert only_descriptor.max_steps == defaults.max_steps
    # environment over descriptor, per setting and per MDP parameter
    assert with_env.deadline_ms == 600 and with_env.strategy == "random"
    assert with_env.mdp.gamma == 0.8 and with_env.mdp.mu == 0.7  # mu still from the descriptor
    assert with_env.top_k == 6
    # flags over environment; a None flag does not hide the layers below
    assert with_flags.deadline_ms == 500 and with_flags.strategy == "random"
    assert with_flags.max_steps == defaults.max_steps


def test_descriptor_found_through_the_framework_variable(tmp_path: Path) -> None:
    path = write_descriptor(tmp_path / "config-file.json", {"max_steps": 3})
    assert descriptor_path({"XAPP_DESCRIPTOR_PATH": str(tmp_path)}) == path
    assert load_settings(environ={"XAPP_DESCRIPTOR_PATH": str(tmp_path)}).max_steps == 3
    # CONFIG_FILE wins over the framework's folder
    other = write_descriptor(tmp_path / "other.json", {"max_steps": 2})
    env = {"CONFIG_FILE": str(other), "XAPP_DESCRIPTOR_PATH": str(tmp_path)}
    assert load_settings(environ=env).max_steps == 2


def test_environment_values_are_typed() -> None:
    env = {"ARGO_LLM": "false", "ARGO_MIN_SCORE": "0.5", "ARGO_DATA_DIR": "/srv/x"}
    settings = load_settings(environ=env)
    assert settings.llm is False and settings.min_score == 0.5 and settings.data_dir == Path("/srv/x")


def test_repository_descriptor_loads_to_its_own_values() -> None:
    path = ROOT / "descriptors" / "config-file.json"
    controls = json.loads(path.read_text())["controls"]
    settings = load_settings(environ={}, descriptor=path)
    for key, value in controls.items():
        if key == "mdp":
            for mkey, mvalue in value.items():
                assert getattr(settings.mdp, mkey) == mvalue, f"mdp.{mkey}"
        else:
            assert getattr(settings, key) == value, key


# --------------------------------------------------------------------------------------------------
# unknown keys and bad values


@pytest.mark.parametrize(
    ("controls", "message"),
    [
        ({"deadline": 500}, "unknown setting 'deadline'"),
        ({"mdp": {"discount": 0.9}}, "unknown setting mdp.discount"),
        ({"mdp": 0.9}, "mdp must be an object"),
        ({"deadline_ms": "soon"}, "deadline_ms"),
        ({"llm": "maybe"}, "llm"),
        ({"deadline_ms": 0}, "deadline_ms"),
        ({"strategy": "greedy"}, "unknown strategy 'greedy'"),
        ({"chroma_mode": "remote"}, "chroma_mode"),
        ({"top_k": 0}, "top_k"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_options": 27}, "max_options must be in 1..26"),
        ({"log_format": "xml"}, "log_format"),
        ({"mdp": {"gamma": 0}}, "mdp.gamma"),
        ({"mdp": {"p_success": 1.5}}, "mdp.p_success"),
        ({"mdp": {"quality": "cubic"}}, "mdp.quality"),
        ({"mdp": {"grid": 2}}, "mdp.grid"),
        ({"mdp": {"delta_retrieve": 2.0}}, "mdp.delta_retrieve"),
    ],
)
def test_bad_descriptor_controls_are_rejected(tmp_path: Path, controls: dict[str, Any], message: str) -> None:
    path = write_descriptor(tmp_path / "config-file.json", controls)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_settings(environ={}, descriptor=path)


def test_unreadable_descriptors_are_rejected(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text('{"controls": {')
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(environ={}, descriptor=broken)
    not_object = tmp_path / "list.json"
    not_object.write_text('{"controls": [1, 2]}')
    with pytest.raises(ConfigError, match="'controls' must be an object"):
        load_settings(environ={}, descriptor=not_object)
    with pytest.raises(ConfigError, match="cannot read descriptor"):
        load_settings(environ={}, descriptor=tmp_path / "missing.json")


def test_unknown_flag_and_bad_environment_are_rejected() -> None:
    with pytest.raises(ConfigError, match="flags: unknown setting 'colour'"):
        load_settings(flags={"colour": "red"}, environ={})
    with pytest.raises(ConfigError, match="max_steps"):
        load_settings(environ={"ARGO_MAX_STEPS": "many"})


# --------------------------------------------------------------------------------------------------
# which settings reload


def test_every_setting_is_either_hot_or_needs_a_restart() -> None:
    names = {f.name for f in fields(Settings)}
    assert HOT_RELOADABLE.isdisjoint(RESTART_REQUIRED)
    assert names == HOT_RELOADABLE | RESTART_REQUIRED, "declare new settings hot (xapp.config.hot) or not"
    # what the deployment issue names explicitly
    assert {"deadline_ms", "max_deadline_ms", "strategy", "mdp", "min_score"} <= HOT_RELOADABLE
    assert {"model", "quantization", "grpc_port", "http_port", "chroma_mode", "data_dir"} <= RESTART_REQUIRED


def test_changed_settings_names_mdp_parameters() -> None:
    old = Settings()
    new = old.replace(deadline_ms=500, model="m", mdp=MDPParams(gamma=0.5, grid=11))
    assert changed_settings(old, new) == ["model", "mdp.gamma", "mdp.grid", "deadline_ms"]
    assert changed_settings(old, old) == []


# --------------------------------------------------------------------------------------------------
# the watcher


class Recorder:
    """The on_change callback: records what it got and lets a test wait for it."""

    def __init__(self) -> None:
        self.calls: list[Settings] = []
        self.event = asyncio.Event()

    def __call__(self, settings: Settings) -> None:
        self.calls.append(settings)
        self.event.set()

    async def next(self, timeout: float = 5.0) -> Settings:
        await asyncio.wait_for(self.event.wait(), timeout)
        self.event.clear()
        return self.calls[-1]


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)


def start_settings(path: Path, environ: dict[str, str] | None = None, flags: dict[str, Any] | None = None
                   ) -> Settings:
    return load_settings(flags=flags, environ=environ or {}, descriptor=path)


def test_watcher_applies_hot_settings_from_a_rewritten_file(tmp_path: Path) -> None:
    path = write_descriptor(tmp_path / "config-file.json", {"deadline_ms": 900, "strategy": "mdp"})

    async def scenario() -> None:
        recorder = Recorder()
        watcher = DescriptorWatcher(path, start_settings(path), recorder, environ={}, interval_s=0.02)
        async with watcher:
            assert watcher.running
            rewrite_in_place(path, {"deadline_ms": 400, "strategy": "fixed-k", "mdp": {"gamma": 0.9}})
            got = await recorder.next()
            assert (got.deadline_ms, got.strategy, got.mdp.gamma) == (400, "fixed-k", 0.9)
            assert watcher.settings == got

            replace_atomically(path, {"deadline_ms": 300, "strategy": "fixed-k", "mdp": {"gamma": 0.9}})
            got = await recorder.next()
            assert got.deadline_ms == 300
        assert not watcher.running
        assert len(recorder.calls) == 2

    asyncio.run(scenario())


def test_watcher_follows_a_configmap_symlink_swap(tmp_path: Path) -> None:
    """Kubernetes writes a new timestamped folder and renames the ``..data`` link onto it."""
    mount = tmp_path / "config"
    mount.mkdir()
    first = mount / "..2026_01_01_00_00_00.1"
    first.mkdir()
    write_descriptor(first / "config-file.json", {"max_steps": 4})
    (mount / "..data").symlink_to(first.name)
    (mount / "config-file.json").symlink_to("..data/config-file.json")
    path = mount / "config-file.json"

    async def scenario() -> None:
        recorder = Recorder()
        async with DescriptorWatcher(path, start_settings(path), recorder, environ={}, interval_s=0.02):
            second = mount / "..2026_01_01_00_01_00.2"
            second.mkdir()
            write_descriptor(second / "config-file.json", {"max_steps": 2})
            (mount / "..data_tmp").symlink_to(second.name)
            os.replace(mount / "..data_tmp", mount / "..data")
            got = await recorder.next()
            assert got.max_steps == 2

    asyncio.run(scenario())


def test_watcher_warns_about_settings_that_need_a_restart(tmp_path: Path, caplog: pytest.LogCaptureFixture
                                                           ) -> None:
    caplog.set_level(logging.INFO, logger=WATCH_LOGGER)
    path = write_descriptor(tmp_path / "config-file.json", {"deadline_ms": 900})

    async def scenario() -> None:
        recorder = Recorder()
        running = start_settings(path)
        async with DescriptorWatcher(path, running, recorder, environ={}, interval_s=0.02) as watcher:
            # hot and restart-only changes together: the hot part applies, the model stays
            replace_atomically(path, {"deadline_ms": 500, "model": "Qwen/Qwen2.5-3B-Instruct-AWQ",
                                      "quantization": "awq_marlin", "grpc_port": 50052})
            got = await recorder.next()
            assert got.deadline_ms == 500
            assert (got.model, got.quantization, got.grpc_port) == (running.model, running.quantization,
                                                                   running.grpc_port)
            warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
            assert warnings, "no warning about the restart-only settings"
            text = warnings[-1].getMessage()
            assert "model" in text and "quantization" in text and "grpc_port" in text
            assert "deadline_ms" not in text
            assert warnings[-1].restart_required == ["model", "quantization", "grpc_port"]

            # restart-only change: no callback, another warning
            caplog.clear()
            replace_atomically(path, {"deadline_ms": 500, "chroma_mode": "http"})
            await wait_until(lambda: any(r.levelno == logging.WARNING for r in caplog.records))
            assert "chroma_mode" in caplog.records[-1].getMessage()
            assert len(recorder.calls) == 1
            assert watcher.settings.chroma_mode == running.chroma_mode

    asyncio.run(scenario())


def test_watcher_keeps_running_settings_when_the_file_is_invalid(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=WATCH_LOGGER)
    path = write_descriptor(tmp_path / "config-file.json", {"deadline_ms": 900})

    async def scenario() -> None:
        recorder = Recorder()
        running = start_settings(path)
        async with DescriptorWatcher(path, running, recorder, environ={}, interval_s=0.02) as watcher:
            for bad in ('{"controls": {"deadline_ms": ', '{"controls": {"deadline_ms": -5}}',
                        '{"controls": {"deadlin_ms": 5}}'):
                caplog.clear()
                tmp = path.with_suffix(".tmp")
                tmp.write_text(bad)
                os.replace(tmp, path)
                await wait_until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
                assert "keeping the running settings" in caplog.records[-1].getMessage()
                assert watcher.settings == running
            assert recorder.calls == []

            # the file disappears: one error, old settings stay
            caplog.clear()
            path.unlink()
            await wait_until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
            assert "cannot read descriptor" in caplog.records[-1].getMessage()

            # a valid file again: applied
            replace_atomically(path, {"deadline_ms": 250})
            got = await recorder.next()
            assert got.deadline_ms == 250
            errors = [r for r in caplog.records if r.levelno == logging.ERROR]
            assert len(errors) == 1, "an unchanged bad state must not be reported at every poll"

    asyncio.run(scenario())


def test_watcher_keeps_precedence_environment_and_flags_win(tmp_path: Path) -> None:
    path = write_descriptor(tmp_path / "config-file.json", {"deadline_ms": 900, "max_steps": 4, "top_k": 4})
    environ = {"ARGO_DEADLINE_MS": "300"}
    flags = {"max_steps": 2}

    async def scenario() -> None:
        recorder = Recorder()
        running = start_settings(path, environ, flags)
        assert (running.deadline_ms, running.max_steps) == (300, 2)
        watcher = DescriptorWatcher(path, running, recorder, environ=environ, flags=flags, interval_s=0.02)
        # a change the layers above hide is no change at all
        replace_atomically(path, {"deadline_ms": 800, "max_steps": 3, "top_k": 4})
        result = await watcher.check()
        assert result.changed and result.applied == () and recorder.calls == []
        # a visible one applies, with the environment and the flags still on top
        replace_atomically(path, {"deadline_ms": 800, "max_steps": 3, "top_k": 7})
        result = await watcher.check()
        assert result.applied == ("top_k",)
        now = watcher.settings
        assert (now.top_k, now.deadline_ms, now.max_steps) == (7, 300, 2)
        # an untouched file is not reloaded
        assert (await watcher.check()).changed is False

    asyncio.run(scenario())


def test_watcher_awaits_async_callbacks_and_survives_failing_ones(tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=WATCH_LOGGER)
    path = write_descriptor(tmp_path / "config-file.json", {"top_k": 4})

    async def scenario() -> None:
        seen: list[int] = []

        async def on_change(settings: Settings) -> None:
            await asyncio.sleep(0)
            if settings.top_k == 5:
                raise RuntimeError("consumer broke")
            seen.append(settings.top_k)

        running = start_settings(path)
        async with DescriptorWatcher(path, running, on_change, environ={}, interval_s=0.02) as watcher:
            replace_atomically(path, {"top_k": 5})
            await wait_until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
            assert watcher.settings.top_k == 4  # not applied: the consumer failed
            assert watcher.running
            replace_atomically(path, {"top_k": 6})
            await wait_until(lambda: seen == [6])
            assert watcher.settings.top_k == 6

    asyncio.run(scenario())


def test_watcher_from_environment(tmp_path: Path) -> None:
    path = write_descriptor(tmp_path / "config-file.json", {})
    assert DescriptorWatcher.from_environment(Settings(), lambda s: None, environ={}) is None
    env = {"CONFIG_FILE": str(path)}
    watcher = DescriptorWatcher.from_environment(Settings(), lambda s: None, environ=env)
    assert watcher is not None and watcher.path == path
    with pytest.raises(ConfigError):
        DescriptorWatcher(path, Settings(), lambda s: None, interval_s=0)


def test_descriptor_extension_updates_a_running_grpc_server(tmp_path: Path) -> None:
    """A real ArgoServer on a free port: a hot change reaches, through its apply_settings, the servicer, the
    pipeline's update hook and the log level."""
    from xapp.config_watch import descriptor_extension
    from xapp.server.app import ArgoServer

    path = write_descriptor(tmp_path / "config-file.json", {"deadline_ms": 900, "log_level": "INFO"})
    environ = {"CONFIG_FILE": str(path)}

    class PipelineHook:
        """Records the settings handed to the pipeline's update hook."""

        def __init__(self) -> None:
            self.seen: list[Settings] = []

        def update_settings(self, settings: Settings) -> None:
            self.seen.append(settings)

    async def scenario() -> None:
        running = load_settings(environ=environ).replace(grpc_port=0)
        server = ArgoServer(running)
        hook = PipelineHook()
        server.servicer.pipeline = hook  # type: ignore[assignment]
        root_level = logging.getLogger().level
        try:
            assert await server.start(0) > 0
            async with descriptor_extension(environ=environ, interval_s=0.02)(server) as watcher:
                assert watcher is not None and watcher.running
                replace_atomically(path, {"deadline_ms": 450, "log_level": "DEBUG", "strategy": "template"})
                await wait_until(lambda: server.servicer.settings.deadline_ms == 450)
                assert server.settings is server.servicer.settings
                assert server.servicer.settings.strategy == "template"
                assert [s.deadline_ms for s in hook.seen] == [450]
                assert logging.getLogger().level == logging.DEBUG
            assert not watcher.running
        finally:
            logging.getLogger().setLevel(root_level)
            await server.stop(0)

        # no descriptor configured: the extension is inert
        async with descriptor_extension(environ={})(server) as nothing:
            assert nothing is None

    asyncio.run(scenario())
