"""``sidflow explain`` and ``sidflow serve``: verdicts, reasons and Grad-CAM per image, the
self-contained page, the web app's refusals, and the page in a real headless Chromium."""

from __future__ import annotations

import io
import json
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from sidflow.cli import main


@pytest.fixture
def pictures(tiny_data, tmp_path):
    """Two real, two fake images and a file that is not an image."""
    out = tmp_path / "in"
    out.mkdir()
    for gen in ("real", "fake"):
        for p in sorted((tiny_data["raw"] / gen).iterdir())[:2]:
            shutil.copy(p, out / f"{gen}-{p.name}")
    (out / "notes.jpg").write_text("not an image")
    return out


@pytest.fixture(scope="module")
def session(tiny_explainer, tiny_student):
    from sidflow.explain import ExplainSession

    return ExplainSession(tiny_explainer, [tiny_student], "cpu", max_new_tokens=6)


def png_bytes(seed: int, size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(
        np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.models
def test_explain_cli_writes_json_lines_and_a_page(
    tiny_explainer, tiny_student, pictures, tmp_path, capsys
):
    out, page = tmp_path / "why.jsonl", tmp_path / "why.html"
    rc = main(["explain", "--model", str(tiny_explainer), "--detector", str(tiny_student), "--device", "cpu",
               "--max-new-tokens", "5", str(pictures), "--output", str(out), "--html", str(page)])  # fmt: skip
    assert rc == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5  # every entry is a row
    bad = [r for r in rows if r["verdict"] == "quarantined"]
    assert [r["path"].rsplit("/", 1)[-1] for r in bad] == ["notes.jpg"] and bad[0]["reason"]
    good = [r for r in rows if r["verdict"] != "quarantined"]
    for r in good:
        assert r["verdict"] == ("fake" if r["p_fake"] > 0.5 else "real") and isinstance(
            r["explanation"], str
        )
        (d,) = r["detectors"]
        assert d["model"] == str(tiny_student) and 0 <= d["p_fake"] <= 1 and "gradcam_png" not in d
        assert d["verdict"] == ("fake" if d["p_fake"] >= d["threshold"] else "real")
    html = page.read_text()
    assert html.count('alt="Grad-CAM"') == 4 and html.count('alt="input"') == 4
    assert 'id="verdict-4" class="quarantined"' in html or "quarantined</span>" in html
    assert "http://" not in html and "https://" not in html  # self-contained
    err = capsys.readouterr().err
    n_fake = sum(r["verdict"] == "fake" for r in rows)
    assert f"# 5 files: {n_fake} fake, {4 - n_fake} real, 1 quarantined" in err
    assert main(["explain", "--model", str(tiny_explainer), str(tmp_path / "missing.png")]) == 2


@pytest.mark.models
def test_web_app_explains_an_upload_and_refuses_bad_ones(session, tmp_path, monkeypatch):
    import tempfile

    from sidflow.serve import CSP, create_app

    uploads = tmp_path / "tmp"
    uploads.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(uploads))  # where upload folders go
    client = create_app(session, max_upload_mb=0.05).test_client()
    home = client.get("/")
    assert home.status_code == 200 and b'type="file"' in home.data
    assert home.headers["Content-Security-Policy"] == CSP
    ok = client.post("/explain", data={"image": (io.BytesIO(png_bytes(1)), "../../etc/x.png")},
                     content_type="multipart/form-data")  # fmt: skip
    text = ok.data.decode()
    assert ok.status_code == 200 and 'id="verdict-0"' in text and 'id="explanation-0"' in text
    assert "x.png" in text and "etc/x.png" not in text  # shown by its base name only
    assert 'alt="Grad-CAM"' in text
    bad = client.post("/explain", data={"image": (io.BytesIO(b"plain text"), "a.png")},
                      content_type="multipart/form-data")  # fmt: skip
    assert bad.status_code == 400 and b"a.png is not an image sidflow can read" in bad.data
    big = client.post("/explain", data={"image": (io.BytesIO(png_bytes(2, 400)), "big.png")},
                      content_type="multipart/form-data")  # fmt: skip
    assert big.status_code == 413 and b"larger than 0.05 MB" in big.data
    none = client.post("/explain", data={}, content_type="multipart/form-data")
    assert none.status_code == 400 and b"no file was uploaded" in none.data
    assert list(uploads.iterdir()) == []  # every upload folder was removed


@pytest.mark.browser
def test_upload_page_in_a_real_browser(session, pictures, tmp_path):
    """Headless Chromium (Debian's chromium + chromium-driver, driven by selenium): pick an
    image, submit, read the verdict from the DOM; no console errors, no request leaves
    127.0.0.1."""
    import os

    pytest.importorskip("selenium", reason="pip install -e '.[dev]' (selenium)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait
    from werkzeug.serving import make_server

    from sidflow.serve import create_app

    browser, driver_exe = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver_exe):
        if os.environ.get("CI"):
            pytest.fail("chromium/chromedriver missing; .ci/system-packages.sh installs them")
        pytest.skip("apt-get install chromium chromium-driver")
    server = make_server("127.0.0.1", 0, create_app(session))
    base = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'p'}",
    ):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    drv = webdriver.Chrome(options=opts, service=Service(driver_exe))
    try:
        drv.get(base + "/")
        image = next(p for p in sorted(pictures.iterdir()) if p.name.startswith("fake"))
        drv.find_element(By.ID, "file").send_keys(str(image))
        drv.find_element(By.ID, "submit").click()
        verdict = WebDriverWait(drv, 60).until(ec.presence_of_element_located((By.ID, "verdict-0")))
        assert verdict.text in ("real", "fake")
        p_fake = float(drv.find_element(By.ID, "p-fake-0").text)
        assert verdict.text == ("fake" if p_fake > 0.5 else "real")
        assert drv.find_element(By.ID, "verdict-0-0").text in ("real", "fake")  # the student
        assert image.name in drv.page_source
        errors = [e for e in drv.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        urls = [json.loads(e["message"])["message"].get("params", {}).get("request", {}).get("url", "")
                for e in drv.get_log("performance")]  # fmt: skip
        net = [
            u for u in urls if u.split(":", 1)[0] in ("http", "https", "ws", "wss")
        ]  # not chrome://
        assert net and all(u.startswith(base + "/") for u in net), net
    finally:
        drv.quit()
        server.shutdown()
