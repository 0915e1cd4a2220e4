"""End to end in headless Debian Chromium (selenium + the system chromedriver), against the real app served by a
werkzeug server in a thread, a real redis-server, and the fake GitHub (which approves sign-in at once).

One browser session walks the whole story (to keep the suite fast): sign in through GitHub, watch the dashboard's
realtime chart take a poll, switch pool from the switcher, filter retries, shift-select two, Retry Now (accept the
confirm), watch them leave, open a job page with its backtrace, keep a selection across a live poll, and run
Retry All with streamed progress. Screenshots go to docs/screenshots/ (the README shows them).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from app import create_app
from conftest import IN_CI, ROOT, free_port, require_binary
from tests.auth_support import fake_github, fake_github_server, make_settings, pool_settings  # noqa: F401
from tests.test_dashboard import failed, push, zadd, add_process, job

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
SCREENSHOTS = ROOT / "docs" / "screenshots"


def save_screenshot(driver, name: str) -> None:
    """Refresh the README's screenshots only when asked (KIQBOARD_SCREENSHOTS=1), so test runs leave the tree clean."""
    if os.environ.get("KIQBOARD_SCREENSHOTS"):
        driver.save_screenshot(str(SCREENSHOTS / name))


def _require_browser() -> None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not Path(path).exists():
            message = f"{path} is missing (Debian package {package}); .ci/run installs it"
            if IN_CI:
                pytest.fail(message)
            pytest.skip(message)
    require_binary("chromium", "Debian package chromium")
    try:
        import selenium  # noqa: F401
    except ImportError:  # pragma: no cover
        if IN_CI:
            pytest.fail("selenium is not installed")
        pytest.skip("selenium is not installed")


@pytest.fixture
def browser():
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="kiqboard-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--no-first-run", "--disable-extensions", "--window-size=1280,900",
                     f"--user-data-dir={profile}"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def live_app(fake_github, redis_client, redis_server):
    settings = make_settings(fake_github, pools=[
        pool_settings("sidekiq", redis_server.url, number=1),
        pool_settings("sidekiq2", f"redis://127.0.0.1:{redis_server.port}/1", number=2),
    ])
    fake_github.set_user("octocat", orgs={"acme": "active"})
    fake_github.default_login = "octocat"
    app = create_app(settings)
    port = free_port()
    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="kiqboard-e2e", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(5)


def seed_pool(client, retries: int) -> None:
    now = time.time()
    client.set("stat:processed", 120_000)
    client.set("stat:failed", 345)
    for offset in range(30):
        day = time.strftime("%Y-%m-%d", time.gmtime(now - offset * 86400))
        client.set(f"stat:processed:{day}", 4000 + (offset * 997) % 3000)
        client.set(f"stat:failed:{day}", 20 + (offset * 37) % 60)
    for n in range(1, 6):
        push(client, job(n, klass="Orders::ChargeJob", queue="critical" if n % 2 else "default"))
    errors = [("Stripe::CardError", "Your card has expired"), ("Net::ReadTimeout", "Net::ReadTimeout"),
              ("ActiveRecord::Deadlocked", "deadlock detected")]
    for n in range(retries):
        error_class, message = errors[n % 3]
        group = "alpha" if n < 3 else "beta"
        payload = failed(100 + n, klass="Webhooks::DeliverJob", error_class=error_class, message=message,
                         retry_count=n % 4, args=[f"{group}-{n}", {"event": "order.paid", "attempt": n}],
                         backtrace=[f"app/jobs/webhooks/deliver_job.rb:{10 + n}:in `perform'",
                                    "sidekiq/processor.rb:196:in `execute_job'"])
        zadd(client, "retry", payload, now + 30 * (n + 1))
    zadd(client, "schedule", job(300, args=["later"]), now + 3600)
    zadd(client, "dead", failed(400, message="gave up"), now - 60)
    add_process(client, work={"tid-1": job(500, klass="Reports::DailyJob")})


def wait(driver, condition, timeout: float = 10.0, what: str = "condition"):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(condition, message=f"timed out waiting for {what}")


def retry_rows(driver):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, "#live tbody tr[data-key]")


def test_browser_story(browser, live_app, redis_client, redis_server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as EC

    pool2 = redis_server.client(db=1)
    seed_pool(redis_client, retries=12)
    seed_pool(pool2, retries=5)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    d = browser

    # ---- sign in through the fake GitHub, landing on the deep link
    d.get(f"{live_app}/sidekiq/")
    wait(d, EC.element_to_be_clickable((By.ID, "github-sign-in")), what="the sign-in button").click()
    wait(d, lambda drv: drv.current_url == f"{live_app}/sidekiq/", what="the dashboard after sign-in")
    assert "octocat" in d.find_element(By.CSS_SELECTOR, ".user-login").text

    # ---- the realtime chart takes polls (interval clamped: 1 ms in localStorage becomes 2 s)
    d.execute_script("localStorage.setItem('sidekiqTimeInterval', '1')")
    d.refresh()
    wait(d, lambda drv: int(drv.find_element(By.ID, "realtime-chart").get_attribute("data-polls") or 0) >= 1,
         what="the first poll")
    assert d.find_element(By.ID, "poll-interval-value").text == "2 sec"
    assert d.execute_script("return window.kiqboard.pollInterval()") == 2000  # clamped, never 1 ms
    redis_client.incrby("stat:processed", 42)
    redis_client.incrby("stat:failed", 3)
    wait(d, lambda drv: int(drv.find_element(By.ID, "realtime-chart").get_attribute("data-points") or 0) >= 1,
         timeout=8, what="a delta point")
    assert d.find_element(By.CSS_SELECTOR, '.stat-card [data-stat="processed"]').text == "120,042"
    assert "Processed 42, failed 3" in d.find_element(By.ID, "realtime-status").text
    redis_client.incrby("stat:processed", 17)
    wait(d, lambda drv: int(drv.find_element(By.ID, "realtime-chart").get_attribute("data-points")) >= 2,
         timeout=8, what="a second delta point")
    redis_client.incrby("stat:processed", 64)
    redis_client.incrby("stat:failed", 1)
    wait(d, lambda drv: int(drv.find_element(By.ID, "realtime-chart").get_attribute("data-points")) >= 3,
         timeout=8, what="a third delta point")
    assert len(d.find_elements(By.CSS_SELECTOR, "#realtime-chart canvas, #history-chart canvas")) == 2
    save_screenshot(d, "dashboard.png")

    # ---- open the other pool from the switcher
    d.find_element(By.CSS_SELECTOR, "#pool-switcher summary").click()
    wait(d, EC.element_to_be_clickable((By.CSS_SELECTOR, '#pool-switcher a[data-pool="sidekiq2"]')),
         what="the switcher menu").click()
    wait(d, lambda drv: drv.current_url == f"{live_app}/sidekiq2/", what="pool sidekiq2")
    assert d.find_element(By.CSS_SELECTOR, ".pool-name").text == "sidekiq2"

    # ---- retries of pool 1: screenshot, filter, shift-select two, Retry Now with the confirm
    d.get(f"{live_app}/sidekiq/retries")
    assert len(retry_rows(d)) == 12
    for index in (1, 2):
        d.find_elements(By.CSS_SELECTOR, "input.select-row")[index].click()
    save_screenshot(d, "retries.png")
    for index in (1, 2):
        d.find_elements(By.CSS_SELECTOR, "input.select-row")[index].click()

    box = d.find_element(By.ID, "filter-substr")
    box.send_keys("alpha", Keys.ENTER)
    wait(d, lambda drv: "substr=alpha" in drv.current_url, what="the filtered list")
    rows = retry_rows(d)
    assert len(rows) == 3
    assert not d.find_elements(By.ID, "all-actions")  # no "All" buttons on a filtered view
    boxes = d.find_elements(By.CSS_SELECTOR, "input.select-row")
    boxes[0].click()
    ActionChains(d).key_down(Keys.SHIFT).click(boxes[1]).key_up(Keys.SHIFT).perform()
    chosen = [b.get_attribute("value") for b in boxes if b.is_selected()]
    assert len(chosen) == 2
    assert "2 selected" in d.find_element(By.ID, "selection-count").text
    d.find_element(By.CSS_SELECTOR, 'button[name="retry"]').click()
    wait(d, EC.alert_is_present(), what="the confirm dialog")
    d.switch_to.alert.accept()
    wait(d, lambda drv: len(retry_rows(drv)) == 1, what="the two retried jobs to leave the list")
    assert "substr=alpha" in d.current_url  # back to the same filtered view
    remaining = retry_rows(d)[0].get_attribute("data-key")
    assert remaining not in chosen
    queued = [json.loads(m)["args"][0] for m in redis_client.lrange("queue:default", 0, -1)]
    assert {"alpha-0", "alpha-1"} <= set(queued)

    # ---- the job page with its decoded backtrace
    d.find_element(By.CSS_SELECTOR, "#live a.job-link").click()
    backtrace = wait(d, EC.visibility_of_element_located((By.ID, "backtrace")), what="the backtrace")
    assert "app/jobs/webhooks/deliver_job.rb:12:in `perform'" in backtrace.text
    assert "Stripe::CardError" not in backtrace.text and "ActiveRecord::Deadlocked" in d.page_source

    # ---- live poll keeps the selection while the table is re-rendered
    d.get(f"{live_app}/sidekiq/retries")
    d.execute_script("localStorage.setItem('sidekiqLivePoll', 'disabled')")
    d.find_elements(By.CSS_SELECTOR, "input.select-row")[0].click()
    kept = d.find_elements(By.CSS_SELECTOR, "input.select-row")[0].get_attribute("value")
    d.find_element(By.ID, "live-poll").click()
    assert d.find_element(By.ID, "live-poll").text == "Stop Polling"
    zadd(redis_client, "retry", failed(999, args=["arrived-while-polling"]), time.time() + 5000)
    wait(d, lambda drv: "arrived-while-polling" in drv.find_element(By.ID, "live").text, timeout=8,
         what="the live poll to show the new retry")
    checked = [b.get_attribute("value") for b in d.find_elements(By.CSS_SELECTOR, "input.select-row") if b.is_selected()]
    assert checked == [kept]
    d.find_element(By.ID, "live-poll").click()  # stop polling

    # ---- the "All" buttons and the total outside the polled table follow the set (gone when it empties, back after)
    saved = redis_client.zrange("retry", 0, -1, withscores=True)
    d.find_element(By.CSS_SELECTOR, "input.select-row:checked").click()
    d.find_element(By.ID, "live-poll").click()
    redis_client.delete("retry")
    wait(d, lambda drv: not drv.find_elements(By.ID, "all-actions"), timeout=8, what="the All buttons to go")
    assert d.find_element(By.CSS_SELECTOR, ".set-page .total").text == "0"
    redis_client.zadd("retry", dict(saved))
    wait(d, lambda drv: drv.find_elements(By.ID, "all-actions"), timeout=8, what="the All buttons to come back")
    assert d.find_element(By.CSS_SELECTOR, ".set-page .total").text == f"{len(saved):,}"
    d.find_element(By.ID, "live-poll").click()  # stop polling
    d.get(f"{live_app}/sidekiq/retries")
    d.find_elements(By.CSS_SELECTOR, "input.select-row")[0].click()

    # ---- Retry All streams progress, then the count
    total = redis_client.zcard("retry")
    d.find_element(By.CSS_SELECTOR, "input.select-row:checked").click()  # "All" buttons show with no selection
    d.find_element(By.CSS_SELECTOR, '#all-actions button[data-action="retry"]').click()
    wait(d, EC.alert_is_present(), what="the Retry All confirm")
    d.switch_to.alert.accept()
    wait(d, lambda drv: f"Retried {total} jobs" in drv.find_element(By.ID, "bulk-text").text, what="the count")
    wait(d, lambda drv: "No retries were found" in drv.page_source, what="the empty list after Retry All")
    assert redis_client.zcard("retry") == 0

    # ---- no CSP violations or script errors on the way
    problems = [e["message"] for e in d.get_log("browser")
                if e["level"] == "SEVERE" or "Content Security Policy" in e["message"]]
    assert not problems, problems
