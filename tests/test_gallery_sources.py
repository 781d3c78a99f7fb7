"""What SOURCE names: a folder walked recursively, or a CSV / JSONL manifest; ids that match the Node backend's."""

from __future__ import annotations

import json
import uuid

import pytest

from clip_vectorize.gallery.errors import SourceError
from clip_vectorize.gallery.sources import POINT_NAMESPACE, list_source


def test_a_folder_lists_every_image_format_recursively_and_skips_hidden_and_other_files(tmp_path):
    for name in ("a.jpg", "b.JPEG", "c.png", "d.webp", "e.gif", "f.heic", "g.bmp", "h.tiff", "sub/deeper/i.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for name in ("notes.txt", ".hidden.jpg", ".thumbs/j.jpg"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")

    listing = list_source(tmp_path)

    assert [item.image_id for item in listing.items] == [
        "a.jpg", "b.JPEG", "c.png", "d.webp", "e.gif", "f.heic", "g.bmp", "h.tiff", "sub/deeper/i.jpg"]
    assert listing.source == str(tmp_path.resolve())
    assert all(item.path.is_absolute() for item in listing.items)


def test_folder_items_get_a_deterministic_uuid5_of_their_path_distinct_across_folders(tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jpg").write_bytes(b"x")
    first, again = list_source(tmp_path / "a").items[0], list_source(tmp_path / "a").items[0]
    other = list_source(tmp_path / "b").items[0]
    assert first.point_id == again.point_id == str(uuid.uuid5(POINT_NAMESPACE, str(tmp_path.resolve() / "a" / "x.jpg")))
    assert first.image_id == other.image_id == "x.jpg" and first.point_id != other.point_id


def test_a_csv_manifests_integer_image_id_is_the_point_id_and_extra_columns_come_along(tmp_path):
    (tmp_path / "photos").mkdir()
    manifest = tmp_path / "gallery.csv"
    manifest.write_text("image_id,path,brand,year\n1042,photos/a.jpg,BMW,2021\n7,/abs/b.jpg,比亚迪,\n",
                        encoding="utf-8")

    first, second = list_source(manifest).items

    assert first.point_id == 1042 and first.image_id == 1042
    assert first.path == tmp_path / "photos" / "a.jpg"  # relative to the manifest, not to the working directory
    assert dict(first.extra) == {"brand": "BMW", "year": "2021"}
    assert second.point_id == 7 and str(second.path) == "/abs/b.jpg" and dict(second.extra) == {"brand": "比亚迪"}


def test_a_jsonl_manifest_takes_urls_string_ids_and_typed_extra_fields(tmp_path):
    manifest = tmp_path / "gallery.jsonl"
    rows = [{"image_id": 5, "url": "https://img.example.com/5.jpg", "tags": ["suv"], "price": 30.5},
            {"image_id": "sku-9", "url": "https://img.example.com/9.jpg"}]
    manifest.write_text("\n".join(json.dumps(row) for row in rows) + "\n\n")

    first, second = list_source(manifest).items

    assert first.point_id == 5 and first.url == "https://img.example.com/5.jpg"
    assert dict(first.extra) == {"tags": ["suv"], "price": 30.5}
    assert second.image_id == "sku-9" and second.point_id == str(uuid.uuid5(POINT_NAMESPACE, "sku-9"))


def test_bad_manifest_rows_are_reported_and_the_good_ones_kept(tmp_path):
    manifest = tmp_path / "gallery.jsonl"
    lines = [json.dumps({"image_id": 1, "path": "a.jpg"}),
             json.dumps({"image_id": 2}),  # neither path nor url
             json.dumps({"image_id": 3, "path": "c.jpg", "url": "https://x/c.jpg"}),  # both
             json.dumps({"image_id": 1, "path": "again.jpg"}),  # duplicate id
             json.dumps({"image_id": 2.5, "path": "d.jpg"}),  # not an integer
             json.dumps({"image_id": 2**64, "path": "e.jpg"}),  # beyond Qdrant's ids
             json.dumps({"image_id": 4, "path": "f.jpg", "source": "web"}),  # one of the indexer's own fields
             "not json"]
    manifest.write_text("\n".join(lines))

    listing = list_source(manifest)

    assert [item.point_id for item in listing.items] == [1]
    assert [skip.reason for skip in listing.skipped] == ["bad manifest row", "bad manifest row", "duplicate image_id",
                                                        "bad manifest row", "bad manifest row", "bad manifest row",
                                                        "bad manifest row"]
    assert "exactly one of 'path' and 'url'" in listing.skipped[0].detail
    assert "source are the indexer's own payload fields" in listing.skipped[5].detail


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing", None, "does not exist"),
    ("gallery.csv", "id,file\n1,a.jpg\n", "needs a header row with a 'path' or 'url' column"),
    ("gallery.txt", "a.jpg\n", "neither a folder nor a manifest"),
])
def test_a_source_that_cannot_be_read_is_a_clear_error(tmp_path, name, content, message):
    if content is not None:
        (tmp_path / name).write_text(content)
    with pytest.raises(SourceError, match=message):
        list_source(tmp_path / name)
