"""Optional API key on the encode endpoints, open health checks, and CORS only for configured origins."""

import pytest
from flask import Blueprint

from config import Settings
from support.app import make_app, make_client
from support.assertions import assert_error

KEY = "s3cret-key"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}, {"Authorization": KEY},
     {"Authorization": f"Bearer {KEY}x"}],
    ids=["none", "wrong-key", "wrong-scheme", "no-scheme", "longer-key"],
)
def test_with_an_api_key_set_encode_endpoints_refuse_requests_without_it(headers):
    response = make_client(api_key=KEY).post("/encode-text", json={"text": "car"}, headers=headers)
    assert assert_error(response, 401, "API key")["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert KEY not in response.get_data(as_text=True)


def test_with_the_right_key_encoding_works():
    response = make_client(api_key=KEY).post("/encode-text", json={"text": "car"},
                                             headers={"Authorization": f"Bearer {KEY}"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/health", "/metrics", "/openapi.json"])
def test_the_probes_blueprint_stays_open_with_a_key_set(path):
    assert make_client(api_key=KEY).get(path).status_code == 200


def test_an_endpoint_of_any_other_blueprint_needs_the_key_by_default():
    app = make_app(api_key=KEY)
    extra = Blueprint("extra", __name__)
    extra.add_url_rule("/extra", "extra", lambda: "hello")
    app.register_blueprint(extra)
    assert_error(app.test_client().get("/extra"), 401, "API key")
    assert app.test_client().get("/extra", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_an_unknown_path_is_a_404_not_a_401():
    assert_error(make_client(api_key=KEY).get("/no-such-page"), 404, "no such endpoint")


def test_without_a_key_set_no_authorization_is_needed():
    assert make_client().post("/encode-text", json={"text": "car"}).status_code == 200


def test_no_cors_headers_unless_origins_are_configured():
    response = make_client().post("/encode-text", json={"text": "car"}, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_a_configured_origin_gets_cors_headers_and_others_do_not():
    client = make_client(cors_origins=("https://gallery.example",))
    allowed = client.post("/encode-text", json={"text": "car"}, headers={"Origin": "https://gallery.example"})
    other = client.post("/encode-text", json={"text": "car"}, headers={"Origin": "https://evil.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://gallery.example"
    assert "Origin" in allowed.headers["Vary"]
    assert "Access-Control-Allow-Origin" not in other.headers


def test_a_cors_preflight_succeeds_without_the_api_key():
    client = make_client(cors_origins=("https://gallery.example",), api_key=KEY)
    response = client.options("/encode-text", headers={
        "Origin": "https://gallery.example", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "Authorization, Content-Type"})
    assert response.status_code == 200
    assert "POST" in response.headers["Access-Control-Allow-Methods"]
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]


def test_the_api_key_is_not_shown_in_the_settings_repr():
    assert KEY not in repr(Settings(api_key=KEY))
