"""The console in a real browser: Debian's Chromium (Playwright) against a real
`flywheel console` server process on a free port over a tiny store. Signs in, reviews
feedback with the keyboard, promotes and rolls back a version, switches language, reads
the drift and planner pages; saves a screenshot of each page in zh and en under
``.flywheel/test-artifacts/console/`` (``FLYWHEEL_TEST_ARTIFACTS`` moves it).

Chromium comes from `make install` (apt-get install chromium fonts-noto-cjk). Without it
the suite fails, never skips, unless a developer opts out with
``FLYWHEEL_SKIP_BROWSER_TESTS=1``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from console_world import World, build_world  # noqa: E402

from aiflywheel.store import Store  # noqa: E402
from aiflywheel.tasks.text_classification.demo_turn import free_port  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
OPT_OUT = "FLYWHEEL_SKIP_BROWSER_TESTS"
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("FLYWHEEL_TEST_ARTIFACTS", ROOT / ".flywheel" / "test-artifacts"))
SHOTS = ARTIFACTS / "console"


def _browser_or_fail():
    if os.environ.get(OPT_OUT) == "1":
        pytest.skip(f"{OPT_OUT}=1: browser tests opted out")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail(
            "the playwright package is missing: run `make install` "
            f"(or set {OPT_OUT}=1 to opt out on a developer machine)"
        )
    if not Path(CHROMIUM).is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: `make install` installs it as root (apt-get install "
            f"chromium fonts-noto-cjk); set {OPT_OUT}=1 to opt out on a developer machine"
        )
    return sync_playwright


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Store, World]]:
    """A tiny store and `flywheel console --no-browser` serving it on a free port."""
    home = tmp_path_factory.mktemp("console-home")
    store = Store(f"sqlite:///{home / 'flywheel.db'}")
    world = build_world(store, home / "models")
    from aiflywheel.planning.capacity import measure_version

    # Serving figures of v1 for the planner, as `flywheel plan --measure` takes them.
    measure_version(world.feature, 1, store=store, texts=16)
    port = free_port()
    log = home / "console.log"
    env = {**os.environ, "FLYWHEEL_HOME": str(home)}
    env.pop("FLYWHEEL_DB_URL", None)
    command = [sys.executable, "-m", "aiflywheel.cli", "console", "--no-browser"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*command, "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"flywheel console exited with {proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"flywheel console never became ready:\n{log.read_text()}")
            time.sleep(0.1)
        assert f"{base}/console" in log.read_text()  # it printed the URL to open
        # With a server already answering there, `flywheel console` only prints its URL.
        again = subprocess.run(
            [*command, "--port", str(port)], env=env, capture_output=True, text=True, timeout=60
        )
        assert (again.returncode, again.stdout) == (0, f"{base}/console\n"), again.stderr
        yield base, store, world
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def browser():
    sync_playwright = _browser_or_fail()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def signed_in(browser, base: str, key: str, lang: str = "en"):
    context = browser.new_context(
        viewport={"width": 1360, "height": 900}, locale="zh-CN" if lang == "zh" else "en-US"
    )
    page = context.new_page()
    page.goto(f"{base}/console")
    assert page.url.startswith(f"{base}/console/login")
    page.fill("input[name=key]", key)
    page.click("form[action='/console/login'] button[type=submit]")
    page.wait_for_url(f"{base}/console")
    return context, page


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_review_feedback_with_the_keyboard_and_in_bulk(browser, server) -> None:
    base, store, world = server
    context, page = signed_in(browser, base, world.keys["reviewer"])
    page.goto(f"{base}/console/review?feature=tiny-sentiment")
    rows = page.locator("#queue tr.item")
    assert rows.count() == len(world.feedback_ids)
    assert "13812345678" not in page.content()  # redacted text only
    first = int(rows.nth(0).get_attribute("data-id"))
    page.keyboard.press("a")  # accept the selected (first) row
    page.wait_for_selector("p.note")
    assert store.list_feedback("tiny-sentiment", ids=[first])[0].review_state == "accepted"
    # Now the first pending row is another item: relabel it to an unknown label.
    target = int(page.locator("#queue tr.item").nth(0).get_attribute("data-id"))
    page.keyboard.press("l")
    page.keyboard.type("neutral")
    page.keyboard.press("Enter")
    error = page.locator("p.error").inner_text()
    assert "'neutral'" in error and "(labels: negative, positive)" in error
    assert store.list_feedback("tiny-sentiment", ids=[target])[0].review_state == "pending"
    page.go_back()
    page.reload()
    page.keyboard.press("j")
    page.keyboard.press("k")
    page.keyboard.press("l")
    page.keyboard.type("positive")
    page.keyboard.press("Enter")
    page.wait_for_selector("p.note")
    item = store.list_feedback("tiny-sentiment", ids=[target])[0]
    assert (item.review_state, item.corrected_label) == ("accepted", "positive")
    # Bulk: reject everything still pending that v1 predicted 'positive'.
    page.fill("#review-filter input[name=predicted]", "positive")
    page.click("#review-filter button[type=submit]")
    matching = page.locator("#queue tr.item").count()
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("#bulk-form button[value=reject]")
    page.wait_for_selector("p.note")
    rejected = [i for i in store.list_feedback("tiny-sentiment", state="rejected")]
    assert len(rejected) == matching and all(i.predicted == "positive" for i in rejected)
    context.close()


def test_promote_and_roll_back_a_version(browser, server) -> None:
    base, store, world = server
    context, page = signed_in(browser, base, world.keys["admin"])
    page.click("#features tr[data-feature='tiny-sentiment'] a[href$='/versions/2']")
    page.wait_for_url("**/versions/2")
    page.fill("#promote-form input[name=reason]", "better on the corrected feedback")
    page.click("#promote-form button[type=submit]")
    page.wait_for_selector("p.note")
    assert page.locator("#status").inner_text() == "champion"
    assert store.champion("tiny-sentiment").version == 2
    page.fill("#rollback-form input[name=reason]", "customers complained")
    page.click("#rollback-form button[type=submit]")
    page.wait_for_url("**/versions/1?note=rolled_back")
    assert store.champion("tiny-sentiment").version == 1
    page.goto(f"{base}/console/audit?action=rollback")
    assert "customers complained" in page.locator("#timeline").inner_text()
    events = store.list_audit("tiny-sentiment")
    assert [(e.action, e.actor) for e in events[-2:]] == [
        ("promote", "admin-person"),
        ("rollback", "admin-person"),
    ]
    context.close()


def test_switch_language_read_drift_and_planner_and_screenshot_every_page(
    browser, server
) -> None:
    base, store, world = server
    context, page = signed_in(browser, base, world.keys["admin"])
    run_id = next(r.id for r, _ in store.list_runs() if r.status == "succeeded")
    pages = {
        "features": "/console",
        "feature": "/console/features/tiny-sentiment",
        "version": "/console/features/tiny-sentiment/versions/2",
        "review": "/console/review?feature=tiny-sentiment&state=",
        "audit": "/console/audit",
        "runs": "/console/runs",
        "keys": "/console/keys",
        "drift": "/console/drift?feature=tiny-sentiment",
        "insights": "/console/insights?feature=tiny-sentiment&embedder=tfidf",
        "planner": "/console/planner?feature=tiny-sentiment",
        "run": f"/console/runs/{run_id}",
    }
    for lang, word in (("en", "Features"), ("zh", "功能")):
        page.goto(f"{base}/console")
        page.click(f"button[data-lang='{lang}']")
        page.wait_for_load_state()
        assert page.locator("nav a[data-nav='features']").inner_text() == word
        for name, path in pages.items():
            page.goto(base + path)
            assert page.locator("nav a[data-nav='features']").inner_text() == word, name
            shot(page, f"{name}-{lang}")
    # The language is remembered in a cookie: a new page in the same context stays zh.
    again = context.new_page()
    again.goto(f"{base}/console/drift?feature=tiny-sentiment")
    assert again.locator("h1").inner_text() == "漂移"
    assert again.locator("#drift-none").count() == 1  # nothing computed on a page view
    again.click("#drift-record button[type=submit]")
    assert again.locator("#drift-checks tbody tr").count() >= 3
    assert again.locator("#drift-history tbody tr").count() == 1
    assert again.locator(".chart svg").count() == 1
    shot(again, "drift-recorded-zh")
    # Planner: measured versions are priced; a non-positive QPS is refused, naming it.
    again.goto(f"{base}/console/planner?feature=tiny-sentiment")
    costs = again.locator("#plan tr[data-version='1'] td").nth(6).inner_text()
    assert float(costs) > 0
    again.fill("#planner-form input[name=qps]", "-5")
    again.click("#planner-form button[type=submit]")
    assert "qps" in again.locator("#planner-error").inner_text()
    context.close()
