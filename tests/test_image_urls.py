"""{"url": ...} on the image endpoints: off by default; when on, only public or allow-listed hosts are fetched."""

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from support.app import make_client
from support.images import encode_image_bytes, photo_like

PHOTO = encode_image_bytes(photo_like(200, 150, seed=31))


class PhotoHandler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(PHOTO)))
        self.end_headers()
        self.wfile.write(PHOTO)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def photo_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), PhotoHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/car.jpg"
    server.shutdown()


def test_image_urls_are_refused_unless_turned_on(tiny_encoder, photo_url):
    response = make_client(tiny_encoder).post("/encode-image", json={"url": photo_url})
    assert response.status_code == 400 and "CLIP_ALLOW_IMAGE_URLS" in response.get_json()["error"]


def test_a_loopback_url_is_refused_even_when_urls_are_on(tiny_encoder, photo_url):
    response = make_client(tiny_encoder, allow_image_urls=True).post("/encode-image", json={"url": photo_url})
    assert response.status_code == 400 and "CLIP_URL_ALLOWED_HOSTS" in response.get_json()["error"]


def test_an_allow_listed_host_is_fetched_and_encoded_like_an_upload(tiny_encoder, photo_url):
    client = make_client(tiny_encoder, allow_image_urls=True, url_allowed_hosts=("127.0.0.1",))
    fetched = client.post("/encode-image", json={"url": photo_url}).get_json()["vector"]
    uploaded = client.post("/encode-image", data={"image": (io.BytesIO(PHOTO), "car.jpg")}).get_json()["vector"]
    np.testing.assert_allclose(fetched, uploaded, rtol=1e-5, atol=1e-6)


def test_a_batch_of_urls_reports_refused_ones_per_item(tiny_encoder, photo_url):
    client = make_client(tiny_encoder, allow_image_urls=True, url_allowed_hosts=("127.0.0.1",))
    urls = [photo_url, "http://169.254.169.254/latest/meta-data/", "file:///etc/passwd"]
    body = client.post("/encode-images", json={"urls": urls}).get_json()
    assert body["count"] == 3 and body["vectors"][0] is not None and body["vectors"][1] is None
    assert [error["index"] for error in body["errors"]] == [1, 2]
