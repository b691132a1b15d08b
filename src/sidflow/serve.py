"""A local web page for one image: drop or pick an image, see every loaded detector's
verdict and p_fake, the student's Grad-CAM overlay and the explainer's reason.

    sidflow serve --model results/demo/models/explainer --detector results/demo/models/student-kd
    # -> http://127.0.0.1:8765/

Flask (a small, well-kept WSGI framework with a test client; one user on one machine needs
no async server) on 127.0.0.1 by default. An upload is written only inside a temporary
folder that is removed after the answer; a file that is not an image gets a 400 page
naming why, one over ``--max-upload-mb`` a 413 page. The pages are self-contained (inline
CSS and script, pictures as data URIs) and say so in their Content-Security-Policy, so the
browser fetches nothing from anywhere else.
"""

from __future__ import annotations

import html
import tempfile
from pathlib import Path

from sidflow.explain import ExplainSession, page_html

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "form-action 'self'; base-uri 'none'; frame-ancestors 'none'")  # fmt: skip

FORM = """<form id="upload" method="post" action="/explain" enctype="multipart/form-data">
<div id="drop" style="border:2px dashed #888;padding:2em;text-align:center">
Drop an image here, or <input id="file" type="file" name="image" accept="image/*" required>
<button id="submit" type="submit">Explain</button></div></form>
<script>
const drop = document.getElementById("drop"), input = document.getElementById("file");
drop.addEventListener("dragover", (e) => { e.preventDefault(); });
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  if (e.dataTransfer.files.length) { input.files = e.dataTransfer.files;
    document.getElementById("upload").submit(); }
});
</script>"""


def create_app(session: ExplainSession, max_upload_mb: float = 20.0):
    """The Flask app serving ``session`` (see the module docstring)."""
    from flask import Flask, Response, request

    app = Flask("sidflow")
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 2**20)
    title = "sidflow: is this image real or generated?"

    def page(body: str = "", results=(), status: int = 200) -> Response:
        resp = Response(
            page_html(list(results), title, FORM + body), status=status, mimetype="text/html"
        )
        resp.headers["Content-Security-Policy"] = CSP
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    def error(message: str, status: int) -> Response:
        return page(f'<p id="error" class="quarantined">{html.escape(message)}</p>', status=status)

    @app.get("/")
    def index():
        return page()

    @app.post("/explain")
    def explain():
        upload = request.files.get("image")
        if upload is None or not upload.filename:
            return error("no file was uploaded: pick an image", 400)
        name = Path(upload.filename).name or "upload"  # shown only, never used as a path
        with tempfile.TemporaryDirectory(prefix="sidflow-upload-") as tmp:
            path = Path(tmp) / "upload"
            upload.save(path)
            result = session.explain_path(path, max_bytes=app.config["MAX_CONTENT_LENGTH"])
        result["path"] = name
        if result["verdict"] == "quarantined":
            reason = result["reason"].replace(str(path), name)
            return error(f"{name} is not an image sidflow can read: {reason}", 400)
        return page(results=[result])

    @app.errorhandler(413)
    def too_large(_err):
        return error(f"the upload is larger than {max_upload_mb:g} MB (--max-upload-mb)", 413)

    return app


def serve(session: ExplainSession, host: str = "127.0.0.1", port: int = 8765,
          max_upload_mb: float = 20.0) -> None:  # fmt: skip
    """Serve until interrupted (werkzeug's threaded server; local use only)."""
    from werkzeug.serving import run_simple

    run_simple(host, port, create_app(session, max_upload_mb), threaded=False)
