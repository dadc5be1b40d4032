"""The ops page (/ops): off without an operator key, opened only by it (not by a partner key, not
by a wrong one), POST actions refused without the CSRF token; and in a real headless Chromium
(Debian's, driven by playwright) against `couponcore serve` on the production deployment: log in,
re-drive a real dead letter by clicking after fixing its cause, and find the row in PostgreSQL.
The browser test saves screenshots to build/screenshots/ (ops-dead-letter.png with the dead
letter, ops.png after its re-drive); they are kept after the run."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import couponcore
import httpx
import pytest
from conftest import REPO, env_url, production_kwargs
from couponcore.fastapi import create_app
from couponcore.ops import OpsPage, OpsRequest, read_operator_key_file

OPERATOR_KEY = "op-" + "k" * 29  # 32 characters
CHROMIUM = "/usr/bin/chromium"
# Chromium on a machine without network: no first-run, sync, component or QUIC traffic to wait for.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOT = REPO / "build" / "screenshots" / "ops.png"
BEFORE = REPO / "build" / "screenshots" / "ops-dead-letter.png"


class AppClient:
    """A synchronous face over httpx's ASGI transport (the app runs in this process)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self._loop = asyncio.new_event_loop()
        self._c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")
        self.cookies = self._c.cookies

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._c.get(url, **kw))

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self._loop.run_until_complete(self._c.post(url, **kw))

    def __enter__(self) -> AppClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.run_until_complete(self._c.aclose())
        self._loop.close()


# ---- off by default; who may open it ------------------------------------------------------


def test_without_an_operator_key_the_page_is_not_served(embedded: couponcore.Engine, monkeypatch: Any) -> None:
    monkeypatch.delenv("COUPONCORE_OPERATOR_KEY", raising=False)
    with AppClient(create_app(embedded)) as c:
        for path in ("/ops", "/ops/", "/ops/static/ops.css"):
            assert c.get(path).status_code == 404, path
        assert c.post("/ops/login", data={"key": ""}).status_code == 404
    # The framework-neutral page says the same when mounted anyway (Django mounts it always).
    assert OpsPage(embedded, None).handle(OpsRequest("GET", "", "/ops")).status == 404


def test_the_operator_key_comes_from_the_environment_and_must_be_long(
    embedded: couponcore.Engine, monkeypatch: Any, tmp_path: Path
) -> None:
    monkeypatch.setenv("COUPONCORE_OPERATOR_KEY", OPERATOR_KEY)
    with AppClient(create_app(embedded)) as c:
        r = c.get("/ops/")
        assert r.status_code == 401 and 'name="key"' in r.text  # the login form
    with pytest.raises(couponcore.InvalidArgument, match="16"):
        create_app(embedded, operator_key="short")
    (tmp_path / "key").write_text(OPERATOR_KEY + "\n")
    assert read_operator_key_file(str(tmp_path / "key")) == OPERATOR_KEY
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(couponcore.InvalidArgument, match="empty"):
        read_operator_key_file(str(tmp_path / "empty"))


def _login(c: AppClient, key: str) -> httpx.Response:
    return c.post("/ops/login", data={"key": key}, follow_redirects=False)


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert m, "no CSRF token in the page"
    return m.group(1)


def test_wrong_key_and_partner_key_are_refused_the_operator_key_opens(embedded: couponcore.Engine) -> None:
    partner_key = embedded.partners.create("shop").api_key
    with AppClient(create_app(embedded, operator_key=OPERATOR_KEY)) as c:
        for wrong in ("", "x" * 32, OPERATOR_KEY[:-1], OPERATOR_KEY + "x", partner_key):
            r = _login(c, wrong)
            assert r.status_code == 401, wrong
            assert "set-cookie" not in r.headers
            assert "not the operator key" in r.text
        # A partner key where partner routes take it opens nothing here either.
        r = c.get("/ops/", headers={"X-API-KEY": partner_key})
        assert r.status_code == 401 and 'name="key"' in r.text
        assert c.post("/ops/action", data={"action": "audit"}, headers={"X-API-KEY": partner_key}).status_code == 401
        # The operator key: a session cookie, HttpOnly and SameSite=Strict, scoped to /ops.
        r = _login(c, OPERATOR_KEY)
        assert r.status_code == 303 and r.headers["location"] == "/ops/"
        cookie = r.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/ops" in cookie
        page = c.get("/ops/")
        assert page.status_code == 200, page.text
        assert "Campaigns" in page.text and "Grant pipeline" in page.text and "Wallets" in page.text
        assert "default-src 'none'" in page.headers["content-security-policy"]
        # A forged cookie is no session.
    page = OpsPage(embedded, OPERATOR_KEY)
    for forged in ("9999999999.nonce." + "0" * 64, "²." + "x" * 10 + ".y", "1.é.é", "a.b", ""):
        r = page.handle(OpsRequest("GET", "", "/ops", cookies={"couponcore_ops": forged}))
        assert r.status == 401, forged


def test_failed_logins_are_limited_per_client(embedded: couponcore.Engine, monkeypatch: Any) -> None:
    import couponcore.ops.page as ops_page

    monkeypatch.setattr(ops_page, "LOGIN_WINDOW_S", 0.5)
    page = OpsPage(embedded, OPERATOR_KEY)

    def login(key: str, client: str) -> int:
        return page.handle(OpsRequest("POST", "login", "/ops", form={"key": key}, client=client)).status

    for _ in range(ops_page.LOGIN_FAILURES_MAX):
        assert login("w" * 32, "10.0.0.1") == 401
    assert login("w" * 32, "10.0.0.1") == 429
    assert login(OPERATOR_KEY, "10.0.0.1") == 429  # while limited, not even the right key
    assert login(OPERATOR_KEY, "10.0.0.2") == 303  # another address is not
    time.sleep(0.6)
    assert login(OPERATOR_KEY, "10.0.0.1") == 303  # the window ended


def test_a_post_action_without_the_csrf_token_is_refused_and_changes_nothing(embedded: couponcore.Engine) -> None:
    page = OpsPage(embedded, OPERATOR_KEY)
    with AppClient(create_app(embedded, operator_key=OPERATOR_KEY)) as c:
        assert _login(c, OPERATOR_KEY).status_code == 303
        token = _csrf(c.get("/ops/").text)
        for form in (
            {"action": "audit"},
            {"action": "audit", "csrf": ""},
            {"action": "audit", "csrf": "0" * 64},
            {"action": "audit", "csrf": "é" * 64},
        ):
            r = c.post("/ops/action", data=form, follow_redirects=False)
            assert r.status_code == 403, form
        assert c.app.state.couponcore_ops.snapshots.last_audit is None  # nothing ran
        # A token of another session does not work either.
        assert page.csrf_token("another") != token
        r = c.post("/ops/action", data={"action": "audit", "csrf": token}, follow_redirects=False)
        assert r.status_code == 303 and "wallet+audit" in r.headers["location"]
        assert c.app.state.couponcore_ops.snapshots.last_audit is not None
        assert "wallet audit: 0 wallet(s), ok" in c.get(r.headers["location"]).text
        # A message the page did not sign (a crafted link) is not shown.
        crafted = c.get("/ops/?msg=Your+key+expired%3A+log+in+at+evil.example&sig=" + "0" * 64).text
        assert "evil.example" not in crafted and 'id="message"' not in crafted
        # Logging out needs the token too, and then the session is gone from the browser.
        assert c.post("/ops/logout", data={}, follow_redirects=False).status_code == 403
        assert c.post("/ops/logout", data={"csrf": token}, follow_redirects=False).status_code == 303
        assert c.get("/ops/").status_code == 401


def test_bad_action_input_is_a_message_and_changes_nothing(embedded: couponcore.Engine) -> None:
    with AppClient(create_app(embedded, operator_key=OPERATOR_KEY)) as c:
        _login(c, OPERATOR_KEY)
        token = _csrf(c.get("/ops/").text)
        for form, expect in (
            ({"action": "nope"}, "unknown action"),
            ({"action": "redrive", "campaign_id": "x", "id": "1-0"}, "InvalidArgument"),
            ({"action": "rerun", "job_id": "-1"}, "rerun"),
        ):
            r = c.post("/ops/action", data={**form, "csrf": token}, follow_redirects=True)
            assert r.status_code == 200 and expect in r.text, (form, r.text[:2000])
        assert c.post("/ops/action", content=b"{}", headers={"content-type": "application/json"}).status_code == 415
        form = {"content-type": "application/x-www-form-urlencoded"}
        assert c.post("/ops/action", content=b"a=" + b"x" * 20_000, headers=form).status_code == 413
        assert c.post("/ops/action", content="&".join(f"f{i}=1" for i in range(60)), headers=form).status_code == 400
        # Inspect: a bad campaign id, and a dead letter that is not there (the embedded engine has none).
        assert c.get("/ops/deadletters/x/1-0").status_code == 422
        r = c.get("/ops/deadletters/1/1-0")
        assert r.status_code == 404 and "NotFound" in r.text


def test_campaigns_stock_and_sold_out_time_on_the_page(embedded: couponcore.Engine) -> None:
    sold = embedded.campaigns.create("sold-out sale", 3)
    live = embedded.campaigns.create("running sale", 10)
    for i in range(5):
        embedded.issue(sold.id, f"u{i}")
        embedded.issue(live.id, f"u{i}")
    assert embedded.drain(30)
    with AppClient(create_app(embedded, operator_key=OPERATOR_KEY)) as c:
        _login(c, OPERATOR_KEY)
        html = c.get("/ops/").text
    row = {m.group(1): m.group(0) for m in re.finditer(r'<tr class="\w+" data-campaign="(\d+)">.*?</tr>', html)}
    assert '<td class="num stock">0</td>' in row[str(sold.id)]
    assert " UTC" in row[str(sold.id)]  # sold out at
    assert '<td class="num stock">5</td>' in row[str(live.id)]
    assert "—</td></tr>" in row[str(live.id)]  # not sold out
    assert "SOLD_OUT" in html and "running sale" in html


def test_a_failed_job_is_shown_and_rerun_from_the_page(embedded: couponcore.Engine, tmp_path: Path) -> None:
    import couponcore.jobs

    embedded.jobs.configure(
        {
            "retry": {"base_s": 0.01, "max_s": 0.02},
            "retention": {"cron": ""},
            "jobs": {name: {"cron": ""} for name in couponcore.jobs.JOB_NAMES} | {"bulk_grant": {"max_attempts": 1}},
        }
    )
    c = embedded.campaigns.create("bulk", 10)
    failed = embedded.jobs.run("bulk_grant", job_key="k", path=str(tmp_path / "missing.csv"), campaign_id=c.id)
    assert failed.state == "failed"
    with AppClient(create_app(embedded, operator_key=OPERATOR_KEY)) as client:
        _login(client, OPERATOR_KEY)
        html = client.get("/ops/").text
        row = re.search(rf'<tr class="job" data-job="{failed.id}">.*?</tr>', html)
        assert row and "failed" in row.group(0) and "NotFound" in row.group(0) and "re-run" in row.group(0)
        r = client.post(
            "/ops/action",
            data={"action": "rerun", "job_id": str(failed.id), "csrf": _csrf(html)},
            follow_redirects=True,
        )
        m = re.search(r"re-run: job bulk_grant queued as run (\d+)", r.text)
        assert m, r.text
    again = embedded.jobs.get(int(m.group(1)))
    assert again.id != failed.id and again.state == "queued" and again.args == failed.args


def test_django_mounts_the_same_page(embedded: couponcore.Engine, monkeypatch: Any) -> None:
    """The example project (examples/django_project, as test_django.py uses it) mounts the page
    at ops/; Django's CSRF middleware on, the page's own token is what counts."""
    sys.path.insert(0, str(REPO / "examples" / "django_project"))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "shop.settings")
    import django

    django.setup()
    import couponcore.django.ops as django_ops
    from django.test import Client, override_settings

    monkeypatch.setattr(django_ops, "get_engine", lambda: embedded)
    monkeypatch.delenv("COUPONCORE_OPERATOR_KEY", raising=False)
    middleware = ["django.middleware.common.CommonMiddleware", "django.middleware.csrf.CsrfViewMiddleware"]
    with override_settings(COUPONCORE={"PATH": ":memory:"}, MIDDLEWARE=middleware):
        assert Client().get("/ops/").status_code == 404  # no key: off
    with override_settings(COUPONCORE={"PATH": ":memory:", "OPERATOR_KEY": OPERATOR_KEY}, MIDDLEWARE=middleware):
        c = Client(enforce_csrf_checks=True)
        assert c.get("/ops/").status_code == 401
        assert c.post("/ops/login", {"key": "wrong" * 8}).status_code == 401
        r = c.post("/ops/login", {"key": OPERATOR_KEY})
        assert r.status_code == 303 and r["Location"] == "/ops/"
        morsel = r.cookies["couponcore_ops"]
        assert morsel["httponly"] and morsel["samesite"] == "Strict" and morsel["path"] == "/ops"
        page = c.get("/ops/")
        assert page.status_code == 200 and b"Grant pipeline" in page.content
        assert c.get("/ops/static/ops.js").status_code == 200
        token = _csrf(page.content.decode())
        assert c.post("/ops/action", {"action": "audit"}).status_code == 403
        r = c.post("/ops/action", {"action": "audit", "csrf": token})
        assert r.status_code == 303 and "wallet+audit" in r["Location"]


# ---- the real thing: production deployment, couponcore serve, headless Chromium ------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg() -> Any:
    import psycopg

    return psycopg.connect(env_url("COUPONCORE_TEST_POSTGRES_URL"), autocommit=True)


@pytest.fixture
def dead_letter() -> Iterator[dict[str, Any]]:
    """Two real dead letters: PostgreSQL refuses two grants (a CHECK constraint on their users),
    the writer dead-letters them; the constraint is still there when the test starts (their
    cause). One is re-driven, the other dropped."""
    kw = production_kwargs()
    engine = couponcore.open(
        **kw,
        writer_claim_idle_ms=100,
        writer_claim_interval_ms=50,
        writer_dead_letter_after_deliveries=2,
    )
    try:
        c = engine.campaigns.create("ops drop", 10)
        with _pg() as conn:
            conn.execute(
                "ALTER TABLE coupons ADD CONSTRAINT ops_test_refuse CHECK (user_id NOT LIKE 'refused-%') NOT VALID"
            )
        ok = engine.issue(c.id, "fine-user")
        refused = engine.issue(c.id, "refused-user")
        void = engine.issue(c.id, "refused-void")
        assert ok.issued and refused.issued and void.issued
        deadline = time.monotonic() + 30
        while sum(b.dead_letters for b in engine.log_backlog()) < 2:
            assert time.monotonic() < deadline, "the refused grants were not dead-lettered within 30 s"
            time.sleep(0.05)
        assert engine.drain(30)
        yield {"kw": kw, "campaign": c, "seq": refused.seq, "engine": engine}
    finally:
        with _pg() as conn:
            conn.execute("ALTER TABLE coupons DROP CONSTRAINT IF EXISTS ops_test_refuse")
        engine.close()


@pytest.fixture
def served(dead_letter: dict[str, Any], tmp_path: Path) -> Iterator[dict[str, Any]]:
    """`couponcore serve` on the production deployment, ops page on, on a free loopback port."""
    kw = dead_letter["kw"]
    key_file = tmp_path / "operator-key"
    key_file.write_text(OPERATOR_KEY + "\n")
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "couponcore",
            "serve",
            "--port",
            str(port),
            "--redis",
            kw["redis"],
            "--postgres",
            kw["postgres"],
            "--key-prefix",
            kw["key_prefix"],
            "--operator-key-file",
            str(key_file),
            "--create-partner",
            "shop",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "COUPONCORE_OPERATOR_KEY"},
    )
    try:
        assert proc.stdout is not None
        partner_key = proc.stdout.readline().strip().rsplit(" ", 1)[-1]
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "couponcore serve did not answer within 30 s"
            time.sleep(0.1)
        yield {**dead_letter, "url": url, "partner_key": partner_key}
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def _coupon_rows(campaign_id: int, user_id: str) -> list[tuple[Any, ...]]:
    with _pg() as conn:
        return conn.execute(
            "SELECT seq, user_id FROM coupons WHERE campaign_id = %s AND user_id = %s", (campaign_id, user_id)
        ).fetchall()


@pytest.mark.servers
def test_browser_redrives_a_dead_letter_by_clicking(
    served: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from playwright.sync_api import sync_playwright

    url, cid = served["url"], served["campaign"].id
    assert _coupon_rows(cid, "refused-user") == []
    # Outside the browser: the partner key and a wrong key are refused, and a session without
    # the CSRF token cannot re-drive (the dead letter stays).
    with httpx.Client(base_url=url) as h:
        assert h.post("/ops/login", data={"key": served["partner_key"]}).status_code == 401
        assert h.post("/ops/login", data={"key": "w" * 32}).status_code == 401
        assert h.post("/ops/login", data={"key": OPERATOR_KEY}).status_code == 303
        page_html = h.get("/ops/").text
        dl_id = re.search(r'<tr class="dead-letter" data-id="([^"]+)"', page_html)
        assert dl_id, page_html
        r = h.post("/ops/action", data={"action": "redrive", "campaign_id": str(cid), "id": dl_id.group(1)})
        assert r.status_code == 403
        # A partner's flash sale through the REST API of the same server: 30 users, 20 coupons.
        partner = {"X-API-KEY": served["partner_key"]}
        flash = h.post("/campaigns", json={"name": "flash sale", "quantity": 20}, headers=partner).json()["id"]
        answers = [
            h.post(f"/campaigns/{flash}/issue", json={"user_id": f"buyer-{i}"}, headers=partner).json()["status"]
            for i in range(30)
        ]
        assert answers.count("ISSUED") == 20 and answers.count("SOLD_OUT") == 10
        for i in range(3):  # and points for three of its buyers
            earn = {"amount": 100 * (i + 1), "idempotency_key": f"welcome-{i}"}
            assert h.post(f"/users/buyer-{i}/points/earn", json=earn, headers=partner).status_code == 200
    assert any(b.dead_letters for b in served["engine"].log_backlog())

    # The cause is fixed: PostgreSQL accepts the user again.
    with _pg() as conn:
        conn.execute("ALTER TABLE coupons DROP CONSTRAINT ops_test_refuse")

    profile = tmp_path / "chromium-profile"  # a fresh profile, removed with tmp_path
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            problems: list[str] = []  # console errors (a CSP violation is one) and page errors
            page.on("console", lambda m: problems.append(f"{m.text} {m.location}") if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("dialog", lambda d: d.accept())  # "Drop dead letter ...?": yes
            page.goto(f"{url}/ops/")
            # A wrong key in the form: refused, still the login form.
            page.fill("input[name=key]", "not-the-operator-key-at-all")
            page.click("#login button")
            page.wait_for_selector("p.error:has-text('not the operator key')")
            page.fill("input[name=key]", OPERATOR_KEY)
            page.click("#login button")
            page.wait_for_selector("#pipeline")
            assert page.locator(f'tr.dead-letter[data-campaign="{cid}"]').count() == 2
            # Inspect one, and drop it from its own page (the confirm dialog accepted).
            page.locator("tr.dead-letter", has_text="refused-void").locator("a", has_text="inspect").click()
            page.wait_for_selector("h1:has-text('Dead letter')")
            detail = page.inner_text("main")
            assert "Dead letter" in detail and "refused-void" in detail and "ops_test_refuse" in detail
            page.click("button[data-action=drop]")
            page.wait_for_selector("#message:has-text('dropped')")  # the page after the action
            assert page.locator("tr.dead-letter", has_text="refused-void").count() == 0
            row = page.locator("tr.dead-letter", has_text="refused-user")
            assert row.count() == 1
            assert "check" in row.inner_text().lower()  # the reason: the CHECK constraint
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(BEFORE), full_page=True)
            row.locator("button[data-action=redrive]").click()
            page.wait_for_selector("#message:has-text('re-driven')")  # the page after the action
            # The page refreshes itself (ops.js, every 5 s) without a reload: a new snapshot time.
            taken = page.inner_text("#taken")
            page.wait_for_function("t => document.getElementById('taken').textContent !== t", arg=taken, timeout=20_000)
            deadline = time.monotonic() + 30
            while _coupon_rows(cid, "refused-user") == []:
                assert time.monotonic() < deadline, "the re-driven grant did not reach PostgreSQL within 30 s"
                time.sleep(0.1)
            # The page catches up (its snapshot is at most 2 s old): both grants stored, no dead letter.
            stored = page.locator(f'#campaigns tr[data-campaign="{cid}"] td.stored')
            deadline = time.monotonic() + 30
            while stored.inner_text() != "2":
                assert time.monotonic() < deadline, "the page did not show the re-driven grant within 30 s"
                time.sleep(0.5)
                page.goto(f"{url}/ops/")
            assert page.locator(f'tr.dead-letter[data-campaign="{cid}"]').count() == 0
            # The gate's count: three granted, one dropped (its seq given back to the gate).
            assert page.locator(f'#campaigns tr[data-campaign="{cid}"] td.gate').inner_text() == "2"
            sold_out = page.locator(f'#campaigns tr[data-campaign="{flash}"]').inner_text()
            assert "flash sale" in sold_out and " UTC" in sold_out  # its sold-out time
            assert page.locator(f'#campaigns tr[data-campaign="{flash}"] td.stock').inner_text() == "0"
            assert "SOLD_OUT" in page.inner_text("#answers")
            page.click("button[data-action=audit]")  # opens the wallets: their counters show too
            # The audit covers the database's every wallet: this test's three, and those of tests
            # that ran before it on the same database.
            page.wait_for_selector("#message:has-text('wallet audit:')")  # the page after the action
            audit = re.search(r"wallet audit: (\d+) wallet\(s\), ok", page.inner_text("#message"))
            assert audit and int(audit.group(1)) >= 3, page.inner_text("#message")
            page.screenshot(path=str(SCREENSHOT), full_page=True)
            with capsys.disabled():  # shown in every run, not only with -s
                print(f"\nops page screenshots: {BEFORE} (a dead letter), {SCREENSHOT} (after its re-drive)")
        finally:
            context.close()
    # The login page's 401 is logged as a console error by Chromium; nothing else may be there.
    assert [p for p in problems if "401" not in p] == [], problems
    assert _coupon_rows(cid, "refused-user") == [(served["seq"], "refused-user")]
    assert _coupon_rows(cid, "refused-void") == []  # dropped: never written
    assert SCREENSHOT.stat().st_size > 10_000 and BEFORE.stat().st_size > 10_000
    shutil.rmtree(profile, ignore_errors=True)
