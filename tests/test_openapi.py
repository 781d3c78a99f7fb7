"""openapi.json: a valid OpenAPI 3.0 document, served by the service, and true to what the service does.

The last test lets schemathesis generate requests from the document and send them to the app in-process (WSGI),
with the real tiny CLIP encoder behind it, and checks every response against the document.
"""

import json
import re
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from openapi_schema_validator import OAS30Validator
from openapi_spec_validator import validate
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from support.app import make_app

DOCUMENT = Path(__file__).resolve().parent.parent / "clip_vectorize" / "web" / "openapi.json"
SPEC = json.loads(DOCUMENT.read_text(encoding="utf-8"))
API_KEY = "test-key-0123456789"
CONFORMANCE_CHECKS = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


class _StillLoading:
    """The real encoder as the app sees it while the model is still loading: not ready."""

    ready = False

    def __init__(self, encoder) -> None:
        self._encoder = encoder

    def __getattr__(self, name):
        return getattr(self._encoder, name)


def _resolve(node: dict) -> dict:
    """Follow a local `$ref` (`#/components/...`) to what it names."""
    while "$ref" in node:
        target = SPEC
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _documented_examples():
    """A pytest.param(schema, example) for every example of a request or response body in the document."""
    for path, operations in SPEC["paths"].items():
        for method, operation in operations.items():
            bodies = {"request": operation.get("requestBody", {})}
            bodies.update({f"response {status}": response for status, response in operation["responses"].items()})
            for part, body in bodies.items():
                for media_type, content in _resolve(body).get("content", {}).items():
                    examples = {name: _resolve(value)["value"] for name, value in content.get("examples", {}).items()}
                    if "example" in content:
                        examples["example"] = content["example"]
                    for name, example in examples.items():
                        where = f"{method.upper()} {path} {part} {media_type} {name}"
                        yield pytest.param(content["schema"], example, id=where)


@pytest.fixture(scope="module")
def open_app(tiny_encoder):
    return make_app(tiny_encoder)


@pytest.fixture(scope="module", params=["open", "with-api-key", "model-loading", "multilingual"])
def service(request, tiny_encoder, tiny_multilingual_encoder):
    """(app, the 5xx it may answer): no API key; an API key the generated requests lack; a model still loading;
    a second, multilingual text encoder."""
    if request.param == "open":
        return make_app(tiny_encoder), set()
    if request.param == "multilingual":
        return make_app(tiny_multilingual_encoder), set()
    if request.param == "with-api-key":
        return make_app(tiny_encoder, api_key=API_KEY), set()
    return make_app(_StillLoading(tiny_encoder)), {503}


def test_the_document_is_valid_openapi_3_0():
    validate(SPEC)
    assert SPEC["openapi"] == "3.0.3"


def test_the_service_serves_this_very_document_at_openapi_json(open_app):
    with open_app.test_client().get("/openapi.json") as response:
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        assert response.get_json() == SPEC


def test_every_route_of_the_service_is_documented_and_every_documented_route_exists(open_app):
    routes = {
        (re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule), method.lower())  # Flask's <name> is OpenAPI's {name}
        for rule in open_app.url_map.iter_rules()
        if not rule.endpoint.endswith("static")  # the page's script and style sheet
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method) for path, operations in SPEC["paths"].items() for method in operations}
    assert routes == documented


@pytest.mark.parametrize("schema, example", list(_documented_examples()))
def test_every_example_in_the_document_matches_its_schema(schema, example):
    # "components" rides along so that "#/components/..." references resolve inside this one schema.
    OAS30Validator({"allOf": [schema], "components": SPEC["components"]}).validate(example)


def test_every_endpoint_accepts_a_bearer_token_but_the_probes_and_the_page_need_none():
    scheme = SPEC["components"]["securitySchemes"]["bearerAuth"]
    assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
    for path, operations in SPEC["paths"].items():
        for operation in operations.values():
            expected = [] if path in ("/health", "/metrics", "/openapi.json", "/") else [{}, {"bearerAuth": []}]
            assert operation["security"] == expected, path


schema = schemathesis.openapi.from_dict(SPEC)


@schema.parametrize()
@settings(max_examples=25, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_service_answers_as_the_document_says(case, service):
    """No 5xx (but 503 while loading); every status code, content type, body and header is one the document declares."""
    app, allowed_5xx = service
    response = case.call(app=app)
    assert response.status_code < 500 or response.status_code in allowed_5xx, (
        f"{case.as_curl_command()}\n-> {response.status_code} {response.text}"
    )
    case.validate_response(response, checks=CONFORMANCE_CHECKS)
