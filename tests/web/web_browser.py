"""A real headless Chromium (the system's, driven by its chromedriver) and a real `beatd web`.

The browser is Debian's `chromium` through `/usr/bin/chromedriver` (.ci/run
installs both); nothing is downloaded. Tests skip without them, and fail
instead under BEATD_REQUIRE_SERVICES=1. `BEATD_WEB_SCREENSHOTS=DIR` keeps
each page's screenshot in DIR (docs/ holds the README's).
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run "
    "--disable-background-networking --disable-component-update --disable-sync"
).split()
WIDTH = 1360


def require_chromium() -> None:
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return
    message = f"{CHROMIUM} and {CHROMEDRIVER} are needed (apt-get install chromium chromium-driver)"
    if os.environ.get("BEATD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{message} and BEATD_REQUIRE_SERVICES=1")
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator[Browser]:
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    with tempfile.TemporaryDirectory(prefix="beatd-chromium-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in (*FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},900"):
            options.add_argument(flag)
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        try:
            yield Browser(driver)
        finally:
            driver.quit()


@dataclass
class Browser:
    driver: Any  # selenium's WebDriver
    base: str = ""

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> Any:
        from selenium.webdriver.common.by import By

        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, css: str) -> str:
        return str(self.find(css).text)

    def type(self, css: str, text: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(text)

    def submit(self, css: str) -> None:
        """Click a submit button and wait for the page it leads to."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        page = self.find("html")
        self.find(css).click()

        def gone(_: object) -> bool:
            # Chromium answers a node of a page being replaced either as stale or, mid-
            # navigation, as "does not belong to the document": both mean the old page left.
            try:
                page.is_enabled()
            except WebDriverException:
                return True
            return False

        WebDriverWait(self.driver, 15).until(gone)

    @property
    def title(self) -> str:
        return str(self.driver.title)

    @property
    def path(self) -> str:
        return str(self.driver.current_url).removeprefix(self.base)

    def screenshot(self, name: str, where: Path) -> Path:
        """The whole page (not only the window) as PNG, into $BEATD_WEB_SCREENSHOTS or `where`."""
        folder = Path(os.environ.get("BEATD_WEB_SCREENSHOTS") or where)
        folder.mkdir(parents=True, exist_ok=True)
        size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": WIDTH, "height": min(size["height"], 3000), "scale": 1}
        shot = self.driver.execute_cdp_cmd(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
        )
        path = folder / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path


@dataclass
class WebProcess:
    """`beatd web` in its own process, as an operator starts it."""

    proc: subprocess.Popen[bytes]
    log: Path
    url: str

    @classmethod
    def start(
        cls, config: Path, tmp: Path, env: dict[str, str] | None = None, timeout: float = 30
    ) -> WebProcess:
        log = tmp / f"web-{time.monotonic_ns()}.log"
        environ = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        for key in ("BEATD_DATABASE", "BEATD_BROKER", "BEATD_CONFIG"):
            environ.pop(key, None)
        argv = [sys.executable, "-m", "beatd.cli.main", "--config", str(config)]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*argv, "web", "--bind", "127.0.0.1:0"],
                stdout=out,
                stderr=out,
                env=environ,
                cwd=tmp,
            )
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(r"url=(http://\S+?)/? ", log.read_text() + " ")
            if found:
                return cls(proc, log, found.group(1))
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise AssertionError(f"beatd web did not start: {log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM; the exit code (0 when it stopped cleanly)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)
