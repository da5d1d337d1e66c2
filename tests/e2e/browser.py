"""Selenium against the system's chromium (Debian `chromium` + `chromium-driver`): one
headless browser, explicit waits only, and helpers that read like what an operator does."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
WAIT_S = 30
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1366,900",
)


def require_chromium() -> None:
    """Skip where no browser could be installed (a developer's machine without root); in CI
    (`CI` set, as `.ci/run` runs) a missing browser fails: it is never a silent skip there."""
    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    if missing:
        why = (
            f"browser tests need Debian's chromium and chromium-driver ({', '.join(missing)} "
            "missing); `python3 dev.py test` installs them as root"
        )
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)


class Browser:
    def __init__(self, base_url: str, profile: Path | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._profile = (
            Path(tempfile.mkdtemp(prefix="pentarun-chromium-")) if profile is None else profile
        )
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self._profile}")
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
        self.driver: WebDriver = webdriver.Chrome(options=options, service=service)
        self.driver.set_script_timeout(WAIT_S)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    # --- finding and waiting ------------------------------------------------------------
    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def until(
        self, predicate: Callable[[WebDriver], Any], what: str, wait_s: float = WAIT_S
    ) -> Any:
        try:
            return WebDriverWait(
                self.driver, wait_s, ignored_exceptions=(StaleElementReferenceException,)
            ).until(predicate)
        except TimeoutException:
            raise AssertionError(
                f"waited {wait_s} s for {what}; page:\n{self.text()[:3000]}"
            ) from None

    def css(self, selector: str) -> WebElement:
        return self.until(lambda d: d.find_element(By.CSS_SELECTOR, selector), selector)

    def all(self, selector: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, selector)

    def visible(self, selector: str) -> WebElement:
        def shown(d: WebDriver) -> WebElement | bool:
            for element in d.find_elements(By.CSS_SELECTOR, selector):
                if element.is_displayed():
                    return element
            return False

        return self.until(shown, f"{selector} to be visible")

    def button(self, text: str, within: str = "body") -> WebElement:
        """The visible button (or link) whose visible text is `text`."""

        def find(d: WebDriver) -> WebElement | bool:
            for root in d.find_elements(By.CSS_SELECTOR, within):
                for element in root.find_elements(By.CSS_SELECTOR, "button, a"):
                    if element.is_displayed() and element.text.strip() == text:
                        return element
            return False

        return self.until(find, f"a button {text!r} in {within}")

    def click(self, text: str, within: str = "body") -> None:
        element = self.button(text, within)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
        element.click()

    def text(self, selector: str = "body") -> str:
        elements = self.driver.find_elements(By.CSS_SELECTOR, selector)
        return "\n".join(e.text for e in elements)

    def wait_text(self, selector: str, expected: str, wait_s: float = WAIT_S) -> None:
        self.until(
            lambda d: any(expected in e.text for e in d.find_elements(By.CSS_SELECTOR, selector)),
            f"{expected!r} in {selector}",
            wait_s,
        )

    def fill(self, selector: str, value: str) -> None:
        element = self.css(selector)
        element.clear()
        element.send_keys(value)

    def fetch(self, method: str, path: str, body: Any = None, csrf: bool = True) -> dict:
        """A request from the page itself (same origin, its cookie), as a script would make
        it: {"status", "body"}."""
        return self.driver.execute_async_script(
            """
            const [method, path, body, withCsrf, done] = arguments;
            const headers = {"Content-Type": "application/json", "Accept": "application/json"};
            if (withCsrf) headers["X-CSRF-Token"] = document.querySelector('meta[name="csrf-token"]').content;
            fetch(path, {method, headers, body: body === null ? undefined : JSON.stringify(body)})
              .then(async (r) => done({status: r.status, body: await r.json().catch(() => null)}))
              .catch((e) => done({status: 0, body: String(e)}));
            """,
            method,
            path,
            body,
            csrf,
        )

    def console_errors(self) -> list[str]:
        """What the page logged as errors (CSP violations among them)."""
        return [
            entry["message"]
            for entry in self.driver.get_log("browser")
            if entry.get("level") == "SEVERE"
        ]

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.driver.save_screenshot(str(path))
