"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through the
system's chromedriver, against the daemon's HTTP app served by uvicorn on a loopback port,
over a real engine (the daemon loop running) on a real SQLite store with two `sql` apps.

With JavaScript turned off in the browser, an operator logs in through the form, sees both apps and the parked conflict, the Persian
name reads right to left, resolves the conflict with one click (and the daemon writes the
value taken to the other app), and opens a customer page; screenshots of the overview and of
the customer page are checked to show a rendered page with data. Their paths are printed
(`pytest -s`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest

from customer_sync.api.app import bind, serve
from customer_sync.api.auth import AdminAuth
from customer_sync.engine.runner import Engine
from tests.integration.dashboard_world import ARABIC, PERSIAN, TOKEN, DashboardWorld

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL = "apt-get install -y chromium chromium-driver"


def _browser_or_skip() -> None:
    """Chromium and its driver must be installed: a failure in CI, a skip that says how to
    install them elsewhere."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) and shutil.which(p))]
    if not missing:
        return
    reason = f"{', '.join(missing)} missing: install Debian's browser and driver with `{INSTALL}`"
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no"):
        pytest.fail(reason)
    pytest.skip(reason)


def wait_for(condition: Callable[[], Any], *, timeout_s: float = 20.0, what: str) -> Any:
    """`condition()` once it is truthy; fail after `timeout_s` (polls, no fixed sleep)."""
    deadline = time.monotonic() + timeout_s
    while not (result := condition()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)
    return result


class ServedDaemon:
    """The daemon's loop and its HTTP app (uvicorn, on 127.0.0.1 and a free port) running in a
    thread of their own, as `customer-sync run` runs them."""

    def __init__(self, world: DashboardWorld) -> None:
        self.world = world
        self.sock = bind("127.0.0.1:0")
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="daemon", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread, which raises it
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop = asyncio.Event()
        async with Engine(self.world.config, self.world.store) as engine:
            self.ready.set()
            await asyncio.gather(engine.run_forever(self.stop, dispatch_interval_s=0.2),
                                 serve(engine, self.sock, self.stop, auth=AdminAuth(TOKEN)))

    def __enter__(self) -> Self:
        self.thread.start()
        assert self.ready.wait(30), "the daemon did not start"
        if self.error is not None:
            raise self.error
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        assert not self.thread.is_alive(), "the daemon did not stop"
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def chromium() -> Iterator[Any]:
    """Headless Chromium through the system's chromedriver (Selenium Manager never runs: the
    driver's path is given)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1400,1300", "--lang=en-US", "--no-first-run"):
        options.add_argument(arg)
    # JavaScript off for the pages (WebDriver's own calls still run): the dashboard must work
    # without it, every action being a form
    options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def assert_rendered(png: Path) -> tuple[int, int, int, float]:
    """The screenshot decodes, is of a sensible size and shows a page with data: many distinct
    colours (text, state badges, chart bars) and a fair share of non-white pixels."""
    from PIL import Image

    with Image.open(png) as image:
        image.load()
        rgb = image.convert("RGB")
    width, height = rgb.size
    assert width >= 800 and height >= 600, rgb.size
    small = rgb.resize((width // 2, height // 2))
    colours = small.getcolors(maxcolors=1 << 20)
    assert colours is not None
    non_white = sum(n for n, (r, g, b) in colours if min(r, g, b) < 235) / (small.width * small.height)
    assert len(colours) >= 64, f"{len(colours)} colours: a blank or nearly blank page"
    assert non_white >= 0.05, f"{non_white:.1%} of pixels not white: a blank page"
    return width, height, len(colours), non_white


def test_an_operator_logs_in_resolves_a_conflict_and_reads_a_customer(tmp_path: Path) -> None:
    """Login form, overview (apps, conflict, RTL name), one-click resolve written through to the
    other app, customer page by the search box, and screenshots that show the pages."""
    _browser_or_skip()
    from selenium.webdriver.common.by import By

    world = DashboardWorld(tmp_path)
    asyncio.run(world.seed())
    conflict = world.conflicts()[0]
    with ServedDaemon(world) as daemon, chromium() as driver:
        driver.get(daemon.base_url + "/")
        assert "/login?next=%2F" in driver.current_url
        driver.find_element(By.NAME, "token").send_keys(TOKEN)
        driver.find_element(By.CSS_SELECTOR, "form[action='/login'] button").click()
        wait_for(lambda: driver.title.startswith("Overview"), what="the overview after login")

        assert not driver.find_elements(By.TAG_NAME, "script")
        for app in ("crm", "shop"):
            state = driver.find_element(By.CSS_SELECTOR, f"tr[data-app='{app}'] .state").text
            assert state in {"in sync", "lagging"}, (app, state)
        row = driver.find_element(By.CSS_SELECTOR, f"tr[data-conflict='{conflict['id']}']")
        assert "phone" in row.text and "+14155550103" in row.text
        name = row.find_element(By.XPATH, f".//div[contains(., '{PERSIAN[0]}')]")
        email = row.find_element(By.XPATH, ".//div[contains(., 'maryam@example.com')]")
        style = "return getComputedStyle(arguments[0]).direction"
        assert "rtl" == driver.execute_script(style, name)
        assert "ltr" == driver.execute_script(style, email)
        overview_png = tmp_path / "dashboard-overview.png"
        assert driver.save_screenshot(str(overview_png))

        row.find_element(By.CSS_SELECTOR, "button[value='shop']").click()
        wait_for(lambda: "resolved=" in driver.current_url, what="the redirect after resolving")
        assert f"Conflict {conflict['id']} resolved: took shop" in driver.find_element(By.CSS_SELECTOR, ".note").text
        assert not driver.find_elements(By.CSS_SELECTOR, "tr[data-conflict]")
        assert "No conflicts waiting." in driver.page_source
        wait_for(lambda: any(r["phone"] == "+14155550103" for r in world.rows("crm")
                             if r["email"] == "maryam@example.com"),
                 what="the daemon to write the value taken to the CRM")

        search = driver.find_element(By.NAME, "q")
        search.send_keys("fatima@example.com")
        search.submit()
        wait_for(lambda: driver.title.startswith("Customer"), what="the customer page")
        first = driver.find_element(By.CSS_SELECTOR, "tr[data-field='first_name'] td:nth-child(2)")
        email = driver.find_element(By.CSS_SELECTOR, "tr[data-field='email'] td:nth-child(2)")
        assert ARABIC[0] == first.text
        align = "return getComputedStyle(arguments[0]).textAlign"
        # the Arabic value reads and aligns right to left in its cell; the email beside it does not
        assert ("rtl", "start") == (driver.execute_script(style, first), driver.execute_script(align, first))
        assert "ltr" == driver.execute_script(style, email)
        box, cell = first.rect, driver.execute_script(
            "const r = document.createRange(); r.selectNodeContents(arguments[0]);"
            "const b = r.getBoundingClientRect(); return {x: b.x, width: b.width}", first)
        assert cell["x"] + cell["width"] > box["x"] + box["width"] - 20, "the Arabic name is not right-aligned"
        links = driver.find_elements(By.XPATH, "//h2[.='Links']/following-sibling::table[1]/tbody/tr")
        assert ["crm", "shop"] == sorted(r.find_element(By.TAG_NAME, "td").text for r in links)
        customer_png = tmp_path / "dashboard-customer.png"
        assert driver.save_screenshot(str(customer_png))

    for png in (overview_png, customer_png):
        width, height, colours, non_white = assert_rendered(png)
        print(f"screenshot: {png} ({width}x{height}, {colours} colours, {non_white:.0%} not white)")
    world.close()
