"""The page in headless Chromium: it loads offline, renders the API's verdicts and the charts'
data, follows its controls, keeps its state in the URL, sorts its tables and shows bad input."""
import json
from urllib.parse import parse_qs, urlsplit

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from browser import external_requests, wait
from layerwise.commands._workload import WORKLOAD_OPTIONS
from layerwise.cost.hardware import CATALOG
from layerwise.cost.verdict import Verdict
from layerwise.report.memory import verdict_line


def load(browser, client, query: str = "") -> None:
    browser.get(f"http://127.0.0.1:{client.port}/{query}")
    wait(browser, "window.layerwise && window.layerwise.updates >= 1 && window.layerwise.pending === 0"
                  " && !window.layerwise.scheduled")


def changed(browser, before: int) -> None:
    """Wait for the page's next completed update after `before`, with none scheduled or running."""
    wait(browser, f"window.layerwise.updates > {before} && window.layerwise.pending === 0"
                  " && !window.layerwise.scheduled")


def set_value(browser, element_id: str, value: str) -> None:
    """Choose an option, or type a value in one input event (as a paste would)."""
    before = browser.execute_script("return window.layerwise.updates")
    el = browser.find_element(By.ID, element_id)
    if el.tag_name == "select":
        Select(el).select_by_value(value)
    else:
        browser.execute_script("arguments[0].value = arguments[1];"
                               "arguments[0].dispatchEvent(new Event('input', {bubbles: true}));", el, value)
    changed(browser, before)


def phase_peaks(t: dict) -> list[int]:
    best = {}
    for i, (ph, total) in enumerate(zip(t["phase"], t["total"])):
        if ph not in best or total > t["total"][best[ph]]:
            best[ph] = i
    return [best[p] for p in ("forward", "backward", "optimizer") if p in best]


def test_the_page_renders_the_api_verdict_for_every_gpu_offline(browser, client):
    load(browser, client)
    assert external_requests(browser) == []
    # a control for every workload flag (named as the API keys), and a bare block's --input
    controls = {el.get_attribute("name") for el in browser.find_elements(By.CSS_SELECTOR, "#workload [name]")}
    flags = {o.param_decls[0][2:].replace("-", "_") for _, o in WORKLOAD_OPTIONS.values()}
    assert controls == flags | {"input"}
    items = browser.find_elements(By.CSS_SELECTOR, "#verdicts li")
    assert [li.get_attribute("data-gpu") for li in items] == list(CATALOG)
    _, api = client.post("memory", {"model": "llama-2-7b", "workload": {"verdict": True}})
    assert [li.text for li in items] == [verdict_line(Verdict(**v)) for v in api["verdicts"]]
    assert [li.get_attribute("class") for li in items] == ["fits" if v["fits"] else "nofit" for v in api["verdicts"]]


def test_controls_drive_the_numbers_and_the_charts(browser, client):
    load(browser, client)
    set_value(browser, "preset", "tiny-gpt")
    set_value(browser, "w-precision", "bf16-mixed")
    set_value(browser, "w-batch", "6")
    set_value(browser, "w-seq", "64")
    workload = {"batch": 6, "seq": 64, "precision": "bf16-mixed", "verdict": True, "timeline": True}
    _, api = client.post("memory", {"model": "tiny-gpt", "workload": workload})
    page = browser.execute_script("return window.layerwise.last.memory")
    assert page == api
    assert f"{api['peak_bytes']:,} B" in browser.find_element(By.ID, "headline").text
    t = api["timeline"]
    # the stacked phase chart: each phase's highest moment, component by component
    bars = browser.execute_script("const c = window.layerwise.charts.phases.data;"
                                  "return {labels: c.labels, sets: c.datasets.map(d => [d.label, d.data])};")
    idx = phase_peaks(t)
    assert len(bars["labels"]) == 3
    for label, data in bars["sets"]:
        assert data == [t["series"][label][i] for i in idx]
    assert {label for label, _ in bars["sets"]} == {c for c in t["components"] if any(t["series"][c])}
    # the timeline chart: every moment of every component, and the peak marked where the API says
    lines = browser.execute_script("return window.layerwise.charts.timeline.data.datasets"
                                   ".map(d => [d.label, d.data.map(p => p.y), d.data.map(p => p.x)]);")
    series = {label: ys for label, ys, _ in lines}
    assert series["peak"] == [api["peak_bytes"]] and lines[-1][2] == [t["peak"]["index"]]
    for c in t["components"]:
        if any(t["series"][c]):
            assert series[c] == t["series"][c]
    query = parse_qs(urlsplit(browser.current_url).query)
    assert query["batch"] == ["6"] and query["seq"] == ["64"] and query["preset"] == ["tiny-gpt"]


def test_a_link_reproduces_the_page(browser, client):
    load(browser, client, "?preset=tiny-gpt&batch=3&seq=32&optimizer=sgd&gpu=rtx-4090&gpus=2")
    assert browser.find_element(By.ID, "w-batch").get_attribute("value") == "3"
    assert Select(browser.find_element(By.ID, "w-optimizer")).first_selected_option.text == "sgd"
    _, api = client.post("memory", {"model": "tiny-gpt", "workload": {"batch": 3, "seq": 32, "optimizer": "sgd",
                                                                      "verdict": True, "timeline": True}})
    assert browser.execute_script("return window.layerwise.last.memory.peak_bytes") == api["peak_bytes"]
    _, plan = client.post("plan", {"model": "tiny-gpt", "workload": {"gpu": "rtx-4090", "gpus": 2, "seq": 32,
                                                                     "optimizer": "sgd"}})
    rows = browser.find_elements(By.CSS_SELECTOR, "#plan tbody tr")
    assert len(rows) == len(plan["setups"]) > 0
    _, time = client.post("time", {"model": "tiny-gpt", "workload": {"gpu": "rtx-4090", "gpus": 2, "seq": 32}})
    assert browser.execute_script("return window.layerwise.last.time") == time
    assert "2 × rtx-4090" in browser.find_element(By.ID, "time").text


def test_a_pasted_spec_and_the_sortable_layer_table(browser, client):
    load(browser, client)
    set_value(browser, "samples", "1e6")  # a features model: its training time needs a sample budget
    spec = ("type: model\nname: pasted\ninput: {kind: features, shape: [64]}\ntask: classify\n"
            "body:\n  type: sequential\n  layers:\n"
            "    - {type: linear, d_in: 64, d_out: 32}\n    - {type: activation, kind: relu}\n"
            "    - {type: linear, d_in: 32, d_out: 256}\n"
            "    - {type: repeat, n_layers: 2, block: {type: linear, d_in: 256, d_out: 256}}\n"
            "    - {type: linear, d_in: 256, d_out: 10}\n")
    before = browser.execute_script("return window.layerwise.updates")
    browser.execute_script("const s = document.getElementById('spec'); s.value = arguments[0];"
                           "s.dispatchEvent(new Event('input', {bubbles: true}));", spec)
    changed(browser, before)
    assert browser.execute_script("return window.layerwise.errors") == 0, browser.find_element(By.ID, "error").text
    _, summary = client.post("summary", {"model": spec})
    params = [layer["params"] for layer in summary["layers"]]
    header = browser.find_elements(By.CSS_SELECTOR, "#layers thead th")
    column = [h.text for h in header].index("params")
    header[column].click()  # sort: largest first
    cells = browser.find_elements(By.CSS_SELECTOR, f"#layers tbody td:nth-child({column + 1})")
    assert [int(c.get_attribute("data-value")) for c in cells] == sorted(params, reverse=True)
    header[column].click()  # and back: smallest first
    cells = browser.find_elements(By.CSS_SELECTOR, f"#layers tbody td:nth-child({column + 1})")
    assert [int(c.get_attribute("data-value")) for c in cells] == sorted(params)


def test_bad_input_is_shown_next_to_its_control_and_cleared_when_fixed(browser, client):
    load(browser, client, "?preset=tiny-gpt&seq=32")
    set_value(browser, "w-batch", "0")
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed() and "--batch must be a positive integer" in error.text
    assert "invalid" in browser.find_element(By.ID, "w-batch").get_attribute("class")
    set_value(browser, "w-batch", "2")
    assert not error.is_displayed()
    assert browser.execute_script("return window.layerwise.errors") == 0
