"""Sandbox config loading and the `python -m batchgen.sandbox` command as a user runs it."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from batchgen.sandbox import ConfigError, SandboxConfig, add_arguments, config_from_args


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(list(argv))


def test_defaults_have_every_fault_off_and_any_key_accepted() -> None:
    config = SandboxConfig()
    rates = [name for name in config.to_dict() if name.endswith("_rate")]
    assert rates and all(getattr(config, name) == 0 for name in rates)
    assert config.latency == (0, 0) and config.slow_download == 0
    assert config.token_expiry_uses == 0 and config.max_in_flight == 0
    assert config.api_keys == () and config.client_pairs == {}
    assert config.prices["4k"][10] == 60 and config.add_audio_prices == {5: 5, 10: 10}
    assert config.queue_time[1] <= 0.5 and config.processing_time[1] <= 2


def test_from_dict_merges_over_defaults_and_round_trips() -> None:
    config = SandboxConfig.from_dict({"failure_rate": 0.25, "queue_time": 0,
                                      "prices": {"720p": {"5": 7}}, "task_times": [1, 2.5]})
    assert config.task_times == (1.0, 2.5)
    assert config.failure_rate == 0.25 and config.queue_time == (0, 0)
    assert config.prices["720p"] == {5: 7, 10: 40} and config.prices["4k"] == {5: 30, 10: 60}
    assert config.processing_time == (0.5, 2.0)
    assert SandboxConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


@pytest.mark.parametrize(
    ("data", "named"),
    [({"failure_rat": 1}, "failure_rat"), ({"failure_rate": 2}, "failure_rate"),
     ({"queue_time": [2, 1]}, "queue_time"), ({"max_in_flight": -1}, "max_in_flight"),
     ({"seed": "x"}, "seed"), ({"api_keys": [1]}, "api_keys"),
     ({"require_negative_prompt": "no"}, "require_negative_prompt"),
     ({"task_times": 3}, "task_times"), ({"task_times": [1, -1]}, r"task_times\[1\]")],
)
def test_bad_config_names_the_key(data: dict[str, object], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        SandboxConfig.from_dict(data)


def test_update_is_all_or_nothing() -> None:
    config = SandboxConfig()
    with pytest.raises(ConfigError):
        config.update({"failure_rate": 0.5, "bogus": 1})
    assert config.failure_rate == 0


def test_flags_override_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "sandbox.json"
    path.write_text(json.dumps({"failure_rate": 0.5, "retry_after": 9, "seed": 3}))
    args = parse("--config", str(path), "--failure-rate", "0.1", "--queue-time", "0,0.2",
                 "--fail-prompt", "boom", "--fail-prompt", "bang", "--client", "id:secret",
                 "--no-negative-prompt-required")
    config = config_from_args(args)
    assert config.failure_rate == 0.1 and config.retry_after == 9 and config.seed == 3
    assert config.queue_time == (0, 0.2) and config.fail_prompts == ("boom", "bang")
    assert config.client_pairs == {"id": "secret"} and not config.require_negative_prompt


@pytest.mark.parametrize(
    "argv",
    [("--failure-rate", "lots"), ("--failure-rate", "3"), ("--latency", "1,2,3"),
     ("--client", "nocolon"), ("--max-in-flight", "1.5")],
)
def test_bad_flag_values_are_config_errors_naming_the_flag(argv: tuple[str, str]) -> None:
    with pytest.raises(ConfigError, match=argv[0]):
        config_from_args(parse(*argv))


def run_module(*argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "batchgen.sandbox", *argv], text=True,
                          capture_output=True, timeout=timeout)


@pytest.mark.parametrize("argv", [("--retry-after", "soon"), ("--port", "70000"),
                                  ("--config", "/nonexistent/sandbox.json")])
def test_command_rejects_bad_input_with_one_line_and_exit_2(argv: tuple[str, str]) -> None:
    done = run_module(*argv)
    assert done.returncode == 2
    assert done.stdout == "" and len(done.stderr.strip().splitlines()) == 1
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_command_serves_until_signalled(signum: int, code: int) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchgen.sandbox", "--port", "0", "--seed", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "0"},
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        prefix = "sandbox listening on http://127.0.0.1:"
        assert line.startswith(prefix) and int(line.removeprefix(prefix)) > 0
        url = line.removeprefix("sandbox listening on ")
        with urllib.request.urlopen(url + "/__sandbox__/stats", timeout=5) as response:
            assert json.load(response)["tasks_created"] == 0
        process.send_signal(signum)
        assert process.wait(timeout=5) == code
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "Traceback" not in (process.stderr.read() if process.stderr else "")


def test_parsing_run_flags_does_not_load_the_emulator_server() -> None:
    """`batchgen run` against the real API parses the emulator's flags too (they exist
    for `run --sandbox`); building that parser must not import the server, aiohttp's web
    framework or PyAV, which cost every cron run about 0.4 s of start-up."""
    probe = ("import sys; from batchgen import cli; "
             "cli.build_parser().parse_args(['run', 'm.yaml', '--processing-time', '1']); "
             "loaded = [m for m in sys.modules if m in ('batchgen.sandbox.server', "
             "'batchgen.sandbox.app', 'aiohttp.web', 'av')]; "
             "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", probe], check=True)
