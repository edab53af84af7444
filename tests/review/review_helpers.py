"""Helpers of the review tests: toy datasets and generation folders, a live server, a plain HTTP
client that keeps cookies and does not follow redirects, and a PostgreSQL cluster in a temp dir."""

from __future__ import annotations

import glob
import http.client
import json
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

PASSWORD = "correct horse battery"


def write_toy_dataset(folder: Path, n: int = 10, seed: int = 0) -> Path:
    """``n`` shapes-world renders with their canonical captions, in the project's dataset format."""
    import random

    from edgefusion.toy.captions import canonical_caption
    from edgefusion.toy.world import render, sample_scene

    rng = random.Random(seed)
    folder.mkdir(parents=True)
    rows = []
    for i in range(n):
        scene = sample_scene(rng)
        render(scene, 64, seed=seed + i).save(folder / f"{i:05d}.png")
        rows.append({"file_name": f"{i:05d}.png", "id": f"s{i:02d}", "text": canonical_caption(scene)})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def toy_prompts(n: int, seed: int = 0) -> list:
    """``n`` toy scenes with their canonical captions: the prompts of an A/B test."""
    import random

    from edgefusion.toy.captions import canonical_caption
    from edgefusion.toy.world import sample_scene

    rng = random.Random(seed)
    scenes = [sample_scene(rng) for _ in range(n)]
    return [(scene, canonical_caption(scene)) for scene in scenes]


def write_generation_folder(
    folder: Path, model: str, images: list, prompts: list[str], seed: int = 0
) -> Path:
    """A folder in ``edgefusion generate``'s layout (numbered PNGs carrying their settings, and
    ``generations.jsonl``), written by its own writer, with given images standing in for a model's."""
    import numpy as np
    import torch

    from edgefusion.generate import LOG_FILE, GenerationRecords, write_png

    settings = {"steps": 2, "guidance": 1.0, "model": model, "scheduler": "LCMScheduler", "size": 64}
    records = GenerationRecords(prompts, 1, seed, {**settings, "backend": "torch", "lcm": True})
    folder.mkdir(parents=True)
    for record, image in zip(records, images, strict=True):
        pixels = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
        write_png(folder / record["file_name"], pixels, record)
    (folder / LOG_FILE).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return folder


def add_accounts(db, accounts: dict[str, str]) -> None:
    """Accounts ``{name: role}``, all with the test password."""
    from edgefusion.review.auth import add_user

    for name, role in accounts.items():
        add_user(db, name, role, PASSWORD)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ThreadServer:
    """The app served by uvicorn on a thread of the test process, on a free port."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ThreadServer:
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started:
            if time.time() > deadline:
                raise RuntimeError("the review server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def serve_process(db: str, port: int, log: Path) -> subprocess.Popen:
    """``edgefusion review serve`` in its own process (the review commands alone, so the test does
    not load the model stages), logging to ``log``."""
    code = "import sys; from edgefusion.review.cli import review_app; review_app(sys.argv[1:])"
    args = [sys.executable, "-c", code, "serve", "--db", db, "--port", str(port)]
    return subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT)


def wait_until_up(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str
    cookies: list[str] = field(default_factory=list)

    @property
    def location(self) -> str | None:
        return self.headers.get("location")


class Client:
    """An HTTP client on one keep-alive connection that keeps cookies and never follows redirects."""

    def __init__(self, base: str, timeout: float = 30) -> None:
        self.host, self.port = base.removeprefix("http://").split(":")
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None) -> Reply:
        body = urlencode(form) if form is not None else None
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, int(self.port), timeout=self.timeout)
        try:
            self.conn.request(method, path, body=body, headers=sent)
            response = self.conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        set_cookies = response.headers.get_all("set-cookie") or []
        for line in set_cookies:
            name, value = line.split(";", 1)[0].split("=", 1)
            if "max-age=0" in line.lower() or "expires=thu, 01 jan 1970" in line.lower():
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value.strip('"')
        headers_out = {k.lower(): v for k, v in response.getheaders()}
        return Reply(response.status, headers_out, data.decode("utf-8", "replace"), set_cookies)

    def get(self, path: str, **kwargs) -> Reply:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, form: dict, **kwargs) -> Reply:
        return self.request("POST", path, form=form, **kwargs)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def login(self, name: str, password: str = PASSWORD) -> Reply:
        page = self.get("/login")
        reply = self.post(
            "/login", {"name": name, "password": password, "csrf": csrf_of(page.body), "next": "/"}
        )
        assert reply.status == 303, (reply.status, reply.body[:300])
        return reply


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def item_of(html: str) -> str:
    return re.search(r'name="item" value="([^"]+)"', html).group(1)


def _postgres_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    return Path(candidates[-1]).parent if candidates else None


class PostgresCluster:
    """A throw-away PostgreSQL server: ``initdb`` in a temp dir, started with ``pg_ctl`` on a free
    port (as the ``postgres`` user when the tests run as root, which PostgreSQL refuses)."""

    def __init__(self) -> None:
        self.bin = _postgres_bin()
        self.dir: str | None = None
        self.port = free_port()

    def start(self) -> str | None:
        """Start it; return why it cannot be started, or None."""
        if self.bin is None:
            return "no PostgreSQL binaries (pg_ctl) found: apt-get install postgresql"
        prefix: list[str] = []
        self.dir = tempfile.mkdtemp(prefix="edgefusion-pg-")
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no postgres user to run the server as"
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            prefix = ["runuser", "-u", "postgres", "--"]
        data = f"{self.dir}/data"
        steps = [
            [str(self.bin / "initdb"), "-D", data, "-A", "trust", "-U", "postgres", "-E", "UTF8", "-N"],
            [
                str(self.bin / "pg_ctl"), "-D", data, "-l", f"{self.dir}/log", "-w", "-t", "60", "start",
                "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            ],
        ]  # fmt: skip
        for step in steps:
            done = subprocess.run(prefix + step, capture_output=True, text=True)
            if done.returncode != 0:
                return f"{Path(step[0]).name} failed: {(done.stderr or done.stdout).strip()[-300:]}"
        return None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh empty database's URL."""
        import uuid

        import psycopg

        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        if self.dir is None:
            return
        if self.bin is not None and Path(f"{self.dir}/data/postmaster.pid").exists():
            prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
            stop = [str(self.bin / "pg_ctl"), "-D", f"{self.dir}/data", "-m", "immediate", "stop"]
            subprocess.run(prefix + stop, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
