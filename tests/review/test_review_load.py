"""Load on localhost: 20 reviewers post 2,000 votes at once through a real server, which is killed
with SIGKILL half-way and restarted; every vote is counted once and no acknowledged vote is lost."""

from __future__ import annotations

import http.client
import os
import signal
import threading
import time
from functools import partial

import pytest

pytest.importorskip("fastapi", reason="the review extra is not installed: pip install -e '.[review]'")

from PIL import Image  # noqa: E402
from review_helpers import (  # noqa: E402
    Client,
    add_accounts,
    csrf_of,
    free_port,
    item_of,
    serve_process,
    wait_until_up,
    write_generation_folder,
)

from edgefusion.data.review_db import open_database  # noqa: E402
from edgefusion.review.report import task_report  # noqa: E402
from edgefusion.review.tasks import open_ab_task  # noqa: E402

REVIEWERS, PROMPTS = 20, 100  # overlap 20: every reviewer votes on every comparison, 2,000 votes
VOTES = ("left", "right", "tie")
RETRYABLE = (OSError, http.client.HTTPException)


def _until_answered(call, deadline: float):
    """``call()`` until it gets an answer: while the server is down, a reviewer's browser retries."""
    while True:
        try:
            return call()
        except RETRYABLE:
            if time.time() > deadline:
                raise
            time.sleep(0.05)


def test_concurrent_votes_survive_a_killed_server(tmp_path):
    prompts = [f"prompt {i}" for i in range(PROMPTS)]
    folders = [
        write_generation_folder(
            tmp_path / name, f"toy:{name}", [Image.new("RGB", (8, 8), colour)] * PROMPTS, prompts
        )
        for name, colour in (("teacher", "red"), ("edgefusion", "blue"))
    ]
    url = str(tmp_path / "review.sqlite")
    db = open_database(url)
    names = [f"r{i:02d}" for i in range(REVIEWERS)]
    add_accounts(db, dict.fromkeys(names, "reviewer"))
    task = open_ab_task(db, folders, overlap=REVIEWERS)
    db.close()
    port, log = free_port(), tmp_path / "server.log"
    server = serve_process(url, port, log)
    wait_until_up(port)
    acknowledged: dict[tuple[str, str], str] = {}
    lock = threading.Lock()
    errors: list[BaseException] = []
    deadline = time.time() + 600  # a bound against hanging, not a speed test: slow machines pass

    def reviewer(name: str, seat: int) -> None:
        try:
            client = Client(f"http://127.0.0.1:{port}", timeout=20)
            _until_answered(lambda: client.login(name), deadline)
            while True:
                page = _until_answered(lambda: client.get(f"/tasks/{task.id}"), deadline)
                assert page.status == 200, page.body[:300]
                if 'name="item"' not in page.body:
                    return  # nothing left for this reviewer
                item = item_of(page.body)
                vote = VOTES[(seat + int(item[:5])) % 3]
                form = {"csrf": csrf_of(page.body), "item": item, "choice": vote}
                # A post whose answer was lost (server killed) is sent again: it must count once.
                post = partial(client.post, f"/tasks/{task.id}/answer", form)
                reply = _until_answered(post, deadline)
                assert reply.status == 303, reply.body[:300]
                with lock:
                    acknowledged[(item, name)] = vote
        except BaseException as err:  # reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=reviewer, args=(n, i), daemon=True) for i, n in enumerate(names)]
    for thread in threads:
        thread.start()
    while len(acknowledged) < REVIEWERS * PROMPTS // 2 and not errors and time.time() < deadline:
        time.sleep(0.01)
    killed_after = dict(acknowledged)
    os.kill(server.pid, signal.SIGKILL)  # mid-task: requests in flight get no answer
    server.wait()
    server = serve_process(url, port, log)
    try:
        for thread in threads:
            thread.join(max(1.0, deadline - time.time()))
        assert not errors, errors[0]
        assert not any(thread.is_alive() for thread in threads), "reviewers still voting at the deadline"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
    assert len(killed_after) >= REVIEWERS * PROMPTS // 2
    db = open_database(url)
    rows = db.query("SELECT item_id, reviewer, action FROM answers WHERE undone = 0")
    stored = {(r["item_id"], r["reviewer"]): r["action"] for r in rows}
    assert len(rows) == len(stored) == REVIEWERS * PROMPTS  # every vote counted, none twice
    assert stored == acknowledged  # including every vote acknowledged before the kill
    assert db.scalar("SELECT COUNT(*) AS n FROM answers") == REVIEWERS * PROMPTS  # no stray rows either
    report = task_report(db, task.id)
    db.close()
    (pair,) = report["pairs"]
    assert pair["votes"] == REVIEWERS * PROMPTS and pair["reviewers"] == REVIEWERS
    assert pair["ties"] == sum(vote == "tie" for vote in acknowledged.values())
    assert report["progress"]["answers"] == report["progress"]["wanted"] == REVIEWERS * PROMPTS
