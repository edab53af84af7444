"""The review web app: server-rendered pages (FastAPI, Jinja2), a little JavaScript for keys.

Everything except the login page and the static CSS / JS needs a session; everything under
``/admin`` needs the admin role. Every form posts the session's CSRF token (the login form a
per-visit cookie's), checked before the request is handled, and a post whose ``Origin`` is another
site is refused. Answers are committed before the redirect that shows the next item, so a page a
reviewer sees never runs ahead of the database. Images are read only through the item they belong
to, checked to stay inside their dataset or generation folder on every request, and only by a
reviewer the item was handed to; A/B images lose the settings ``edgefusion generate`` wrote into
them (the model's name among them), so nothing in a page or an image unblinds a vote. Pages send
a strict Content-Security-Policy (no inline script, nothing from other origins) and Jinja2
escapes every caption and prompt.

Handlers that touch the database are plain functions, which the server runs on its thread pool;
each takes its own thread's connection (:class:`ThreadDatabases`), so no connection is ever used
by two threads at once.
"""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlsplit

from fastapi import Depends, FastAPI, Form, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgefusion.data.dataset import IMAGE_EXTENSIONS
from edgefusion.data.images import ImageRejected, decode_image, encode_png
from edgefusion.data.review_db import ThreadDatabases, describe, open_database
from edgefusion.data.review_queue import (
    AB,
    CURATE,
    DEFAULT_LEASE,
    PENDING_POLICIES,
    get_task,
    holds,
    list_tasks,
    next_item,
    progress,
    record_answer,
    undo_last,
)
from edgefusion.errors import EdgefusionError
from edgefusion.review import auth
from edgefusion.review.report import TIES, task_report
from edgefusion.review.tasks import export_task, image_path, open_ab_task, open_curate_task

HERE = Path(__file__).parent
SESSION_COOKIE = "edgefusion_review_session"
LOGIN_CSRF_COOKIE = "edgefusion_review_login"
#: What a reviewer may give as the reason for dropping an image.
DROP_REASONS = ("artifact", "misaligned", "other")
_MEDIA_TYPES = {
    **dict.fromkeys((".jpg", ".jpeg"), "image/jpeg"),
    **dict.fromkeys((".tif", ".tiff"), "image/tiff"),
    **{f".{kind}": f"image/{kind}" for kind in ("png", "webp", "bmp", "gif")},
}
_SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
}


class NotLoggedIn(Exception):
    """A request without a live session."""


class SecurityHeaders:
    """Adds the security headers to every response, and ``no-store`` to all but static files (pages
    and images of a review must not linger in shared caches)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in _SECURITY_HEADERS.items():
                    headers[name] = value
                if not scope["path"].startswith("/static/"):
                    headers["cache-control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


def current_user(request: Request) -> dict[str, Any]:
    """The logged-in account (with its session's CSRF token); :class:`NotLoggedIn` otherwise."""
    user = auth.session_user(request.app.state.databases.get(), request.cookies.get(SESSION_COOKIE))
    if user is None:
        raise NotLoggedIn
    return user


def admin_user(user: Annotated[dict, Depends(current_user)]) -> dict[str, Any]:
    if user["role"] != "admin":
        raise HTTPException(403, "this page is for admins")
    return user


async def same_origin(request: Request) -> None:
    """Refuse a post sent by a page of another site (browsers name it in ``Origin``)."""
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host"):
        raise HTTPException(403, "a form from another site was refused")


async def csrf_checked(request: Request, user: Annotated[dict, Depends(current_user)]) -> dict[str, Any]:
    """The logged-in account, once the posted form carried its session's CSRF token."""
    await same_origin(request)
    form = await request.form()
    if not auth.tokens_match(form.get("csrf"), user["csrf"]):
        raise HTTPException(403, "the form's CSRF token is missing or wrong: reload the page and try again")
    return user


User = Annotated[dict, Depends(current_user)]
Posted = Annotated[dict, Depends(csrf_checked)]
Admin = Annotated[dict, Depends(admin_user)]


class Site:
    """What the route handlers share: the database of each thread, the page templates, the lease of
    a handed-out item, and whether cookies go over HTTPS only."""

    def __init__(self, url: str | Path, lease: float, secure_cookies: bool) -> None:
        self.databases = ThreadDatabases(url)
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.lease = lease
        self.secure_cookies = secure_cookies

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> Response:
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    def set_cookie(
        self, response: Response, name: str, value: str, path: str = "/", max_age: int | None = None
    ) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path=path, httponly=True, samesite="lax", secure=self.secure_cookies
        )

    def task_or_404(self, task_id: int) -> Any:
        try:
            return get_task(self.databases.get(), task_id)
        except EdgefusionError:
            raise HTTPException(404, f"no task {task_id}") from None

    def admin_page(
        self, request: Request, user: dict, message: str | None = None, status_code: int = 200
    ) -> Response:
        db = self.databases.get()
        rows = [{"task": task, "progress": progress(db, task)} for task in list_tasks(db)]
        context = {
            "user": user,
            "rows": rows,
            "users": auth.list_users(db),
            "message": message,
            "database": describe(db.url),
            "pending_policies": PENDING_POLICIES,
        }
        return self.render(request, "admin.html", context, status_code)

    def admin_action(self, request: Request, user: dict, action: Callable[[], str]) -> Response:
        """The admin page with what ``action`` reports, or with its error (status 400)."""
        try:
            message = action()
        except EdgefusionError as err:
            return self.admin_page(request, user, f"error: {err}", 400)
        return self.admin_page(request, user, message)


@dataclass(frozen=True)
class NewTask:
    """The settings every new task's form has: a name (None: derived from the inputs) and how many
    reviewers see each item."""

    name: str | None
    overlap: int


def new_task_form(name: Annotated[str, Form()] = "", overlap: Annotated[int, Form()] = 1) -> NewTask:
    return NewTask(name.strip() or None, overlap)


NewTaskForm = Annotated[NewTask, Depends(new_task_form)]


def create_app(url: str | Path, *, lease: float = DEFAULT_LEASE, secure_cookies: bool = False) -> FastAPI:
    """The app on the review database ``url`` (migrated here, once). ``lease``: seconds an item
    stays reserved for the reviewer it was handed to; ``secure_cookies``: send cookies only over
    HTTPS (set it when a TLS proxy fronts the app)."""
    open_database(url).close()
    site = Site(url, lease, secure_cookies)
    app = FastAPI(title="edgefusion review", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(SecurityHeaders)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.state.databases = site.databases
    _add_error_pages(app, site)
    _add_login(app, site)
    _add_reviewing(app, site)
    _add_admin(app, site)
    return app


def _add_error_pages(app: FastAPI, site: Site) -> None:
    """A request without a session goes to the login page; bad forms and HTTP errors get a page."""

    @app.exception_handler(NotLoggedIn)
    async def to_login(request: Request, _: NotLoggedIn) -> Response:
        if request.method in ("GET", "HEAD"):
            return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
        return PlainTextResponse("log in first", status_code=401)

    @app.exception_handler(RequestValidationError)
    async def bad_form(request: Request, err: RequestValidationError) -> Response:
        fields = ", ".join(str(error["loc"][-1]) for error in err.errors())
        return site.render(
            request, "error.html", {"status": 400, "message": f"bad or missing: {fields}"}, 400
        )

    @app.exception_handler(StarletteHTTPException)
    async def error_page(request: Request, err: StarletteHTTPException) -> Response:
        return site.render(
            request, "error.html", {"status": err.status_code, "message": err.detail}, err.status_code
        )


def _add_login(app: FastAPI, site: Site) -> None:
    """Logging in (a per-visit CSRF cookie guards the form) and out."""

    @app.get("/login")
    def login_page(request: Request, next: str = "/") -> Response:
        token = secrets.token_urlsafe(32)
        response = site.render(
            request, "login.html", {"csrf": token, "next": _local_path(next), "error": None}
        )
        site.set_cookie(response, LOGIN_CSRF_COOKIE, token, path="/login")
        return response

    @app.post("/login", dependencies=[Depends(same_origin)])
    def login(
        request: Request,
        name: Annotated[str, Form()] = "",
        password: Annotated[str, Form()] = "",
        csrf: Annotated[str, Form()] = "",
        next: Annotated[str, Form()] = "/",
    ) -> Response:
        if not auth.tokens_match(csrf, request.cookies.get(LOGIN_CSRF_COOKIE)):
            raise HTTPException(403, "the login form's CSRF token is missing or wrong: reload the page")
        db = site.databases.get()
        user = auth.authenticate(db, name, password)
        if user is None:
            context = {"csrf": csrf, "next": _local_path(next), "error": "wrong name or password"}
            return site.render(request, "login.html", context, status_code=401)
        response = RedirectResponse(_local_path(next), status_code=303)
        session = auth.start_session(db, user["id"])
        site.set_cookie(response, SESSION_COOKIE, session, max_age=auth.SESSION_SECONDS)
        response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return response

    @app.post("/logout")
    def logout(request: Request, user: Posted) -> Response:
        auth.end_session(site.databases.get(), request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE)
        return response


def _add_reviewing(app: FastAPI, site: Site) -> None:
    """The reviewer's pages: the task list, the next item of a task, answers, undo, images."""

    @app.get("/")
    def index(request: Request, user: User) -> Response:
        db = site.databases.get()
        rows = [{"task": task, "progress": progress(db, task, user["name"])} for task in list_tasks(db)]
        return site.render(request, "index.html", {"user": user, "rows": rows})

    @app.get("/tasks/{task_id}")
    def review(request: Request, task_id: int, user: User) -> Response:
        db = site.databases.get()
        task = site.task_or_404(task_id)
        item = next_item(db, task, user["name"], site.lease)
        context = {"user": user, "task": task, "item": item, "progress": progress(db, task, user["name"])}
        if item is None:
            return site.render(request, "done.html", context)
        return site.render(request, "curate.html" if task.kind == CURATE else "ab.html", context)

    @app.post("/tasks/{task_id}/answer")
    def answer(
        task_id: int,
        user: Posted,
        item: Annotated[str, Form()],
        choice: Annotated[str, Form()],
        note: Annotated[str, Form()] = "",
        text: Annotated[str, Form()] = "",
    ) -> Response:
        db = site.databases.get()
        task = site.task_or_404(task_id)
        action, reason = _action(task.kind, choice, note)
        try:
            with db.transaction():  # the answer and the next hand-out: one commit, one disk sync
                record_answer(
                    db, task, user["name"], item, action, reason, text if action == "edit" else None
                )
                next_item(db, task, user["name"], site.lease)
        except EdgefusionError as err:
            raise HTTPException(409, str(err)) from None
        return RedirectResponse(f"/tasks/{task.id}", status_code=303)

    @app.post("/tasks/{task_id}/undo")
    def undo(task_id: int, user: Posted) -> Response:
        task = site.task_or_404(task_id)
        undo_last(site.databases.get(), task, user["name"])
        return RedirectResponse(f"/tasks/{task.id}", status_code=303)

    @app.get("/tasks/{task_id}/items/{item_id}/image/{side}")
    def image(task_id: int, item_id: str, side: str, user: User) -> Response:
        db = site.databases.get()
        task = site.task_or_404(task_id)
        handout = holds(db, task, item_id, user["name"])
        if handout is None:
            raise HTTPException(404, "no such image among the items handed to you")
        path, refused = image_path(db, task, item_id, side, bool(handout["flipped"]))
        if refused:
            raise HTTPException(404, f"image refused: {refused}")
        data = _read_image(path)
        if task.kind == AB:
            return Response(_pixels_only(data), media_type="image/png")
        return Response(data, media_type=_MEDIA_TYPES[path.suffix.lower()])


def _add_admin(app: FastAPI, site: Site) -> None:
    """The admin's pages: tasks and accounts, opening tasks, exporting, reports."""

    @app.get("/admin")
    def admin_home(request: Request, user: Admin) -> Response:
        return site.admin_page(request, user)

    @app.post("/admin/tasks/curate")
    def new_curate_task(
        request: Request, user: Posted, _: Admin, dataset: Annotated[str, Form()], new: NewTaskForm
    ) -> Response:
        def open_task() -> str:
            db, by = site.databases.get(), user["name"]
            task, added = open_curate_task(db, dataset.strip(), name=new.name, overlap=new.overlap, by=by)
            return f"curation task {task.name!r} open, {added} samples added"

        return site.admin_action(request, user, open_task)

    @app.post("/admin/tasks/ab")
    def new_ab_task(
        request: Request, user: Posted, _: Admin, folders: Annotated[str, Form()], new: NewTaskForm
    ) -> Response:
        def open_task() -> str:
            paths = [line.strip() for line in folders.splitlines() if line.strip()]
            task = open_ab_task(
                site.databases.get(), paths, name=new.name, overlap=new.overlap, by=user["name"]
            )
            return f"A/B task {task.name!r} open"

        return site.admin_action(request, user, open_task)

    @app.post("/admin/tasks/{task_id}/export")
    def export(
        request: Request,
        task_id: int,
        user: Posted,
        _: Admin,
        out: Annotated[str, Form()],
        pending: Annotated[str, Form()] = "keep",
        overwrite: Annotated[bool, Form()] = False,
    ) -> Response:
        task = site.task_or_404(task_id)

        def export_it() -> str:
            stats = export_task(
                site.databases.get(), task.id, out.strip(), pending=pending, overwrite=overwrite
            )
            return (
                f"exported {task.name!r}: {stats['kept']} kept, {stats['rejected']} removed -> {out.strip()}"
            )

        return site.admin_action(request, user, export_it)

    @app.get("/admin/tasks/{task_id}/report")
    def report(request: Request, task_id: int, user: Admin, ties: str = "split") -> Response:
        task = site.task_or_404(task_id)
        if ties not in TIES:
            raise HTTPException(400, f"ties must be one of {', '.join(TIES)}")
        context = {"user": user, "report": task_report(site.databases.get(), task.id, ties)}
        return site.render(request, "report.html", context)


def _action(kind: str, choice: str, note: str) -> tuple[str, str | None]:
    """The answer a button stands for: ``keep``, a drop reason or ``edit`` (curation); ``left``,
    ``right`` or ``tie`` (A/B)."""
    if kind == AB:
        return choice, None
    if choice == "keep":
        return "accept", None
    if choice == "edit":
        return "edit", None
    if choice in DROP_REASONS:
        note = " ".join(note.split())[:500]
        return "reject", f"{choice}: {note}" if choice == "other" and note else choice
    raise HTTPException(400, f"unknown choice {choice!r}")


def _local_path(target: str) -> str:
    """``target`` if it is a path on this site, else ``/``: a login link must not send the
    reviewer to another site afterwards."""
    parts = urlsplit(target)
    if (
        target.startswith("/")
        and not target.startswith(("//", "/\\"))
        and not parts.scheme
        and not parts.netloc
    ):
        return target
    return "/"


def _pixels_only(data: bytes) -> bytes:
    """An A/B image re-encoded as a plain PNG: ``edgefusion generate`` writes the model's name and
    settings into its PNGs, which would tell a reviewer which model made which image."""
    try:
        return encode_png(decode_image(data).image)
    except ImageRejected as err:
        raise HTTPException(404, f"image refused: {err}") from None


def _read_image(path: Path) -> bytes:
    """The bytes of an image file already checked to lie in its folder; the last component is
    opened without following a symlink (one swapped in since the check is refused), and only a
    regular file with an image extension is read."""
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        raise HTTPException(404, "image refused: not an image file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        raise HTTPException(404, "image refused: missing or unreadable") from None
    with os.fdopen(fd, "rb") as file:
        if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
            raise HTTPException(404, "image refused: not a regular file")
        return file.read()
