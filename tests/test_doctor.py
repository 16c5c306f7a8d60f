"""`qwenscribe doctor`: each check on this machine, failures with advice, the whole command."""

from __future__ import annotations

import importlib.util
import json
import logging
import signal
from types import SimpleNamespace

import pytest
import typer
from typer.testing import CliRunner

from qwenscribe import doctor
from qwenscribe.cli import app as main_app
from qwenscribe.runtimes import cpu

runner = CliRunner()


@pytest.fixture
def app() -> typer.Typer:
    return main_app


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


# The disk-space check depends on how full this machine's disk is, not on the code: it has
# its own tests below with the free space set.
MACHINE_INDEPENDENT_CHECKS = [f for f in doctor.quick_checks() if f is not doctor.check_disk_space]


@pytest.mark.parametrize("function", MACHINE_INDEPENDENT_CHECKS)
def test_each_quick_check_passes_here(function):
    check = function()
    assert isinstance(check, doctor.Check)
    assert check.status == doctor.OK, check
    assert check.name
    assert check.detail


def test_cpu_flags_are_read(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_tile\n")
    assert {"avx2", "avx512f", "amx_tile"} <= cpu.read_cpu_flags(info)
    assert cpu.read_cpu_flags(tmp_path / "missing") is None


def test_llama_cpp_decodes_quantized_multi_token_batches():
    check = doctor.check_llama_quantized_batch()
    assert check.status == doctor.OK, check
    assert "q8_0 ok" in check.detail
    assert "q4_0 ok" in check.detail


def test_a_crashing_probe_fails_with_the_amx_advice(monkeypatch):
    def crashed(path, extra_bufts=False):
        return False, f"crashed ({signal.Signals.SIGSEGV.name})"

    monkeypatch.setattr(doctor, "probe_gguf", crashed)
    check = doctor.check_llama_quantized_batch()
    assert check.status == doctor.FAIL
    assert "SIGSEGV" in check.detail
    assert "GGML_NATIVE=OFF" in check.advice
    assert "AMX" in check.advice


def test_probe_reports_a_signal_as_a_crash(monkeypatch):
    class Done:
        returncode = -signal.SIGSEGV
        stdout = stderr = ""

    monkeypatch.setattr(doctor.subprocess, "run", lambda *a, **k: Done())
    assert doctor.probe_gguf(doctor.Path("x.gguf")) == (False, "crashed (SIGSEGV)")


def test_missing_package_and_unwritable_cache_fail_with_advice(tmp_path, monkeypatch):
    check = doctor.check_package("no_such_module_qs", "no-such-dist", True, "testing")
    assert check.status == doctor.FAIL
    assert "pip install no-such-dist" in check.advice
    optional = doctor.check_package("no_such_module_qs", "no-such-dist", False, "testing")
    assert optional.status == doctor.WARN
    assert not optional.required

    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("QWENSCRIBE_HOME", str(blocker / "home"))
    check = doctor.check_cache_writable()
    assert check.status == doctor.FAIL
    assert "QWENSCRIBE_HOME" in check.advice


def _free_space(monkeypatch, free: int, asked: list | None = None) -> None:
    usage = SimpleNamespace(total=free * 2, used=free, free=free)

    def disk_usage(path):
        if asked is not None:
            asked.append(path)
        return usage

    monkeypatch.setattr(doctor.shutil, "disk_usage", disk_usage)


def test_enough_disk_space_is_ok(monkeypatch):
    _free_space(monkeypatch, doctor.LOW_DISK_BYTES)
    check = doctor.check_disk_space()
    assert check.status == doctor.OK, check
    assert "5.0 GiB free" in check.detail


def test_low_disk_space_is_a_warning(monkeypatch):
    _free_space(monkeypatch, doctor.LOW_DISK_BYTES - 1)
    check = doctor.check_disk_space()
    assert check.status == doctor.WARN
    assert not check.required
    assert "QWENSCRIBE_HOME" in check.advice
    assert doctor.all_required_pass([check])


def test_disk_space_is_read_where_the_cache_will_be(tmp_path, monkeypatch):
    asked = []
    _free_space(monkeypatch, doctor.LOW_DISK_BYTES, asked)
    monkeypatch.setenv("QWENSCRIBE_HOME", str(tmp_path / "not" / "yet" / "made"))
    doctor.check_disk_space()
    assert asked == [tmp_path]


def test_self_test_transcribes_aligns_and_writes_subtitles(capfd, caplog):
    caplog.set_level(logging.WARNING)  # as the doctor runs (-v would show INFO, on purpose)
    checks = doctor.check_self_test()
    by_name = {check.name: check for check in checks}
    assert by_name["self-test"].status == doctor.OK, by_name["self-test"]
    assert "SRT/VTT/JSON read back" in by_name["self-test"].detail
    parity = by_name["parity with transformers"]
    assert parity.status == doctor.OK
    if importlib.util.find_spec("torch") and importlib.util.find_spec("transformers"):
        assert parity.detail == "tokens equal in 1 of 1 chunks"
    else:
        assert "skipped" in parity.detail
    # Nothing around the doctor's table: no loading bars, no expected warnings of the tiny model.
    assert capfd.readouterr().err == ""
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_doctor_quick_command(app):
    result = runner.invoke(app, ["doctor", "--quick"])
    assert result.exit_code == 0, result.output
    assert "✓" in result.output
    assert "llama.cpp quantized batch" in result.output
    assert "self-test" not in result.output
    assert "all required checks pass" in result.output


def test_doctor_with_self_test_in_json(app):
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert data["ok"] is True
    names = [check["name"] for check in data["checks"]]
    assert "self-test" in names
    assert "llama.cpp quantized batch" in names


def test_a_failed_required_check_exits_1_with_advice(app, monkeypatch):
    def broken() -> doctor.Check:
        return doctor.Check("python", doctor.FAIL, "2.7", "Install Python 3.10 or newer.")

    monkeypatch.setattr(doctor, "check_python", broken)
    monkeypatch.setattr(
        doctor, "check_llama_quantized_batch", lambda: doctor.Check("llama", doctor.OK, "mocked")
    )
    result = runner.invoke(app, ["doctor", "--quick"])
    assert result.exit_code == 1
    assert "✗" in result.output
    assert "Install Python 3.10 or newer." in result.output
    assert "some required checks failed" in result.output


def test_wired_into_the_main_cli():
    from qwenscribe.cli import app as main_app

    result = runner.invoke(main_app, ["doctor", "--quick", "--json"])
    assert result.exit_code == 0, result.output
