"""The embedded Triton launcher: ports, backend directory, environment, managed processes and their
supervision. The tests that start a real tritonserver are in tests/e2e/test_launcher_server.py."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from unittest import mock

import pytest
from unit.launcher_helpers import _group_gone, _settings

from qwen3_tts_serving.launcher import serve
from qwen3_tts_serving.launcher.process import ManagedProcess, StartupError, exit_description, free_ports
from qwen3_tts_serving.launcher.repository import check_checkpoint_contents
from qwen3_tts_serving.launcher.supervisor import RestartPolicy, Supervisor
from qwen3_tts_serving.launcher.triton import (
    OFFLINE_ENV,
    TritonInstallation,
    TritonNotInstalledError,
    TritonPorts,
    TritonServer,
    assemble_backend_dir,
    perf_analyzer_binary,
    perf_analyzer_env,
    server_env,
    summarize_server_log,
)
from qwen3_tts_serving.settings import PROJECT_ROOT, Settings, get_settings


# --- ports --------------------------------------------------------------------------------------------------
def test_free_ports_are_distinct_and_bindable() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3
    for port in ports:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_zero_ports_are_picked_and_fixed_ports_kept(tmp_path: Path) -> None:
    ports = TritonPorts.from_settings(_settings(tmp_path, triton_http_port=18123))
    assert ports.http == 18123
    assert 0 not in (ports.grpc, ports.metrics)
    assert len({ports.http, ports.grpc, ports.metrics}) == 3


# --- backend directory and environment ----------------------------------------------------------------------
def test_backend_dir_links_the_wheel_backend_and_this_pythons_stub(tmp_path: Path) -> None:
    installation = TritonInstallation.locate()
    backend_dir = assemble_backend_dir(tmp_path / "backends", installation)
    assemble_backend_dir(tmp_path / "backends", installation)  # a second launcher reuses it
    python_dir = backend_dir / "python"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    expected = {
        "libtriton_python.so": installation.python_backend_dir / "libtriton_python.so",
        "triton_python_backend_utils.py": installation.python_backend_dir / "triton_python_backend_utils.py",
        "triton_python_backend_stub": installation.stubs_dir / version / "triton_python_backend_stub",
    }
    assert sorted(p.name for p in python_dir.iterdir()) == sorted(expected)
    for name, target in expected.items():
        assert (python_dir / name).is_symlink()
        assert (python_dir / name).resolve() == target.resolve()


def test_missing_stub_version_is_reported(tmp_path: Path) -> None:
    with pytest.raises(TritonNotInstalledError, match=r"Python 2\.7"):
        assemble_backend_dir(tmp_path, python_version="2.7")


def test_server_env_lets_the_stub_import_the_project_offline() -> None:
    installation = TritonInstallation.locate()
    env = server_env(installation, base_env={"PYTHONPATH": "/extra", "PATH": "/usr/bin"})
    pythonpath = env["PYTHONPATH"].split(os.pathsep)
    for name in ("src", "gateway", "client"):
        assert str(PROJECT_ROOT / name) in pythonpath
    assert any(Path(entry, "numpy").is_dir() for entry in pythonpath)  # the venv's site-packages
    assert pythonpath[-1] == "/extra"
    assert str(installation.libs_dir) in env["LD_LIBRARY_PATH"].split(os.pathsep)
    assert OFFLINE_ENV.items() <= env.items()


def test_perf_analyzer_env_finds_libcudart() -> None:
    env = perf_analyzer_env(base_env={})
    assert any(Path(entry, "libcudart.so.12").exists() for entry in env["LD_LIBRARY_PATH"].split(os.pathsep))
    assert perf_analyzer_binary().is_file()


def test_command_binds_loopback_on_the_chosen_ports(tmp_path: Path) -> None:
    server = TritonServer(tmp_path, _settings(tmp_path))
    command = server.command(tmp_path / "backends", TritonPorts(http=1, grpc=2, metrics=3))
    for flag in ("--http-address", "--grpc-address", "--metrics-address"):
        assert f"{flag}=127.0.0.1" in command
    assert {"--http-port=1", "--grpc-port=2", "--metrics-port=3"} <= set(command)
    assert f"--model-repository={tmp_path}" in command
    with pytest.raises(RuntimeError, match="not been started"):
        _ = server.http_url


def test_each_server_names_its_own_shared_memory_regions(tmp_path: Path) -> None:
    """So that the regions a killed server leaves in /dev/shm can be removed without touching another's."""
    first, second = (TritonServer(tmp_path, _settings(tmp_path)) for _ in range(2))
    assert first.shm_prefix != second.shm_prefix
    command = first.command(tmp_path / "backends", TritonPorts(http=1, grpc=2, metrics=3))
    assert f"--backend-config=python,shm-region-prefix-name={first.shm_prefix}" in command


def test_triton_waits_out_the_models_drain_and_their_unloading_before_it_gives_up(tmp_path: Path) -> None:
    """The models end what is still live when their drain ends; Triton's exit timeout must leave them the
    time to do so and unload, or tritonserver gives up with status 1 at the very moment they would."""
    settings = _settings(tmp_path).model_copy(update={"triton_drain_timeout_s": 2.5})
    server = TritonServer(tmp_path, settings)
    command = server.command(tmp_path / "backends", TritonPorts(http=1, grpc=2, metrics=3))
    assert "--exit-timeout-secs=13" in command  # 2.5 s of drain + 10 s to unload, in whole seconds
    assert server.stop_timeout_s > settings.triton_exit_timeout_s


def test_log_summary_quotes_early_errors_above_a_long_tail(tmp_path: Path) -> None:
    log = tmp_path / "triton.log"
    noise = [f'I1125 17:00:00.{n:06d} 1 server.cc:1] "line {n}"' for n in range(200)]
    error = "E1125 17:00:00.000001 1 model_lifecycle.cc:642] \"failed to load 'tts': ValueError: bad dtype\""
    log.write_text("\n".join([error, *noise, "+-----+", "| Option | Value |", "+-----+", "error: exiting"]))
    summary = summarize_server_log(log)
    assert summary.startswith(f"errors:\n{error}\n")
    assert summary.endswith('line 199"\n| Option | Value |\nerror: exiting')
    assert "+-----+" not in summary
    assert len(summary.splitlines()) < 40


# --- managed processes --------------------------------------------------------------------------------------
_IGNORES_SIGTERM = """
import signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # a grandchild in the same group
print("ready", flush=True)
time.sleep(60)
"""


def test_stop_kills_a_process_that_ignores_sigterm_and_its_children(tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    process = ManagedProcess(
        "stubborn", [sys.executable, "-c", _IGNORES_SIGTERM], env=os.environ, log_path=log, stop_timeout_s=0.5
    )
    process.start()
    process.wait_until(lambda: "ready" in log.read_text(), timeout_s=20)
    pgid = process.pid
    assert pgid is not None
    assert process.stop() == -9
    assert not process.is_running
    assert _group_gone(pgid)


def test_early_exit_raises_with_the_log_tail(tmp_path: Path) -> None:
    cmd = ["sh", "-c", "echo 'line one'; echo 'fatal: cannot start' >&2; exit 3"]
    process = ManagedProcess("failing", cmd, env=os.environ, log_path=tmp_path / "failing.log")
    process.start()
    with pytest.raises(StartupError, match="exited with code 3") as info:
        process.wait_until(lambda: False, timeout_s=20)
    assert "fatal: cannot start" in str(info.value)
    assert info.value.log_path == tmp_path / "failing.log"


def test_not_ready_in_time_raises(tmp_path: Path) -> None:
    process = ManagedProcess("slow", ["sleep", "30"], env=os.environ, log_path=tmp_path / "slow.log")
    process.start()
    try:
        with pytest.raises(StartupError, match="not ready after 0.3 s"):
            process.wait_until(lambda: False, timeout_s=0.3)
    finally:
        process.stop()
    assert not process.is_running


# --- qwen3-tts-serve --------------------------------------------------------------------------------------
def test_gateway_is_pointed_at_the_running_triton(tmp_path: Path) -> None:
    server = TritonServer(tmp_path, _settings(tmp_path, gateway_host="0.0.0.0"))
    server.ports = TritonPorts(http=18000, grpc=18001, metrics=18002)
    env = serve.gateway_env(server.settings, server, port=18080)
    assert env["QWEN3_TTS_TRITON_HOST"] == "127.0.0.1"
    assert env["QWEN3_TTS_TRITON_GRPC_PORT"] == "18001"
    assert env["QWEN3_TTS_TRITON_HTTP_PORT"] == "18000"
    assert env["QWEN3_TTS_GATEWAY_TRITON_URL"] == "127.0.0.1:18001"
    assert env["QWEN3_TTS_GATEWAY_PORT"] == "18080"
    banner = "\n".join(serve.banner(server, ("http://127.0.0.1:18080", mock.Mock(log_path=Path("g.log")))))
    for url in ("http://127.0.0.1:18000", "127.0.0.1:18001", "http://127.0.0.1:18002/metrics"):
        assert url in banner
    assert "http://127.0.0.1:18080/docs" in banner


def test_serve_notices_a_child_that_died(tmp_path: Path) -> None:
    process = ManagedProcess("gateway", ["true"], env=os.environ, log_path=tmp_path / "gateway.log")
    process.start()
    assert serve._wait_for_exit({"gateway": process}) == 1


# --- supervision: a real child process that dies ------------------------------------------------------------
_NO_WAIT = {"backoff_s": 0.0, "max_backoff_s": 0.0, "reset_after_s": 3600.0}


def _child(tmp_path: Path, script: str, name: str = "tritonserver") -> ManagedProcess:
    process = ManagedProcess(name, ["sh", "-c", script], env=os.environ, log_path=tmp_path / f"{name}.log")
    process.start()
    return process


def _wait_for_death(process: ManagedProcess, timeout_s: float = 20) -> None:
    deadline = time.monotonic() + timeout_s
    while process.is_running:
        assert time.monotonic() < deadline, f"{process.name} did not end"
        time.sleep(0.02)


def _supervise_until_given_up(supervisor: Supervisor, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while supervisor.check():
        assert time.monotonic() < deadline, "the supervisor never gave up"
        time.sleep(0.05)


def test_exit_description_names_the_code_or_the_signal() -> None:
    assert exit_description(3) == "exited with code 3"
    assert exit_description(0) == "exited with code 0"
    assert exit_description(-signal.SIGKILL) == "was killed by SIGKILL"
    assert exit_description(-signal.SIGSEGV) == "was killed by SIGSEGV"


def test_a_crash_loop_is_given_up_with_one_line_naming_the_exit(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    process = _child(tmp_path, "echo 'E0101 cuda: no device (unrelated)'; exit 3")
    supervisor = Supervisor(process, RestartPolicy(max_restarts=3, **_NO_WAIT))
    with caplog.at_level(logging.INFO, logger="qwen3_tts_serving.launcher.supervisor"):
        _supervise_until_given_up(supervisor)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"tritonserver exited with code 3; restarting in 0.0 s (attempt {n} of 3)" for n in (1, 2, 3)
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [
        "tritonserver exited with code 3; giving up after 3 restarts in a row "
        f"(QWEN3_TTS_TRITON_RESTART_ATTEMPTS=3); log: {process.log_path}"
    ]
    assert process.log_path.read_text().count("unrelated") == 4  # it really ran four times
    assert not supervisor.check()  # stays given up... and does not start it again
    assert not process.is_running


def test_a_killed_child_is_restarted_with_backoff_and_named_by_its_signal(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    marker = tmp_path / "ran-before"
    # The first run is killed by SIGKILL; the second stays up.
    process = _child(tmp_path, f"if [ -e {marker} ]; then exec sleep 60; fi; touch {marker}; kill -9 $$")
    policy = RestartPolicy(max_restarts=2, backoff_s=0.3, max_backoff_s=5.0, reset_after_s=3600.0)
    supervisor = Supervisor(process, policy)
    try:
        with caplog.at_level(logging.INFO, logger="qwen3_tts_serving.launcher.supervisor"):
            _wait_for_death(process)
            first_pid = process.pid
            started = time.monotonic()
            assert supervisor.check()
            waited = time.monotonic() - started
        assert process.is_running and process.pid != first_pid
        assert waited >= 0.3  # the backoff
        messages = [r.getMessage() for r in caplog.records]
        assert "tritonserver was killed by SIGKILL; restarting in 0.3 s (attempt 1 of 2)" in messages
        assert f"tritonserver is running again (pid {process.pid}; attempt 1 of 2)" in messages
        assert supervisor.check() and supervisor.restarts_in_a_row == 1
    finally:
        process.stop()
    assert policy.delay_s(1) == 0.3 and policy.delay_s(2) == 0.6 and policy.delay_s(10) == 5.0


def test_a_child_that_stays_up_starts_the_count_again(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    # The third run lives a second (past reset_after_s); every other run dies at once.
    script = f"echo run >> {runs}; [ $(wc -l < {runs}) -eq 3 ] && sleep 1; exit 1"
    policy = RestartPolicy(max_restarts=2, backoff_s=0.0, max_backoff_s=0.0, reset_after_s=0.5)
    _supervise_until_given_up(Supervisor(_child(tmp_path, script), policy))
    # Without the reset the third death would end it; with it, two more restarts are allowed.
    assert len(runs.read_text().splitlines()) == 5


def test_no_restarts_allowed_exits_at_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    process = _child(tmp_path, "kill -TERM $$")
    _wait_for_death(process)
    supervisor = Supervisor(process, RestartPolicy(max_restarts=0, **_NO_WAIT))
    with caplog.at_level(logging.INFO, logger="qwen3_tts_serving.launcher.supervisor"):
        assert not supervisor.check()
    assert [r.getMessage() for r in caplog.records] == [
        "tritonserver was killed by SIGTERM; not restarting (QWEN3_TTS_TRITON_RESTART_ATTEMPTS=0); "
        f"log: {process.log_path}"
    ]


def test_serve_gives_up_on_a_supervised_child_and_stops_watching(tmp_path: Path) -> None:
    process = _child(tmp_path, "exit 4")
    gateway = _child(tmp_path, "exec sleep 60", name="gateway")
    try:
        supervisor = Supervisor(process, RestartPolicy(max_restarts=1, **_NO_WAIT))
        assert serve._wait_for_exit({"gateway": gateway}, [supervisor]) == 1
        assert gateway.is_running  # the gateway is never what was given up
    finally:
        gateway.stop()


def test_a_stop_signal_unwinds_once_and_ignores_repeats() -> None:
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGTERM, serve._raise_shutdown)
        with pytest.raises(serve.Shutdown):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler runs at the next bytecode boundary
        assert signal.getsignal(signal.SIGTERM) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


# --- a wrong setup fails with one line ----------------------------------------------------------------------
def _main_exit(argv: list[str]) -> int:
    """``qwen3-tts-serve`` with ``argv``; its stop-signal handlers are put back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return serve.main(argv)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        get_settings.cache_clear()


def test_an_invalid_setting_is_one_line_naming_it_and_the_valid_choices(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("QWEN3_TTS_DEVICE", "tpu")
    monkeypatch.setenv("QWEN3_TTS_MAX_QUEUED_STREAMS", "many")
    get_settings.cache_clear()
    with caplog.at_level(logging.ERROR, logger="qwen3_tts_serving.serve"):
        assert _main_exit(["--no-gateway"]) == 1
    [message] = [record.getMessage() for record in caplog.records]
    assert "\n" not in message and "pydantic" not in message, message
    assert message.startswith("start-up failed: invalid setting(s): QWEN3_TTS_DEVICE='tpu': ")
    assert "'auto', 'cpu' or 'cuda'" in message
    assert "QWEN3_TTS_MAX_QUEUED_STREAMS='many'" in message


def test_an_unknown_model_is_refused_with_the_valid_names(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        _main_exit(["--no-gateway", "--models", "custom_voice", "custom"])
    assert exited.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "invalid choice: 'custom'" in error and "'voice_design'" in error


def test_an_engine_setting_the_models_would_refuse_stops_before_tritonserver(
    tmp_path: Path,
    checkpoints: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("QWEN3_TTS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("QWEN3_TTS_CHECKPOINT_DIR", str(checkpoints))
    monkeypatch.setenv("QWEN3_TTS_MAX_ACTIVE_STREAMS", "0")
    monkeypatch.setenv("QWEN3_TTS_CUDA_GRAPH_BATCH_SIZES", "1,2,x")
    get_settings.cache_clear()
    started = mock.Mock(side_effect=AssertionError("tritonserver was started"))
    monkeypatch.setattr(serve, "TritonServer", started)
    with caplog.at_level(logging.ERROR, logger="qwen3_tts_serving.serve"):
        assert _main_exit(["--no-gateway"]) == 1
    started.assert_not_called()
    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith("start-up failed: invalid setting(s)"), message
    assert "\n" not in message
    assert "max_active_streams must be >= 1" in message
    assert "cuda_graph_batch_sizes '1,2,x'; use positive integers" in message


def _broken_custom_voice(tiny: Path, root: Path, how: str) -> None:
    """``root/custom_voice``: the tiny CustomVoice checkpoint copied, then broken ``how``."""
    folder = root / "custom_voice"
    shutil.copytree(tiny / ("base" if how == "a base checkpoint" else "custom_voice"), folder)
    if how == "no speech tokenizer":
        shutil.rmtree(folder / "speech_tokenizer")
    elif how == "no weights":
        (folder / "model.safetensors").unlink()


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("no speech tokenizer", "has no speech_tokenizer/config.json, speech_tokenizer/model.safetensors"),
        ("no weights", "has no model.safetensors (a custom_voice checkpoint folder holds"),
        ("a base checkpoint", "holds a base checkpoint (config.json tts_model_type); custom_voice/ needs a"),
    ],
)
def test_a_broken_checkpoint_stops_before_tritonserver_with_one_line_naming_its_folder(
    tmp_path: Path,
    tiny_checkpoints: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    how: str,
    expected: str,
) -> None:
    root = tmp_path / "checkpoints"
    _broken_custom_voice(tiny_checkpoints, root, how)
    monkeypatch.setenv("QWEN3_TTS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("QWEN3_TTS_CHECKPOINT_DIR", str(root))
    get_settings.cache_clear()
    started = mock.Mock(side_effect=AssertionError("tritonserver was started"))
    monkeypatch.setattr(serve, "TritonServer", started)
    with caplog.at_level(logging.ERROR, logger="qwen3_tts_serving.serve"):
        assert _main_exit(["--no-gateway", "--models", "custom_voice"]) == 1
    started.assert_not_called()
    [message] = [record.getMessage() for record in caplog.records]
    assert message.startswith(f"start-up failed: {root / 'custom_voice'} "), message
    assert expected in message and "\n" not in message


def test_a_complete_checkpoint_passes_the_check(tiny_checkpoints: Path) -> None:
    settings = Settings(checkpoint_dir=tiny_checkpoints)
    check_checkpoint_contents(settings, ["custom_voice", "voice_clone", "voice_prompt", "voice_design"])
