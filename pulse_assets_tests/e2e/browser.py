"""Headless Debian Chromium driven by selenium through the system chromedriver, and a
``dagster dev`` process for it to look at.

Playwright's own browser download does not work on the CI machines, so the tests drive
``/usr/bin/chromium`` (Debian's ``chromium``) with ``/usr/bin/chromedriver``
(``chromium-driver``); ``.ci/run`` installs both when they are missing. Without them a test
fails saying what to install: a browser test that skips would pass on a machine that never
ran it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.wait import WebDriverWait

from pulse_assets.config import REPO_ROOT
from pulse_assets_tests.e2e.test_dagster_dev import wait_until
from pulse_assets_tests.ports import free_port
from pulse_assets_tests.processes import stop_group

CHROMIUM = ("chromium", "/usr/bin/chromium")
CHROMEDRIVER = ("chromedriver", "/usr/bin/chromedriver")
INSTALL_HINT = (
    "install Debian's Chromium and its driver: apt-get install -y chromium chromium-driver "
    "(.ci/run does this on a fresh machine)"
)
WINDOW = (1600, 1000)
What = str | Callable[[], str]


def _find(names: tuple[str, str]) -> str:
    found = shutil.which(names[0]) or shutil.which(names[1])
    if found is None:
        pytest.fail(f"{names[1]} not found and no {names[0]} on PATH: {INSTALL_HINT}")
    return found


class Browser:
    """A headless Chromium page whose waits leave a screenshot and the page source behind
    when they fail, under ``evidence``, named in the assertion message."""

    def __init__(self, driver: webdriver.Chrome, base_url: str, evidence: Path) -> None:
        self.driver, self.base_url, self.evidence = driver, base_url, evidence
        evidence.mkdir(parents=True, exist_ok=True)

    def save(self, name: str) -> Path:
        """A screenshot (``name``.png) and the DOM (``name``.html) of what the page shows now."""
        shot = self.evidence / f"{name}.png"
        self.driver.save_screenshot(str(shot))
        (self.evidence / f"{name}.html").write_text(self.driver.page_source)
        return shot

    def fail(self, name: str, message: str) -> AssertionError:
        shot = self.save(f"failed-{name}")
        return AssertionError(
            f"{message} (screenshot {shot}, page source {shot.with_suffix('.html')})"
        )

    def wait(self, condition: Callable[[Any], Any], timeout_s: float, what: What, name: str) -> Any:
        """What ``condition(driver)`` returns once it is truthy; a timeout is an assertion error
        naming ``what`` (a callable: read after the timeout, so it can say what was seen) and
        the saved evidence."""
        waiting = WebDriverWait(
            self.driver,
            timeout_s,
            poll_frequency=0.25,
            ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
        )
        try:
            return waiting.until(condition)
        except TimeoutException:
            described = what() if callable(what) else what
            raise self.fail(
                name, f"timed out after {timeout_s} s waiting for {described}"
            ) from None

    def load(
        self, path: str, ready: Callable[[Any], Any], timeout_s: float, what: What, name: str
    ) -> tuple[Any, float]:
        """Open ``path`` and wait until ``ready``: its value and the seconds from the request
        until then (the page is a single-page app: the load event says nothing)."""
        started = time.perf_counter()
        self.driver.get(self.base_url + path)
        value = self.wait(ready, timeout_s, what, name)
        return value, time.perf_counter() - started

    def image_size(self, image: WebElement) -> tuple[int, int]:
        """The decoded size of an <img>: (0, 0) until the browser has decoded it."""
        size = self.driver.execute_script(
            "return arguments[0].complete ? [arguments[0].naturalWidth, arguments[0].naturalHeight]"
            " : [0, 0];",
            image,
        )
        return int(size[0]), int(size[1])

    def click(self, element: WebElement) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()


@contextmanager
def headless_chromium(base_url: str, evidence: Path) -> Iterator[Browser]:
    chromium, chromedriver = _find(CHROMIUM), _find(CHROMEDRIVER)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container: Chromium's sandbox needs user namespaces
        "--disable-dev-shm-usage",
        "--disable-gpu",
        f"--window-size={WINDOW[0]},{WINDOW[1]}",
    ):
        options.add_argument(argument)
    try:
        driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    except WebDriverException as error:
        pytest.fail(f"{chromedriver} could not start {chromium}: {error.msg}; {INSTALL_HINT}")
    try:
        yield Browser(driver, base_url, evidence)
    finally:
        driver.quit()


@contextmanager
def dagster_dev(env: dict[str, str], log_path: Path) -> Iterator[int]:
    """``dagster dev`` (webserver and daemon, as ``make ui`` starts them) on 127.0.0.1 and a
    free port, yielded once the webserver answers; stopped with its process group."""
    port = free_port()
    command = [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml"]
    with log_path.open("w") as log:
        server = subprocess.Popen(
            [*command, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            if server.poll() is not None:
                pytest.fail(f"dagster dev exited: {log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/server_info", timeout=5
                ) as response:
                    return response.status == 200
            except OSError:
                return False

        try:
            wait_until(ready, 180, "the Dagster webserver")
            yield port
        finally:
            stop_group(server)
