"""Deployment files are code: the unit verifies, the example env file is valid, the README lists every setting."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from gunicorn.config import Config

from config import ServerSettings, Settings, environment_variables

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEPLOY = PROJECT_ROOT / "deploy"
UNIT = DEPLOY / "clip-vectorize.service"
ENV_EXAMPLE = DEPLOY / "clip-vectorize.env.example"
EVERY_SETTING = set(environment_variables(Settings, ServerSettings))


def env_file_values(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze not installed (tests/run.sh installs it as root)")
def test_systemd_unit_passes_systemd_analyze_verify(tmp_path):
    # The unit names /opt/clip-vectorize; verify it against this checkout and the virtualenv running the tests.
    text = (UNIT.read_text().replace("/opt/clip-vectorize/.venv", sys.prefix)
            .replace("/opt/clip-vectorize", str(PROJECT_ROOT)))
    rendered = tmp_path / "clip-vectorize.service"
    rendered.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(rendered)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "clip-vectorize.service" not in result.stderr, result.stderr


def test_systemd_unit_runs_gunicorn_unprivileged_hardened_and_restarting():
    unit = unit_settings()
    assert unit["ExecStart"] == [
        "/opt/clip-vectorize/.venv/bin/gunicorn --config /opt/clip-vectorize/deploy/gunicorn.conf.py"]
    assert unit["DynamicUser"] == ["yes"] and "User" not in unit
    assert unit["Restart"] == ["always"] and unit["EnvironmentFile"] == ["/etc/clip-vectorize/clip-vectorize.env"]
    for directive in ("NoNewPrivileges", "ProtectSystem", "PrivateTmp", "ProtectHome", "RestrictAddressFamilies"):
        assert directive in unit, directive
    assert "MemoryDenyWriteExecute" not in unit and "PrivateDevices" not in unit


def test_start_script_ends_in_the_command_systemd_runs():
    last_line = (PROJECT_ROOT / "start_clip_service.sh").read_text().strip().splitlines()[-1]
    assert last_line == 'exec "$venv/bin/gunicorn" --config deploy/gunicorn.conf.py'


def test_example_env_file_is_valid_and_names_every_setting():
    values = env_file_values(ENV_EXAMPLE)
    Settings.from_env(values)  # raises on any bad value
    ServerSettings.from_env(values)
    assert EVERY_SETTING - {"CLIP_REFERENCE_PROJECT"} - set(values) == set()  # that one is legacy: shown commented out
    assert values["CLIP_SERVICE_HOST"] == "127.0.0.1"


def test_readme_documents_every_environment_variable():
    readme = (PROJECT_ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.MULTILINE))
    assert EVERY_SETTING - documented == set()


def gunicorn_config() -> dict:
    """The names deploy/gunicorn.conf.py defines, read as gunicorn reads it (executed, with its __file__)."""
    namespace: dict = {"__file__": str(DEPLOY / "gunicorn.conf.py")}
    exec((DEPLOY / "gunicorn.conf.py").read_text(), namespace)
    return namespace


def test_gunicorn_config_loads_and_binds_host_and_port(monkeypatch):
    monkeypatch.setenv("CLIP_SERVICE_HOST", "::1")
    monkeypatch.setenv("CLIP_SERVICE_PORT", "6001")
    namespace = gunicorn_config()
    config = Config()
    for key in ("bind", "workers", "threads", "timeout", "wsgi_app", "worker_class"):
        config.set(key, namespace[key])
    assert (config.bind == ["[::1]:6001"] and config.workers == 1
            and config.wsgi_app.startswith("clip_vectorize_service:"))


def test_gunicorn_has_more_threads_than_the_model_queue_plus_a_batch_so_overload_control_sees_every_request(
        monkeypatch):
    defaults = Settings()
    assert gunicorn_config()["threads"] > defaults.queue_size + defaults.batch_size
    monkeypatch.setenv("CLIP_QUEUE_SIZE", "500")  # the app's own setting, read where it is declared
    assert gunicorn_config()["threads"] > 500 + defaults.batch_size


def test_a_bad_gunicorn_setting_stops_start_up_with_one_line_naming_it(monkeypatch, capsys):
    monkeypatch.setenv("CLIP_WORKERS", "two")
    with pytest.raises(SystemExit) as stopped:
        gunicorn_config()
    assert stopped.value.code == 3
    assert capsys.readouterr().err.strip() == "clip-vectorize cannot start: CLIP_WORKERS must be an integer; got 'two'"


def test_a_gallery_folder_in_the_embedded_store_with_several_workers_stops_start_up(monkeypatch, capsys):
    monkeypatch.setenv("CLIP_WORKERS", "2")
    monkeypatch.setenv("CLIP_GALLERY_DIR", "/srv/photos")
    with pytest.raises(SystemExit) as stopped:
        gunicorn_config()
    assert stopped.value.code == 3 and "QDRANT_URL" in capsys.readouterr().err
    monkeypatch.setenv("QDRANT_URL", "http://qdrant:6333")  # a server admits every worker
    assert gunicorn_config()["workers"] == 2
    assert capsys.readouterr().err == ""


def test_several_workers_on_the_embedded_store_are_warned_that_one_of_them_can_search(monkeypatch, capsys):
    monkeypatch.setenv("CLIP_WORKERS", "2")
    assert gunicorn_config()["workers"] == 2
    assert "only the first worker to open the store can search" in capsys.readouterr().err
