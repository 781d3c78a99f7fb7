"""create_app builds the app and nothing more; the gunicorn entry point is what loads the model."""

import threading

import pytest

from clip_vectorize.web.state import service_state
from clip_vectorize_service import app_from_environment, create_app
from config import Settings
from support.assertions import assert_error
from support.fake_encoder import FakeEncoder


def test_create_app_without_an_encoder_starts_no_thread_and_answers_loading():
    threads = threading.active_count()
    app = create_app(Settings(model="/models/not-loaded-here"))
    assert threading.active_count() == threads  # building never loads a model in the background
    response = app.test_client().get("/health")
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["model"] == "/models/not-loaded-here" and response.get_json()["clip_loaded"] is False
    assert_error(app.test_client().post("/encode-text", json={"text": "car"}), 503, "still loading")


def test_attaching_an_encoder_later_makes_the_app_ready():
    app = create_app(Settings())
    service_state(app).attach(FakeEncoder())
    assert app.test_client().get("/health").get_json()["clip_loaded"] is True
    assert app.test_client().post("/encode-text", json={"text": "car"}).status_code == 200


def test_two_apps_keep_their_own_settings_encoders_and_metrics():
    first_encoder, second_encoder = FakeEncoder(), FakeEncoder()
    first, second = create_app(Settings(max_text_chars=5), first_encoder), create_app(Settings(), second_encoder)
    assert first.test_client().post("/encode-text", json={"text": "too long"}).status_code == 400
    assert second.test_client().post("/encode-text", json={"text": "too long"}).status_code == 200
    assert first_encoder.calls == [] and second_encoder.calls == [("texts", 1)]
    metrics = first.test_client().get("/metrics").get_data(as_text=True)
    assert 'endpoint="/encode-text",status="400"' in metrics
    assert 'endpoint="/encode-text",status="200"' not in metrics


def test_the_app_registers_the_probe_and_encode_blueprints():
    app = create_app(Settings(), FakeEncoder())
    endpoints = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    probes = ("/health", "/metrics", "/openapi.json")
    encoders = ("/encode-text", "/encode-texts", "/encode-image", "/encode-images")
    assert {endpoints[path] for path in probes} == {"probes.health", "probes.metrics", "probes.openapi"}
    assert {endpoints[path].split(".")[0] for path in encoders} == {"encode"}


def test_the_gunicorn_entry_point_stops_with_exit_code_3_on_a_bad_setting(monkeypatch, caplog):
    monkeypatch.setenv("DEVICE", "tpu")
    with pytest.raises(SystemExit) as stopped:
        app_from_environment()
    assert stopped.value.code == 3
    assert "clip-vectorize cannot start: DEVICE must be one of auto, cpu, cuda" in caplog.text
