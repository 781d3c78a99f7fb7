"""The search page at `/`: one HTML template and its script and style sheet, served beside this module.

Plain HTML, CSS and JavaScript, no build step and nothing from a CDN (the service may run offline). The page calls
the same JSON endpoints as any client; with CLIP_SERVICE_API_KEY set it asks for the key once and keeps it in the
browser's sessionStorage, so the page itself is open and every call it makes carries the key.
"""

from __future__ import annotations

from flask import Blueprint, render_template

from clip_vectorize.web.state import service_state

blueprint = Blueprint("page", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/assets")


@blueprint.get("/")
def search_page() -> str:
    return render_template("search.html", needs_key=bool(service_state().settings.api_key))
