"""Access to the review app: login on every route, CSRF on every form, admin routes for admins
only, images only from inside their folder, captions shown as text, cookie and header settings."""

from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi", reason="the review extra is not installed: pip install -e '.[review]'")

from fastapi.routing import APIRoute  # noqa: E402
from review_helpers import Client, ThreadServer, add_accounts, csrf_of, item_of  # noqa: E402

from edgefusion.data.review_db import open_database  # noqa: E402
from edgefusion.data.review_queue import get_task, next_item  # noqa: E402
from edgefusion.review.app import create_app  # noqa: E402
from edgefusion.review.tasks import open_curate_task  # noqa: E402

HOSTILE_CAPTION = '<script>alert("caption")</script><b>bold</b> & "quotes"'
SECRET = "TOP-SECRET-OUTSIDE-THE-DATASET"
PATH_VALUES = {"task_id": "1", "item_id": "s00", "side": "main"}


@pytest.fixture(scope="module")
def site(tmp_path_factory, toy_set):
    """A served database with an admin, reviewers and a curation task on a copy of the toy set."""
    root = tmp_path_factory.mktemp("site")
    dataset = root / "synt"
    shutil.copytree(toy_set, dataset)
    (root / "secret.png").write_text(SECRET)
    url = str(root / "review.sqlite")
    db = open_database(url)
    add_accounts(db, {"ada": "admin", "rev": "reviewer", "rev2": "reviewer", "rev3": "reviewer"})
    open_curate_task(db, dataset)
    app = create_app(url)
    with ThreadServer(app) as server:
        yield {"app": app, "server": server, "db": db, "dataset": dataset, "root": root}
    db.close()


def _routes(app):
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path != "/login":
            for method in route.methods:
                yield method, route.path.format(**{k: PATH_VALUES[k] for k in route.param_convertors})


def test_every_route_without_login_is_refused(site):
    client = Client(site["server"].url)
    routes = list(_routes(site["app"]))
    assert len(routes) >= 10
    for method, path in routes:
        reply = client.request(method, path, form={} if method == "POST" else None)
        if method == "GET":
            assert reply.status == 303 and reply.location.startswith("/login?next="), (method, path)
        else:
            assert reply.status == 401, (method, path)
        assert "bold" not in reply.body and "PNG" not in reply.body
    assert client.get("/static/review.css").status == 200  # only the style sheet and script are public


def test_every_form_needs_its_csrf_token(site):
    client = Client(site["server"].url)
    client.login("ada")
    for method, path in _routes(site["app"]):
        if method != "POST":
            continue
        form = {"item": "s00", "choice": "keep", "dataset": str(site["dataset"]), "out": "/tmp/x"}
        assert client.post(path, form).status == 403, path  # no token
        assert client.post(path, {**form, "csrf": "forged"}).status == 403, path
    token = csrf_of(client.get("/").body)
    other_site = {"Origin": "http://evil.example"}
    assert client.post("/logout", {"csrf": token}, headers=other_site).status == 403
    assert client.get("/admin").status == 200  # still logged in: nothing above took effect
    fresh = Client(site["server"].url)
    fresh.get("/login")
    reply = fresh.post("/login", {"name": "ada", "password": "correct horse battery", "csrf": "forged"})
    assert reply.status == 403 and "edgefusion_review_session" not in fresh.cookies


def test_a_reviewer_cannot_reach_admin_routes(site):
    client = Client(site["server"].url)
    client.login("rev")
    token = csrf_of(client.get("/").body)
    assert "/admin" not in client.get("/").body
    for method, path in _routes(site["app"]):
        if not path.startswith("/admin"):
            continue
        out = str(site["root"] / "x")
        form = {"csrf": token, "dataset": str(site["dataset"]), "name": "sneaky", "out": out}
        reply = client.request(method, path, form=form if method == "POST" else None)
        assert reply.status == 403, (method, path)
    assert not site["db"].query("SELECT id FROM tasks WHERE name = 'sneaky'")
    assert not (site["root"] / "x").exists()


def test_images_are_served_only_from_inside_the_dataset(site):
    db, dataset = site["db"], site["dataset"]
    client = Client(site["server"].url)
    client.login("rev2")
    task = get_task(db, 1)
    page = client.get("/tasks/1")
    item = item_of(page.body)
    assert next_item(db, task, "rev2")["id"] == item
    good = client.get(f"/tasks/1/items/{item}/image/main")
    assert good.status == 200 and good.headers["content-type"] == "image/png"
    (dataset / "inner").mkdir(exist_ok=True)
    (dataset / "inner" / "out.png").symlink_to(site["root"] / "secret.png")
    outside = site["root"] / "secret.png"
    for name in ["../secret.png", str(outside), "inner/out.png", "inner/../../secret.png", "metadata.jsonl"]:
        db.execute("UPDATE items SET file = ? WHERE task_id = 1 AND id = ?", (name, item))
        reply = client.get(f"/tasks/1/items/{item}/image/main")
        assert reply.status == 404 and SECRET not in reply.body, name
    held = db.query_one("SELECT file FROM items WHERE id = 's09'")["file"]
    db.execute("UPDATE items SET file = ? WHERE task_id = 1 AND id = ?", (held, item))
    (dataset / held).unlink()  # a file swapped for a symlink out after the task opened
    (dataset / held).symlink_to(outside)
    reply = client.get(f"/tasks/1/items/{item}/image/main")
    assert reply.status == 404 and SECRET not in reply.body
    # Not handed to rev2, no such side, no such item.
    for path in ["s08/image/main", f"{item}/image/left", "..%2F..%2Fx/image/main"]:
        assert client.get(f"/tasks/1/items/{path}").status == 404


def test_html_in_a_caption_is_shown_as_text(site):
    client = Client(site["server"].url)
    client.login("rev3")
    item = item_of(client.get("/tasks/1").body)
    site["db"].execute("UPDATE items SET text = ? WHERE task_id = 1 AND id = ?", (HOSTILE_CAPTION, item))
    page = client.get("/tasks/1")
    assert "&lt;script&gt;alert(&#34;caption&#34;)&lt;/script&gt;&lt;b&gt;bold&lt;/b&gt; &amp;" in page.body
    assert "<script>alert" not in page.body and "<b>bold" not in page.body
    assert "script-src 'self'" in page.headers["content-security-policy"]


def test_cookies_headers_wrong_passwords_and_logout(site):
    client = Client(site["server"].url)
    wrong = Client(site["server"].url)
    wrong.get("/login")
    page = wrong.get("/login")
    reply = wrong.post("/login", {"name": "ada", "password": "wrong password", "csrf": csrf_of(page.body)})
    assert reply.status == 401 and "wrong name or password" in reply.body
    reply = wrong.post("/login", {"name": "nobody", "password": "wrong password", "csrf": csrf_of(page.body)})
    assert reply.status == 401
    login = client.login("ada")
    cookie = next(c for c in login.cookies if c.startswith("edgefusion_review_session="))
    assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
    page = client.get("/admin")
    for header in ("content-security-policy", "x-frame-options", "x-content-type-options", "referrer-policy"):
        assert header in page.headers
    assert page.headers["cache-control"] == "no-store"
    stolen = dict(client.cookies)
    assert client.post("/logout", {"csrf": csrf_of(page.body)}).status == 303
    replay = Client(site["server"].url)
    replay.cookies = stolen
    assert replay.get("/admin").status == 303  # the session ended on the server, not just in the browser
    assert client.get("/login?next=//evil.example/x").body.count('value="/"') == 1  # no open redirect


def test_the_app_runs_on_sqlite_and_postgresql(db_url, toy_set, generation_folders):
    db = open_database(db_url)
    add_accounts(db, {"ada": "admin"})
    db.close()
    with ThreadServer(create_app(db_url)) as server:
        client = Client(server.url)
        client.login("ada")
        token = csrf_of(client.get("/admin").body)
        opened = client.post("/admin/tasks/curate", {"csrf": token, "dataset": str(toy_set), "overlap": "1"})
        assert "10 samples added" in opened.body
        folders = "\n".join(str(folder) for folder in generation_folders[:2])
        opened = client.post("/admin/tasks/ab", {"csrf": token, "folders": folders})
        assert "A/B task &#39;ab&#39; open" in opened.body
        refused = client.post("/admin/tasks/ab", {"csrf": token, "folders": str(generation_folders[0])})
        assert refused.status == 400 and "at least two" in refused.body
        page = client.get("/tasks/1")
        item = item_of(page.body)
        assert client.get(f"/tasks/1/items/{item}/image/main").body.startswith("\ufffdPNG")
        reply = client.post("/tasks/1/answer", {"csrf": csrf_of(page.body), "item": item, "choice": "keep"})
        assert reply.status == 303 and reply.location == "/tasks/1"
        page = client.get("/tasks/2")
        item = item_of(page.body)
        image = client.get(f"/tasks/2/items/{item}/image/left")
        assert b"toy:" in (generation_folders[0] / "00000.png").read_bytes()  # generate names the model
        assert image.status == 200 and "toy:" not in image.body  # the served image does not
        assert client.post("/tasks/2/answer", {"csrf": token, "item": item, "choice": "left"}).status == 303
        report = client.get("/admin/tasks/2/report")
        assert report.status == 200 and "toy:teacher" in report.body
    db = open_database(db_url)
    assert db.scalar("SELECT COUNT(*) AS n FROM answers") == 2
    db.close()
