"""The search endpoints and the service's own gallery, in-process: the tiny CLIP model, a folder of generated photos
indexed by the service itself into an embedded Qdrant store, and the JSON contract of every answer."""

from __future__ import annotations

import io
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clip_vectorize.gallery.errors import ThumbnailUnavailableError
from clip_vectorize.gallery.store import open_store
from clip_vectorize.gallery.store.base import IndexedPoint, NewPoint, StoreConfig
from clip_vectorize.gallery.thumbnails import Thumbnails
from clip_vectorize.web.state import service_state
from support.app import make_app
from support.assertions import eventually
from support.fake_encoder import FakeEncoder
from support.gallery import write_photos
from support.images import encode_image_bytes, photo_like

PHOTOS = 12
API_KEY = "search-test-key"
BEARER = {"Authorization": f"Bearer {API_KEY}"}


def indexed_app(encoder, photos, tmp_path, **settings):
    app = make_app(encoder, gallery_dir=str(photos), qdrant_path=str(tmp_path / "qdrant_data"),
                   thumbnail_dir=str(tmp_path / "thumbnails"), **settings)
    gallery = service_state(app).gallery
    gallery.reindex()
    assert gallery.indexing.wait(120).state == "done"
    return app


@pytest.fixture(scope="module")
def gallery(tiny_encoder, tmp_path_factory):
    """(client, photo folder): 12 photos indexed by the service."""
    root = tmp_path_factory.mktemp("search")
    photos = root / "photos"
    write_photos(photos, PHOTOS)
    return indexed_app(tiny_encoder, photos, root).test_client(), photos


def search(client, path="/search", **body):
    response = client.post(path, json=body)
    return response.status_code, response.get_json()


def upload(client, blob: bytes, **fields):
    data = {"image": (io.BytesIO(blob), "photo.jpg"), **{name: str(value) for name, value in fields.items()}}
    response = client.post("/search-by-image", data=data, content_type="multipart/form-data")
    return response.status_code, response.get_json()


# ---------------------------------------------------------------- the contract of a search


def test_a_text_search_answers_ranked_results_with_ids_scores_payloads_encoder_and_model(gallery, tiny_encoder):
    client, _ = gallery
    status, body = search(client, text="红色的宝马SUV", limit=5)
    assert status == 200 and body["status"] == "success"
    assert list(body) == ["status", "results", "encoder", "model"]
    assert body["encoder"] == "clip" and body["model"] == tiny_encoder.model_name
    scores = [result["score"] for result in body["results"]]
    assert len(scores) == 5 and scores == sorted(scores, reverse=True)
    first = body["results"][0]
    assert set(first) == {"id", "score", "payload"} and first["payload"]["image_id"].endswith(".jpg")


def test_the_text_score_is_the_cosine_of_the_text_and_image_vectors(gallery, tiny_encoder):
    client, photos = gallery
    _, body = search(client, text="a silver sedan", limit=1)
    best = body["results"][0]
    text = tiny_encoder.encode_texts(["a silver sedan"]).vectors[0]
    (image,) = tiny_encoder.encode_images([(photos / best["payload"]["image_id"]).read_bytes()])
    assert best["score"] == pytest.approx(float(np.dot(text, image)), abs=1e-4)


def test_an_indexed_photo_searched_by_upload_finds_itself_first(gallery):
    client, photos = gallery
    photo = sorted(photos.rglob("*.jpg"))[3]
    status, body = upload(client, photo.read_bytes(), limit=3)
    assert status == 200 and "encoder" not in body
    assert body["results"][0]["payload"]["image_id"] == photo.relative_to(photos).as_posix()
    assert body["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_search_by_image_takes_base64_json_as_encode_image_does(gallery):
    client, photos = gallery
    import base64

    photo = sorted(photos.rglob("*.jpg"))[0]
    status, body = search(client, "/search-by-image", image=base64.b64encode(photo.read_bytes()).decode(), limit=1)
    assert status == 200 and body["results"][0]["payload"]["path"] == str(photo)


def test_more_like_this_leaves_the_image_itself_out(gallery):
    client, _ = gallery
    _, body = search(client, text="car", limit=1)
    chosen = body["results"][0]["id"]
    status, similar = search(client, "/search-similar", id=chosen, limit=PHOTOS)
    assert status == 200
    assert chosen not in [result["id"] for result in similar["results"]]
    assert len(similar["results"]) == PHOTOS - 1


def test_pages_follow_each_other_without_overlap(gallery):
    client, _ = gallery
    _, everything = search(client, text="car", limit=PHOTOS)
    _, first = search(client, text="car", limit=5)
    _, second = search(client, text="car", limit=5, offset=5)
    ids = [result["id"] for result in first["results"] + second["results"]]
    assert ids == [result["id"] for result in everything["results"][:10]]


def test_a_score_threshold_keeps_only_results_at_or_above_it(gallery):
    client, _ = gallery
    _, everything = search(client, text="car", limit=PHOTOS)
    middle = everything["results"][PHOTOS // 2]["score"]
    _, above = search(client, text="car", limit=PHOTOS, score_threshold=middle)
    assert above["results"] and all(result["score"] >= middle for result in above["results"])
    assert len(above["results"]) < PHOTOS


def test_a_qdrant_filter_narrows_the_results(gallery):
    client, _ = gallery
    two = ["front/car-0001.jpg", "front/car-0003.jpg"]
    _, body = search(client, text="car", limit=PHOTOS, filter={"must": [{"key": "image_id", "match": {"any": two}}]})
    assert sorted(result["payload"]["image_id"] for result in body["results"]) == two
    sizes = sorted(result["payload"]["file_size"] for result in search(client, text="car", limit=PHOTOS)[1]["results"])
    _, small = search(client, text="car", limit=PHOTOS, filter={"must": [{"key": "file_size",
                                                                         "range": {"lt": sizes[4]}}]})
    assert 0 < len(small["results"]) == sum(size < sizes[4] for size in sizes) < PHOTOS


def test_the_chinese_query_reaches_the_multilingual_encoder_when_one_is_loaded(tiny_multilingual_encoder, tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 3)
    client = indexed_app(tiny_multilingual_encoder, photos, tmp_path).test_client()
    assert search(client, text="红色的宝马SUV")[1]["encoder"] == "multilingual"
    assert search(client, text="red BMW SUV")[1]["encoder"] == "clip"
    assert search(client, text="red BMW SUV", encoder="multilingual")[1]["encoder"] == "multilingual"


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("body, param", [
    ({"text": "car", "limit": 0}, "limit"),
    ({"text": "car", "limit": 101}, "limit"),
    ({"text": "car", "limit": "20"}, "limit"),
    ({"text": "car", "offset": -1}, "offset"),
    ({"text": "car", "score_threshold": 1.5}, "score_threshold"),
    ({"text": "car", "score_threshold": True}, "score_threshold"),
    ({"text": ""}, "text"),
    ({"text": "car", "encoder": "klingon"}, "encoder"),
])
def test_bad_search_options_are_a_400_naming_the_option(gallery, body, param):
    status, answer = search(gallery[0], **body)
    assert status == 400 and answer["status"] == "error" and f"'{param}'" in answer["error"]


def test_a_filter_in_qdrants_shape_that_the_store_refuses_is_a_400_too(gallery):
    status, answer = search(gallery[0], text="car", filter={"must": [{"key": "", "match": {"value": "BMW"}}]})
    assert status == 400 and answer["code"] == "invalid_filter"


@pytest.mark.parametrize("bad_filter, where", [
    ({"muts": []}, "muts: "),
    ({"must": "brand"}, "must: "),
    ({"must": [{"key": "brand", "match": {"vaule": "BMW"}}]}, "must.0.match.value: "),
    ({"must": [{"key": "year", "range": {"gte": "twenty"}}]}, "must.0.range.gte: "),
    ({"should": [{"key": "brand", "mtch": {"value": "BMW"}}]}, "should.0.mtch: "),
    (["must"], "must be a JSON object"),
])
def test_a_malformed_filter_is_a_400_naming_where_with_an_example_of_a_good_one(gallery, bad_filter, where):
    status, answer = search(gallery[0], text="car", filter=bad_filter)
    assert status == 400 and answer["code"] == "invalid_filter"
    assert where in answer["error"] and "Condition" not in answer["error"], answer["error"]  # no pydantic labels
    assert '"match": {"value": "BMW"}' in answer["error"]


@pytest.mark.parametrize("point_id, status, code", [
    (987654, 404, "point_not_found"),
    ("7c0b5a8e-0000-4000-8000-000000000000", 404, "point_not_found"),
    ("not-an-id", 400, "bad_request"),
    ("²", 400, "bad_request"),  # a Unicode digit, not a number
    (2**64, 400, "bad_request"),
    (-3, 400, "bad_request"),
    (None, 400, "bad_request"),
])
def test_more_like_an_unknown_or_malformed_id_is_refused(gallery, point_id, status, code):
    answer_status, answer = search(gallery[0], "/search-similar", id=point_id)
    assert (answer_status, answer["code"]) == (status, code)


def test_a_bad_photo_is_a_400_invalid_image(gallery):
    status, answer = upload(gallery[0], b"not a jpeg at all")
    assert status == 400 and answer["code"] == "invalid_image"


def test_a_form_field_that_is_not_json_is_a_400(gallery):
    status, answer = upload(gallery[0], encode_image_bytes(photo_like(64, 48)), limit="twenty")
    assert status == 400 and "'limit'" in answer["error"]


def test_without_an_indexed_collection_every_search_is_a_clear_404(tiny_encoder):
    client = make_app(tiny_encoder).test_client()
    for path, body in [("/search", {"text": "car"}), ("/search-similar", {"id": 1})]:
        status, answer = search(client, path, **body)
        assert status == 404 and answer["code"] == "no_collection"
        assert "python -m clip_vectorize.gallery index" in answer["error"]
    status, answer = upload(client, encode_image_bytes(photo_like(64, 48)))
    assert status == 404 and answer["code"] == "no_collection"


def test_a_store_held_by_another_process_is_a_503_to_retry(tiny_encoder, tmp_path):
    holder = open_store(StoreConfig("car_images", path=str(tmp_path / "qdrant_data")))  # as the indexer would
    try:
        client = make_app(tiny_encoder, qdrant_path=str(tmp_path / "qdrant_data")).test_client()
        response = client.post("/search", json={"text": "car"})
        assert response.status_code == 503 and response.get_json()["code"] == "store_unavailable"
        assert response.headers["Retry-After"] and "in use by another process" in response.get_json()["error"]
    finally:
        holder.close()
    assert client.post("/search", json={"text": "car"}).get_json()["code"] == "no_collection"  # opened now


def test_search_needs_the_api_key_and_the_page_does_not(tiny_encoder, tmp_path):
    client = make_app(tiny_encoder, api_key=API_KEY).test_client()
    assert client.post("/search", json={"text": "car"}).status_code == 401
    assert client.post("/search", json={"text": "car"}, headers=BEARER).status_code == 404  # in, and nothing indexed
    for path in ("/gallery/status", "/gallery/thumbnails/1"):
        assert client.get(path).status_code == 401
    assert client.post("/gallery/reindex").status_code == 401
    page = client.get("/")
    assert page.status_code == 200 and 'data-needs-key="true"' in page.get_data(as_text=True)


# ---------------------------------------------------------------- the gallery in the service


def test_the_status_shows_points_model_folder_and_the_last_run(gallery, tiny_encoder):
    client, photos = gallery
    body = client.get("/gallery/status").get_json()
    assert body["points"] == PHOTOS and body["exists"] is True and body["other_models"] == []
    assert body["gallery_dir"] == str(photos.resolve()) and body["model"] == "tiny-clip"
    assert body["indexing"]["state"] == "done" and body["indexing"]["indexed"] == PHOTOS


def test_reindex_picks_up_new_and_deleted_photos(tiny_encoder, tmp_path):
    photos = tmp_path / "photos"
    paths = write_photos(photos, 4)
    client = indexed_app(tiny_encoder, photos, tmp_path).test_client()
    paths[0].unlink()
    write_photos(photos, 2, first_seed=100)
    response = client.post("/gallery/reindex")
    assert response.status_code == 202 and response.get_json()["indexing"]["state"] == "running"
    run = service_state(client.application).gallery.indexing.wait(60)
    assert (run.state, run.indexed, run.deleted, run.unchanged) == ("done", 2, 1, 3)
    assert client.get("/gallery/status").get_json()["points"] == 5


class GatedEncoder:
    """The tiny encoder, holding every image until the test opens the gate: a run that stays under way."""

    def __init__(self, encoder) -> None:
        self.encoder, self.gate, self.reached = encoder, threading.Event(), threading.Event()

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode_images(self, images):
        self.reached.set()
        self.gate.wait(30)
        return self.encoder.encode_images(images)


def test_a_second_reindex_while_one_runs_is_a_409(tiny_encoder, tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 2)
    gated = GatedEncoder(tiny_encoder)
    client = make_app(gated, gallery_dir=str(photos), qdrant_path=str(tmp_path / "q")).test_client()
    try:
        assert client.post("/gallery/reindex").status_code == 202
        second = client.post("/gallery/reindex")
        assert second.status_code == 409 and second.get_json()["code"] == "index_running"
        assert client.get("/gallery/status").get_json()["indexing"]["state"] == "running"
    finally:
        gated.gate.set()
    assert service_state(client.application).gallery.indexing.wait(60).state == "done"


def test_a_run_stopped_with_the_service_keeps_what_it_encoded_and_the_next_start_goes_on(tiny_encoder, tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 10)
    gated = GatedEncoder(tiny_encoder)
    gallery = service_state(make_app(gated, gallery_dir=str(photos), qdrant_path=str(tmp_path / "qdrant_data"))).gallery
    gallery.reindex()
    assert gated.reached.wait(30)  # the first photo is in the model; a few more are read ahead
    gallery.indexing.stop(timeout=0)
    gated.gate.set()
    stopped = gallery.indexing.wait(60)
    assert stopped.state == "stopped" and 0 < stopped.indexed < 10, stopped
    assert gallery.store().count() == stopped.indexed  # everything encoded was written
    gallery.store().close()

    restarted = indexed_app(tiny_encoder, photos, tmp_path)  # the same store
    run = service_state(restarted).gallery.indexing.status
    assert (run.unchanged, run.indexed) == (stopped.indexed, 10 - stopped.indexed)


def test_a_stop_while_the_model_is_still_loading_ends_the_run_at_once(tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 3)
    gallery = service_state(make_app(FakeEncoder(ready=False), gallery_dir=str(photos))).gallery
    gallery.reindex()
    # The reading thread exists once the first photo is taken: it waits for the model from then on.
    assert eventually(lambda: any(thread.name.startswith("index") for thread in threading.enumerate()))
    gallery.stop_indexing()
    assert gallery.indexing.status.state == "stopped" and gallery.indexing.status.indexed == 0


def test_once_the_service_is_stopping_no_run_starts(tiny_encoder, tmp_path):
    photos = tmp_path / "photos"
    write_photos(photos, 2)
    gallery = service_state(make_app(tiny_encoder, gallery_dir=str(photos))).gallery
    gallery.stop_indexing()  # before the start-up thread got the store, say
    gallery.reindex()
    assert gallery.indexing.status.state == "idle" and gallery.store().count() == 0


def test_searches_while_the_service_indexes_are_answered(tiny_encoder, tmp_path):
    """Request threads and the index thread share the embedded store: every search answers, none fails."""
    photos = tmp_path / "photos"
    write_photos(photos, 24)
    app = make_app(tiny_encoder, gallery_dir=str(photos), qdrant_path=str(tmp_path / "q"))
    client, gallery = app.test_client(), service_state(app).gallery
    gallery.reindex()
    statuses = set()
    while gallery.indexing.status.state == "running":
        response = client.post("/search", json={"text": "car", "limit": 5})
        statuses.add((response.status_code, response.get_json().get("code")))
    assert statuses <= {(200, None), (404, "no_collection")}, statuses
    assert gallery.indexing.wait(60).state == "done"
    assert len(search(client, text="car", limit=100)[1]["results"]) == 24


def test_a_store_held_at_start_up_is_indexed_once_it_is_free(tiny_encoder, tmp_path, monkeypatch):
    import clip_vectorize_service

    monkeypatch.setattr(clip_vectorize_service, "STORE_RETRY_S", 0.05)
    photos = tmp_path / "photos"
    write_photos(photos, 2)
    holder = open_store(StoreConfig("car_images", path=str(tmp_path / "q")))  # the indexer command, say
    app = make_app(tiny_encoder, gallery_dir=str(photos), qdrant_path=str(tmp_path / "q"))
    state = service_state(app)
    starting = threading.Thread(target=clip_vectorize_service._index_gallery, args=(state,))
    starting.start()
    holder.close()
    starting.join(30)
    assert not starting.is_alive() and state.gallery.indexing.wait(60).state == "done"


def test_reindex_without_a_gallery_folder_is_a_404_saying_how(tiny_encoder):
    response = make_app(tiny_encoder).test_client().post("/gallery/reindex")
    assert response.status_code == 404 and "CLIP_GALLERY_DIR" in response.get_json()["error"]


def test_an_unreadable_folder_fails_the_run_in_the_status_and_the_service_serves_on(tiny_encoder, tmp_path):
    app = make_app(tiny_encoder, gallery_dir=str(tmp_path / "missing"), qdrant_path=str(tmp_path / "q"))
    client = app.test_client()
    client.post("/gallery/reindex")
    run = service_state(client.application).gallery.indexing.wait(30)
    assert run.state == "failed" and "does not exist" in run.error
    assert client.get("/gallery/status").get_json()["indexing"]["error"] == run.error
    assert client.post("/encode-text", json={"text": "car"}).status_code == 200


# ---------------------------------------------------------------- thumbnails


def test_a_thumbnail_is_a_small_jpeg_made_once_and_cached(gallery, tmp_path):
    client, _ = gallery
    _, body = search(client, text="car", limit=1)
    point = body["results"][0]["id"]
    first = client.get(f"/gallery/thumbnails/{point}")
    assert first.status_code == 200 and first.mimetype == "image/jpeg"
    image = Image.open(io.BytesIO(first.data))
    assert image.format == "JPEG" and max(image.size) <= 320
    again = client.get(f"/gallery/thumbnails/{point}", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304
    assert first.cache_control.private and not first.cache_control.public  # it was behind the API key


def test_a_point_whose_path_leaves_the_gallery_gets_no_thumbnail(gallery, tiny_encoder):
    client, photos = gallery
    store = service_state(client.application).gallery.store()
    secret = photos.parent / "secret.jpg"  # a readable image, one step outside the gallery folder
    secret.write_bytes(encode_image_bytes(photo_like(64, 48)))
    link = photos / "front" / "link.jpg"
    link.symlink_to(secret)
    forged = {101: str(secret), 102: f"{photos}/../{secret.name}", 103: "../secret.jpg", 104: "/etc/passwd",
              105: str(link), 106: "../../../../etc/passwd"}
    vector = [0.1] * tiny_encoder.dimension
    store.upsert([NewPoint(point, vector, {"path": path}) for point, path in forged.items()])
    try:
        for point in forged:
            response = client.get(f"/gallery/thumbnails/{point}")
            assert response.status_code == 404 and response.get_json()["code"] == "no_thumbnail", point
    finally:
        store.delete(list(forged))
        link.unlink()


def swap_file_for_link(source: Path, outside: Path) -> None:
    source.unlink()
    source.symlink_to(outside / source.name)


def swap_folder_for_link(source: Path, outside: Path) -> None:
    source.parent.rename(source.parent.with_name("moved"))
    source.parent.symlink_to(outside, target_is_directory=True)


@pytest.mark.parametrize("swap", [swap_file_for_link, swap_folder_for_link])
def test_a_file_or_folder_swapped_for_a_symlink_after_the_check_is_not_read(tmp_path, swap):
    photos, outside = tmp_path / "photos", tmp_path / "outside"
    photo = write_photos(photos, 1)[0]
    outside.mkdir()
    (outside / photo.name).write_bytes(encode_image_bytes(photo_like(64, 48)))  # a readable image, not the gallery's
    thumbnails = Thumbnails(photos, tmp_path / "thumbnails", 10**7)
    checked = thumbnails.source_file

    def check_then_swap(point):  # someone with write access to the folder, between the check and the read
        source = checked(point)
        swap(source, outside)
        return source

    thumbnails.source_file = check_then_swap
    with pytest.raises(ThumbnailUnavailableError):
        thumbnails.for_point(IndexedPoint(1, {"path": str(photo.relative_to(photos))}))


@pytest.mark.parametrize("path", ["/gallery/thumbnails/..%2F..%2Fetc%2Fpasswd", "/gallery/thumbnails/abc",
                                  "/gallery/thumbnails/%C2%B2",
                                  "/gallery/thumbnails/%2Fetc%2Fpasswd"])
def test_a_thumbnail_path_that_is_not_a_point_id_is_a_json_404(gallery, path):
    response = gallery[0].get(path)
    assert response.status_code == 404 and response.is_json


def test_thumbnails_need_a_gallery_folder(tiny_encoder):
    response = make_app(tiny_encoder).test_client().get("/gallery/thumbnails/1")
    assert response.status_code == 404 and response.get_json()["code"] == "no_gallery_folder"


# ---------------------------------------------------------------- metrics and the page


def test_qdrant_query_time_and_the_point_count_are_metrics(gallery):
    client, _ = gallery
    search(client, text="car")
    text = client.get("/metrics").get_data(as_text=True)
    assert re.search(r"^clip_qdrant_query_seconds_count [1-9]", text, re.MULTILINE)
    assert re.search(rf"^clip_gallery_points {PHOTOS}\.0$", text, re.MULTILINE)


def test_a_scrape_never_opens_the_store(tiny_encoder):
    client = make_app(tiny_encoder).test_client()
    assert "clip_gallery_points" not in client.get("/metrics").get_data(as_text=True)
    assert service_state(client.application).gallery.points_if_open() is None


def test_the_page_is_plain_html_with_its_own_script_and_styles_and_nothing_from_elsewhere(gallery):
    client, _ = gallery
    html = client.get("/").get_data(as_text=True)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(assets) == ["/assets/search.css", "/assets/search.js"]
    for asset in assets:
        response = client.get(asset)
        assert response.status_code == 200 and "http://" not in response.get_data(as_text=True).replace(
            "http://localhost", "")
