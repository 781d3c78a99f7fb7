"""The search page in a real browser: Debian's chromium driven by Playwright, against the service started by gunicorn
on loopback with the tiny model and a folder of generated car pictures it indexes itself (CLIP_GALLERY_DIR).

The test saves screenshots of the results page in test-artifacts/ (CLIP_TEST_ARTIFACTS to put them elsewhere).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import requests

from support.images import CAR_COLOURS, car_drawing, encode_image_bytes
from support.service_process import PROJECT_ROOT, Service, start_service, stop, wait_until_healthy

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

CHROMIUM = shutil.which("chromium")
API_KEY = "page-test-key-4242"
GALLERY_SIZE = 26  # more than one page of 20, so "load more" has something to load
ARTIFACTS = Path(os.environ.get("CLIP_TEST_ARTIFACTS", PROJECT_ROOT / "test-artifacts"))

if CHROMIUM is None:
    pytest.skip("Debian's chromium is not installed (tests/run.sh installs it when run as root)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def write_car_gallery(folder: Path, count: int) -> list[Path]:
    colours = list(CAR_COLOURS)
    paths = []
    for index in range(count):
        colour = colours[index % len(colours)]
        path = folder / ("suv" if index % 2 else "sedan") / f"{colour}-{index:02d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode_image_bytes(car_drawing(colour, seed=index)))
        paths.append(path)
    return paths


def wait_until_indexed(service: Service, expected: int, seconds: float = 120) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        body = requests.get(f"{service.url}/gallery/status", headers={"Authorization": f"Bearer {API_KEY}"},
                            timeout=10).json()
        if (body.get("indexing") or {}).get("state") in ("done", "failed"):
            assert body["indexing"]["state"] == "done", body
            assert body["points"] == expected, body
            return body
        time.sleep(0.3)
    raise AssertionError(f"the gallery was not indexed within {seconds} s:\n{service.log_tail()}")


@pytest.fixture(scope="module")
def gallery_service(tiny_model_dir, tmp_path_factory):
    """The service with CLIP_GALLERY_DIR (26 cars and a symlink pointing out of the folder) and an API key."""
    root = tmp_path_factory.mktemp("page")
    photos = root / "photos"
    write_car_gallery(photos, GALLERY_SIZE)
    outside = root / "outside.jpg"
    outside.write_bytes(encode_image_bytes(car_drawing("red", seed=99)))
    (photos / "escape.jpg").symlink_to(outside)  # indexed like any image, but never served as a thumbnail
    service = start_service(tiny_model_dir, root, CLIP_VENV=sys.prefix, CLIP_THREADS="8",
                            CLIP_GALLERY_DIR=str(photos), QDRANT_PATH=str(root / "qdrant_data"),
                            CLIP_THUMBNAIL_DIR=str(root / "thumbnails"), CLIP_SERVICE_API_KEY=API_KEY)
    try:
        wait_until_healthy(service)
        wait_until_indexed(service, GALLERY_SIZE + 1)
        yield service, photos
    finally:
        stop(service)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where chromium's sandbox refuses to start.
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    opened = context.new_page()
    yield opened
    context.close()


def open_with_key(page, url: str) -> None:
    page.goto(url)
    page.locator("#api-key").fill(API_KEY)  # the page asks once; the key stays in this tab's sessionStorage
    page.get_by_role("button", name="Use this key").click()
    page.locator("#gallery-status").filter(has_text="images indexed").wait_for()


def result_ids(page) -> list[str]:
    return page.locator(".result").evaluate_all("items => items.map(item => item.dataset.id)")


def wait_for_thumbnails(page, count: int) -> None:
    page.wait_for_function(
        "count => [...document.querySelectorAll('.result img')].filter(img => img.complete && img.naturalWidth > 0)"
        ".length >= count", arg=count)


def test_a_text_search_shows_thumbnails_with_scores_and_lands_in_the_url(gallery_service, page):
    service, _ = gallery_service
    open_with_key(page, service.url + "/")
    page.locator("#query").fill("红色的宝马SUV")
    page.locator("#query").press("Enter")
    page.locator(".result").nth(19).wait_for()
    assert len(result_ids(page)) == 20
    assert re.search(r"[?&]q=%E7%BA%A2", page.url), page.url  # the query, shareable
    scores = [float(text) for text in page.locator(".result .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    wait_for_thumbnails(page, 19)  # the escaping symlink, if it ranks here, is the one without a thumbnail
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "search-page.png"), full_page=True)

    page.get_by_role("button", name=re.compile("Load more")).click()
    page.locator(".result").nth(GALLERY_SIZE).wait_for()
    assert len(set(result_ids(page))) == GALLERY_SIZE + 1
    assert page.locator("#load-more").is_hidden()


def test_a_shared_url_runs_the_same_search_in_another_tab(gallery_service, page):
    service, _ = gallery_service
    open_with_key(page, service.url + "/?q=blue%20car")
    page.locator(".result").nth(19).wait_for()
    assert page.locator("#query").input_value() == "blue car"
    first = result_ids(page)
    page.reload()
    page.locator(".result").nth(19).wait_for()
    assert result_ids(page) == first


def test_more_like_this_searches_near_that_image_and_leaves_it_out(gallery_service, page):
    service, _ = gallery_service
    open_with_key(page, service.url + "/?q=car")
    page.locator(".result").nth(2).wait_for()
    chosen, name = result_ids(page)[2], page.locator(".result .name").nth(2).inner_text()
    page.locator(".result").nth(2).get_by_role("button", name=re.compile("More like this")).click()
    page.wait_for_url(re.compile(r"[?&]similar="))
    page.locator("#query-summary").filter(has_text=f"images like “{name}”").wait_for()
    assert chosen not in result_ids(page)
    assert len(result_ids(page)) == 20
    assert page.locator("#query").input_value() == ""  # the box no longer shows the text search before it
    page.reload()  # the shared link knows the id, not the name
    page.locator("#query-summary").filter(has_text="images like the one chosen").wait_for()


def test_more_like_this_sends_a_64_bit_point_id_exactly(gallery_service, page):
    """A manifest may give integer ids beyond 2^53, which a JavaScript number rounds. The first search's answer
    is faked to hold one (this folder's ids are UUIDs); the real service then gets the id the page sends."""
    service, _ = gallery_service
    largest = 2**64 - 1
    sent = []
    page.route("**/search", lambda route: route.fulfill(
        status=200, content_type="application/json",
        body=json.dumps({"status": "success", "model": "tiny", "results": [
            {"id": largest, "score": 0.5, "payload": {"image_id": largest, "path": "/nowhere.jpg"}}]})))
    page.on("request", lambda request: sent.append(request.post_data)
            if request.url.endswith("/search-similar") else None)
    open_with_key(page, service.url + "/?q=car")
    assert page.locator(".result .name").first.inner_text() == str(largest)  # the caption, exact too
    page.locator(".result").first.get_by_role("button", name=re.compile("More like this")).click()
    page.wait_for_url(re.compile(rf"[?&]similar={largest}(&|$)"))
    page.locator("#message").filter(has_text="no point").wait_for()  # the real service: no such point here
    page.reload()  # a shared link, or the page opened again: the id comes from the URL
    page.locator("#message").filter(has_text="no point").wait_for()
    assert len(sent) == 2 and all(json.loads(body)["id"] == str(largest) for body in sent), sent


def test_dropping_a_photo_finds_that_photo_first(gallery_service, page):
    service, photos = gallery_service
    open_with_key(page, service.url + "/")
    dropped = next(photos.glob("*/green-*.jpg"))
    data = base64.b64encode(dropped.read_bytes()).decode()
    page.locator("#drop-zone").evaluate(
        """(zone, data) => {
             const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
             const transfer = new DataTransfer();
             transfer.items.add(new File([bytes], "dropped.jpg", {type: "image/jpeg"}));
             zone.dispatchEvent(new DragEvent("drop", {dataTransfer: transfer, bubbles: true}));
           }""", data)
    page.locator("#query-summary").filter(has_text="your photo").wait_for()
    assert page.locator(".result .name").first.inner_text() == dropped.relative_to(photos).as_posix()
    assert float(page.locator(".result .score").first.inner_text()) > 0.99


def test_the_file_picker_searches_by_photo_too(gallery_service, page):
    service, photos = gallery_service
    open_with_key(page, service.url + "/")
    picked = next(photos.glob("*/blue-*.jpg"))
    page.locator("#photo").set_input_files(str(picked))
    page.locator("#query-summary").filter(has_text="your photo").wait_for()
    assert page.locator(".result .name").first.inner_text() == picked.relative_to(photos).as_posix()


def test_a_threshold_above_every_score_says_nothing_matches(gallery_service, page):
    service, _ = gallery_service
    open_with_key(page, service.url + "/?q=car&min=0.95")  # text-to-image scores are far below that
    page.locator("#message").filter(has_text="No images match").wait_for()
    assert page.locator(".result").count() == 0
    assert page.locator("#threshold-value").inner_text() == "0.95"


def test_thumbnail_requests_never_serve_a_file_from_outside_the_gallery(gallery_service, page):
    service, photos = gallery_service
    open_with_key(page, service.url + "/")
    escaping = requests.post(f"{service.url}/search-by-image", headers={"Authorization": f"Bearer {API_KEY}"},
                             files={"image": (photos / "escape.jpg").read_bytes()}, timeout=10).json()["results"][0]
    assert escaping["payload"]["image_id"] == "escape.jpg"
    attempts = [f"/gallery/thumbnails/{escaping['id']}", "/gallery/thumbnails/..%2F..%2F..%2Fetc%2Fpasswd",
                "/gallery/thumbnails/../../../../etc/passwd", "/gallery/thumbnails/%2Fetc%2Fpasswd"]
    answers = page.evaluate(
        """async ([paths, key]) => Promise.all(paths.map(async path => {
             const response = await fetch(path, {headers: {Authorization: `Bearer ${key}`}});
             return [response.status, response.headers.get("content-type"), await response.text()];
           }))""", [attempts, API_KEY])
    for path, (status, content_type, text) in zip(attempts, answers, strict=True):
        assert status == 404 and content_type == "application/json", (path, status, content_type)
        assert "root:" not in text


def test_the_page_asks_for_the_key_again_when_it_is_wrong(gallery_service, page):
    service, _ = gallery_service
    page.goto(service.url + "/")
    page.locator("#api-key").fill("not-the-key")
    page.get_by_role("button", name="Use this key").click()
    page.locator("#message").filter(has_text="not accepted").wait_for()
    assert page.locator("#key-form").is_visible()


def test_a_loading_model_is_said_and_the_search_retried(gallery_service, page):
    """The one fake here: the first search answers as a loading model does, to see the page wait and retry."""
    service, _ = gallery_service
    answered = []

    def loading_once(route):
        if answered:
            return route.continue_()
        answered.append(True)
        return route.fulfill(status=503, content_type="application/json", headers={"Retry-After": "5"},
                             body='{"status": "error", "error": "the CLIP model is still loading", '
                                  '"code": "model_not_ready"}')

    page.route("**/search", loading_once)
    open_with_key(page, service.url + "/?q=car")
    page.locator("#message").filter(has_text="still loading").wait_for()
    page.locator(".result").first.wait_for(timeout=15_000)
    assert answered == [True]


@pytest.fixture(scope="module")
def empty_service(tiny_model_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("empty")
    service = start_service(tiny_model_dir, root, CLIP_VENV=sys.prefix, CLIP_THREADS="4",
                            QDRANT_PATH=str(root / "qdrant_data"))
    try:
        wait_until_healthy(service)
        yield service
    finally:
        stop(service)


def test_an_empty_gallery_says_how_to_fill_it(empty_service, page):
    page.goto(empty_service.url + "/?q=car")
    page.locator("#message").filter(has_text="The gallery is empty").wait_for()
    assert "CLIP_GALLERY_DIR" in page.locator("#message").inner_text()
    assert page.locator("#gallery-status").inner_text() == "The gallery is empty."
