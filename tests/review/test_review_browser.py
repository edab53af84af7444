"""The review app in a real browser (Playwright driving Debian's Chromium): curating ten toy images
by keyboard and exporting them, and a blind A/B vote whose report matches the votes cast.

With ``EDGEFUSION_REVIEW_SCREENSHOTS=DIR`` the walk-through also saves a screenshot of every page
into DIR (``docs/images/review`` holds the ones the docs show).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the review extra is not installed: pip install -e '.[review]'")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the review extra)")

from review_helpers import PASSWORD, ThreadServer, add_accounts  # noqa: E402

from edgefusion.data.dataset import iter_rows  # noqa: E402
from edgefusion.data.review_db import open_database  # noqa: E402
from edgefusion.data.review_queue import get_task, holds  # noqa: E402
from edgefusion.review.app import create_app  # noqa: E402
from edgefusion.review.report import task_report  # noqa: E402
from edgefusion.review.stats import wilson_interval  # noqa: E402
from edgefusion.review.tasks import open_ab_task, open_curate_task  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCRIPTED_CAPTION = "<img src=x onerror=alert(1)><script>alert(2)</script> a green star"
SHOTS = os.environ.get("EDGEFUSION_REVIEW_SCREENSHOTS")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no Chromium on PATH: `make test` installs it (apt-get install chromium)"
)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses root
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield browser
        browser.close()


# Shows the test's temporary folder as the walk-through's folder in the docs' screenshots.
_RENAME_FOLDER = """([temporary, shown]) => {
    const walk = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walk.nextNode()) {
        const node = walk.currentNode;
        node.nodeValue = node.nodeValue.split(temporary).join(shown);
    }
}"""


def _shot(page, name: str, folder: Path | None = None) -> None:
    if SHOTS:
        if folder is not None:
            page.evaluate(_RENAME_FOLDER, [f"{folder}/", "runs/review/"])
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SHOTS) / f"{name}.png"), full_page=True)


def _login(browser, base: str, name: str, shot: str | None = None):
    page = browser.new_context(viewport={"width": 1100, "height": 720}).new_page()
    page.goto(f"{base}/")
    assert page.url.startswith(f"{base}/login")  # every page is behind the login
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    if shot:
        _shot(page, shot)
    with page.expect_navigation():
        page.press("input[name=password]", "Enter")
    return page


def _press(page, key: str) -> None:
    """Press ``key`` and wait for the page the answer leads to."""
    with page.expect_navigation():
        page.keyboard.press(key)


def test_curate_ten_images_by_keyboard_then_export(browser, toy_set, tmp_path):
    dataset = tmp_path / "synt"
    shutil.copytree(toy_set, dataset)
    rows = [json.loads(line) for line in (dataset / "metadata.jsonl").read_text().splitlines()]
    rows[9]["text"] = SCRIPTED_CAPTION
    (dataset / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    url = str(tmp_path / "review.sqlite")
    db = open_database(url)
    add_accounts(db, {"ada": "admin", "rita": "reviewer"})
    task, _ = open_curate_task(db, dataset, name="toy-synt")
    with ThreadServer(create_app(url)) as server:
        page = _login(browser, server.url, "rita", shot="login")
        dialogs: list[str] = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        _shot(page, "tasks")
        with page.expect_navigation():
            page.click("td a.button")
        _shot(page, "curate")
        # (item shown, keys): keep, drop with each reason, edit a caption, and undo one answer.
        plan = [
            ("s00", ["k"]),
            ("s01", ["a"]),
            ("s02", ["m"]),
            ("s03", ["o", *"smudge", "Enter"]),
            ("s04", ["e", "Control+a", *"a corrected caption", "Enter"]),
            ("s05", ["k"]),
            ("s06", ["k"]),
            ("s07", ["u"]),  # undo s06's keep: s06 comes back
            ("s06", ["a"]),
            ("s07", ["k"]),
            ("s08", ["a"]),
            ("s09", ["k"]),
        ]
        for item, keys in plan:
            assert page.input_value("form.answer input[name=item] >> nth=0") == item
            if item == "s09":
                assert page.inner_text("#caption") == SCRIPTED_CAPTION  # shown as text, never run
            for key in keys[:-1]:
                page.keyboard.press(key)
            _press(page, keys[-1])
        assert "Nothing left for you" in page.content() and "100.0%" in page.inner_text(".progress")
        _shot(page, "done")
        assert not dialogs
        admin = _login(browser, server.url, "ada")
        admin.goto(f"{server.url}/admin")
        _shot(admin, "admin", tmp_path)
        out = tmp_path / "synt-cur"
        row = admin.locator("tr", has_text="toy-synt")
        row.locator("input[name=out]").fill(str(out))
        with admin.expect_navigation():
            row.locator("text=export").click()
        assert "exported 'toy-synt': 5 kept, 5 removed" in admin.inner_text("[role=status]")
        admin.goto(f"{server.url}/admin/tasks/{task.id}/report")
        _shot(admin, "report-curation", tmp_path)
        page.goto(f"{server.url}/admin")
        assert "403" in page.inner_text("h1")  # a reviewer is refused the admin pages
        _shot(page, "error")
    db.close()
    kept = {r["id"]: r for r in iter_rows(out)}
    assert list(kept) == ["s00", "s04", "s05", "s07", "s09"]
    assert kept["s04"]["text"] == "a corrected caption" and kept["s04"]["original_text"] == rows[4]["text"]
    assert kept["s09"]["text"] == SCRIPTED_CAPTION
    assert all((out / r["file_name"]).is_file() for r in kept.values())
    rejects = {r["id"]: r for r in iter_rows(out, "rejects.jsonl")}
    assert {k: r["reason"] for k, r in rejects.items()} == {
        "s01": "review: artifact",
        "s02": "review: misaligned",
        "s03": "review: other: smudge",
        "s06": "review: artifact",
        "s08": "review: artifact",
    }
    assert [(a["reviewer"], a["action"]) for a in rejects["s06"]["answers"]] == [("rita", "reject")]


def test_blind_ab_votes_match_the_report(browser, generation_folders, tmp_path):
    url = str(tmp_path / "review.sqlite")
    db = open_database(url)
    add_accounts(db, {"ada": "admin", "rita": "reviewer"})
    task = open_ab_task(db, generation_folders[:2])
    teacher = 0  # the first folder
    # Six comparisons: the teacher wins four, the student one, one tie.
    wanted = ["teacher", "teacher", "student", "tie", "teacher", "teacher"]
    with ThreadServer(create_app(url)) as server:
        page = _login(browser, server.url, "rita")
        page.goto(f"{server.url}/tasks/{task.id}")
        _shot(page, "ab")
        for want in wanted:
            html = page.content()
            assert "toy:teacher" not in html and "toy:edgefusion" not in html  # models stay hidden
            item = page.input_value("input[name=item]")
            flipped = holds(db, get_task(db, task.id), item, "rita")["flipped"]
            pair = db.query_one("SELECT model_a, model_b FROM pairs WHERE item_id = ?", (item,))
            left = pair["model_b"] if flipped else pair["model_a"]
            if want == "tie":
                key = "ArrowDown"
            else:
                key = "ArrowLeft" if (left == teacher) == (want == "teacher") else "ArrowRight"
            _press(page, key)
        assert "Nothing left for you" in page.content()
        admin = _login(browser, server.url, "ada")
        admin.goto(f"{server.url}/admin/tasks/{task.id}/report")
        _shot(admin, "report-ab")
        cells = admin.locator("#pairs tbody tr td").all_inner_texts()
        low, high = wilson_interval(4 + 0.5, 6)
        interval = f"{low:.3f} - {high:.3f}"
        assert cells == ["toy:teacher", "toy:edgefusion", "4", "1", "1", "6", "1", "0.750", interval, "194"]
    report = task_report(db, task.id)
    db.close()
    (pair,) = report["pairs"]
    assert (pair["wins_a"], pair["wins_b"], pair["ties"], pair["votes"], pair["reviewers"]) == (4, 1, 1, 6, 1)
    assert pair["win_rate_a"] == 0.75 and pair["ci95"] == pytest.approx([low, high], abs=1e-4)
