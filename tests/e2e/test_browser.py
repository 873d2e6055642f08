"""The web manager in a real headless Chromium (Debian's chromium + chromedriver, Selenium).

One real `goniec serve` for the module: delivery on, MX of deferred.test on a
loopback port where nobody listens (so its mail is deferred), the relay list
without 127.0.0.1 (so a relay attempt from here is refused until the Settings
page adds it), an admin user made with the CLI. One browser for the module.
Chromium only ever talks to that loopback server.
"""

from __future__ import annotations

import os
import shutil
import smtplib
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from goniec.testing.dnsserver import ZoneServer
from goniec.testing.process import ServerProcess, free_port, make_server

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

CHROMIUM = os.environ.get("GONIEC_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("GONIEC_CHROMEDRIVER", "/usr/bin/chromedriver")
ADMIN, ADMIN_PW = "admin", "browser test pw"
SMTP_USER, SMTP_PW = "sender", "smtp pw"
EVIL = '<script>alert("x")</script>"><img src=x onerror=alert(1)>'

webdriver = pytest.importorskip("selenium.webdriver")
if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
    pytest.skip(f"no {CHROMIUM} / {CHROMEDRIVER}: apt-get install chromium chromium-driver",
                allow_module_level=True)

from selenium.common.exceptions import (  # noqa: E402
    NoSuchElementException,
    StaleElementReferenceException,
)
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402


def wait_for(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, dns: ZoneServer) -> Iterator[ServerProcess]:
    workdir = tmp_path_factory.mktemp("browser")
    dns.zone["deferred.test"] = {"MX": [(10, "mx.deferred.test")]}
    dns.zone["mx.deferred.test"] = {"A": ["127.0.0.1"]}
    srv = make_server(
        workdir, listeners=[{"name": "smtp", "tls": "none", "auth": "optional"}],
        server={"log_file": str(workdir / "goniec.log")},
        auth={"allow_plaintext": True},
        relay={"networks": ["192.0.2.0/24"]},  # not us: relaying needs a login, or a change
        dns={"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 2},
        delivery={"enabled": True, "port": free_port(), "retry": ["1h"], "scan_interval": 0.2,
                  "connect_timeout": 2},
        admin={"web_listen": f"127.0.0.1:{free_port()}"})
    srv.start()
    for args, pw in ((("user", "add", ADMIN, "--admin"), ADMIN_PW),
                     (("user", "add", SMTP_USER), SMTP_PW)):
        out = srv.cli(*args, "--password-stdin", input=pw + "\n")
        assert out.returncode == 0, out.stderr
    try:
        yield srv
    finally:
        srv.stop()
        dns.zone.pop("deferred.test", None)
        dns.zone.pop("mx.deferred.test", None)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="goniec-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-default-apps", "--window-size=1280,900",
                f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def submit(server: ServerProcess, rcpt: str, subject: str, *, login: bool = True) -> None:
    body = (f"From: <{SMTP_USER}@goniec.test>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n"
            f"X-Note: {EVIL}\r\nContent-Type: text/html\r\n\r\n<p>Hi <b>there</b></p>"
            f"<script>alert(3)</script>\r\n")
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as c:
        if login:
            c.login(SMTP_USER, SMTP_PW)
        c.sendmail(f"{SMTP_USER}@goniec.test", [rcpt], body.encode())


def open_page(browser: WebDriver, server: ServerProcess, path: str) -> None:
    """Go to `path`, logging in first if the manager asks (each test can run alone)."""
    browser.get(f"{server.web_url}{path}")
    if "/login" in browser.current_url:
        browser.find_element(By.ID, "username").send_keys(ADMIN, Keys.TAB, ADMIN_PW, Keys.ENTER)
        wait_for(lambda: "/login" not in browser.current_url, f"{path} after logging in")


def flash_text(browser: WebDriver) -> str:
    """The notice of the page shown now; "" while the next page is still loading."""
    try:
        return str(browser.find_element(By.CSS_SELECTOR, ".flash").text)
    except (NoSuchElementException, StaleElementReferenceException):
        return ""


# ------------------------------------------------------------------------ scenarios


def test_login_form_works_with_the_keyboard(server: ServerProcess, browser: WebDriver) -> None:
    browser.get(f"{server.web_url}/queue")
    assert "/login" in browser.current_url
    focused = browser.switch_to.active_element
    assert focused.get_attribute("id") == "username"  # autofocus
    focused.send_keys(ADMIN, Keys.TAB)
    focused = browser.switch_to.active_element
    assert focused.get_attribute("id") == "password"
    focused.send_keys("wrong", Keys.ENTER)
    wait_for(lambda: browser.find_elements(By.ID, "login-error"), "the error")
    assert "Wrong user name or password" in browser.find_element(By.ID, "login-error").text
    browser.find_element(By.ID, "username").send_keys(ADMIN, Keys.TAB, ADMIN_PW, Keys.ENTER)
    wait_for(lambda: browser.current_url.endswith("/queue"), "the queue page after login")
    # the first Tab stop of every page is the skip link
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("class") == "skip"


def test_sees_and_disconnects_a_session_held_open(server: ServerProcess,
                                                  browser: WebDriver) -> None:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=10)
    client.ehlo("held-open.client.test")
    try:
        xpath = "//tr[td[contains(., 'held-open.client.test')]]"

        def row_shown() -> list[Any]:
            open_page(browser, server, "/sessions")
            return list(browser.find_elements(By.XPATH, xpath))

        row = wait_for(row_shown, "the session in the table")[0]
        assert "127.0.0.1:" in row.text
        row.find_element(By.TAG_NAME, "button").click()
        wait_for(lambda: "disconnected" in flash_text(browser), "the disconnect notice")
        assert "held-open.client.test" not in browser.find_element(By.TAG_NAME, "main").text
        with pytest.raises((smtplib.SMTPServerDisconnected, OSError)):
            client.noop()
            client.noop()
    finally:
        client.close()


def test_finds_a_deferred_message_and_retries_it(server: ServerProcess,
                                                 browser: WebDriver) -> None:
    submit(server, "user@deferred.test", "waiting for a retry")
    open_page(browser, server, "/queue")

    def deferred_listed() -> bool:
        Select(browser.find_element(By.ID, "f-state")).select_by_value("deferred")
        browser.find_element(By.ID, "f-recipient").clear()
        browser.find_element(By.ID, "f-recipient").send_keys("user@deferred.test", Keys.ENTER)
        return bool(browser.find_elements(By.CSS_SELECTOR, "table.queue tbody a"))

    wait_for(deferred_listed, "the message to be deferred")
    browser.find_element(By.CSS_SELECTOR, "table.queue tbody a").click()
    wait_for(lambda: browser.find_elements(By.ID, "rc-h"), "the message page")
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "user@deferred.test" in main and "DEFERRED" in main.upper()
    browser.find_element(By.XPATH, "//button[normalize-space()='Retry']").click()
    wait_for(lambda: "retry: 1 done" in flash_text(browser), "the retry notice")


def test_changing_the_relay_list_applies_it(server: ServerProcess, browser: WebDriver) -> None:
    def relay_reply() -> int:
        with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as c:
            c.ehlo("relay.client.test")
            c.mail("someone@goniec.test")
            return int(c.rcpt("user@elsewhere.example")[0])

    assert relay_reply() == 550
    open_page(browser, server, "/settings/access")
    field = wait_for(lambda: browser.find_elements(By.ID, "s-relay__networks"),
                     "the relay list field")[0]
    field.clear()
    field.send_keys("10.0.0.1/8")  # host bits set: the loader refuses it
    browser.find_element(By.XPATH, "//button[normalize-space()='Save and apply']").click()
    error = wait_for(lambda: browser.find_elements(By.ID, "s-relay__networks-err"),
                     "the error next to the field")[0]
    assert "host bits" in error.text
    assert relay_reply() == 550
    field = browser.find_element(By.ID, "s-relay__networks")
    field.clear()
    field.send_keys("192.0.2.0/24\n127.0.0.0/8")
    browser.find_element(By.XPATH, "//button[normalize-space()='Save and apply']").click()
    wait_for(lambda: "reloaded" in flash_text(browser), "the saved notice")
    assert '"127.0.0.0/8"' in server.config_path.read_text()
    wait_for(lambda: relay_reply() == 250, "the new relay list to apply")


def test_html_and_script_in_headers_are_shown_as_text(server: ServerProcess,
                                                      browser: WebDriver) -> None:
    submit(server, "evil@deferred.test", EVIL)
    open_page(browser, server, "/queue?recipient=evil%40deferred.test")
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "table.queue tbody a"), "the message")
    browser.find_element(By.CSS_SELECTOR, "table.queue tbody a").click()
    cells = wait_for(lambda: browser.find_elements(By.XPATH, "//table[@class='headers']//td"),
                     "the message page")
    texts = [c.text for c in cells]
    assert EVIL in texts  # Subject, shown literally
    assert texts.count(EVIL) == 2  # and X-Note
    assert browser.find_elements(By.TAG_NAME, "script") == []
    assert browser.find_elements(By.CSS_SELECTOR, "main img") == []
    assert "Hi there" in browser.find_element(By.CSS_SELECTOR, "pre.preview").text
    assert browser.execute_script("return window.__pwned === undefined") is True


def test_phone_sized_screen(server: ServerProcess, browser: WebDriver) -> None:
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": 375, "height": 812, "deviceScaleFactor": 2, "mobile": True})
    try:
        for path in ("/", "/sessions", "/queue", "/settings/access", "/users", "/logs"):
            open_page(browser, server, path)
            width = browser.execute_script("return document.documentElement.scrollWidth")
            assert width <= 375, (path, width)
            nav = browser.find_element(By.CSS_SELECTOR, "nav[aria-label=Main]")
            assert nav.is_displayed()
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
