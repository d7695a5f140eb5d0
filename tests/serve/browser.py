"""Headless Chromium from Debian's packages (/usr/bin/chromium, /usr/bin/chromedriver), driven by
selenium; nothing is downloaded. Every request that leaves the loopback goes to a dead proxy, so a
page that needed the network would fail."""
import tempfile

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000",
         "--proxy-server=http://127.0.0.1:9", "--proxy-bypass-list=<-loopback>;127.0.0.1")


def chromium(user_data_dir: str | None = None) -> webdriver.Chrome:
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={user_data_dir or tempfile.mkdtemp(prefix='layerwise-chromium-')}")
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def wait(driver, script: str, timeout: float = 60):
    """Poll a JS expression until it is truthy; return its value."""
    return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: d.execute_script("return " + script))


def external_requests(driver) -> list[str]:
    """Resources the page loaded from anywhere but its own origin (or data:)."""
    return driver.execute_script("""
        const own = location.protocol === 'file:' ? 'file:' : location.origin;
        return performance.getEntriesByType('resource').map(e => e.name)
            .filter(n => !n.startsWith(own) && !n.startsWith('data:'));""")
