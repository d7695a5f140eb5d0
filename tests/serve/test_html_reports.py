"""The --html reports: one self-contained file each (no src/href to anything but data:), opened in
headless Chromium with every off-loopback request sent to a dead proxy; the charts and tables hold
the numbers of the JSON the same commands print."""
import json
import re
import subprocess
import sys

import pytest
from selenium.webdriver.common.by import By

from browser import external_requests, wait
from layerwise.cli import main


def run_json(capsys, *args) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def open_report(browser, path) -> None:
    text = path.read_text()
    assert re.findall(r'(?:src|href)="(?!data:)', text) == []  # nothing to fetch
    browser.get(path.as_uri())
    wait(browser, "window.reportReady === true")
    assert external_requests(browser) == []
    assert browser.execute_script("return typeof LW === 'object' && typeof Chart === 'function'")


def cells(browser, table_id: str) -> list[list[str]]:
    rows = browser.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr")
    return [[td.text for td in row.find_elements(By.TAG_NAME, "td")] for row in rows]


def test_memory_report(browser, capsys, tmp_path):
    path = tmp_path / "memory.html"
    assert main(["memory", "tiny-gpt", "--seq", "64", "--batch", "2", "--html", str(path)]) == 0
    capsys.readouterr()
    data = run_json(capsys, "memory", "tiny-gpt", "--seq", "64", "--batch", "2", "--verdict")
    open_report(browser, path)
    rows = {r[0]: r for r in cells(browser, "components")}
    assert rows["peak"][1] == f"{data['peak_bytes']:,}"
    assert rows["activations"][1] == f"{data['components']['activations']:,}"
    assert len(cells(browser, "verdicts")) == len(data["verdicts"])
    peak = browser.execute_script("return window.reportCharts.timeline.data.datasets.at(-1).data[0].y")
    assert peak == data["peak_bytes"]
    bars = browser.execute_script("return window.reportCharts.phases.data.datasets.map(d => d.data)")
    assert max(sum(col) for col in zip(*bars)) == data["peak_bytes"]


def test_verify_report_overlays_both_timelines(browser, capsys, tmp_path):
    path = tmp_path / "verify.html"
    assert main(["verify", "tiny-gpt", "--seq", "32", "--batch", "2", "--html", str(path)]) == 0
    capsys.readouterr()
    data = run_json(capsys, "verify", "tiny-gpt", "--seq", "32", "--batch", "2")
    open_report(browser, path)
    rows = {r[0]: r for r in cells(browser, "verify")}
    assert rows["peak"][1:3] == [f"{data['analytic']['peak_bytes']:,}", f"{data['measured']['peak_bytes']:,}"]
    labels = browser.execute_script("return window.reportCharts.overlay.data.datasets.map(d => d.label)")
    assert {"analytic total", "measured total", "analytic activations", "measured activations"} <= set(labels)
    tops = browser.execute_script("return window.reportCharts.overlay.data.datasets"
                                  ".filter(d => d.label.endsWith('total')).map(d => Math.max(...d.data.map(p => p.y)))")
    assert tops == [data["analytic"]["peak_bytes"], data["measured"]["peak_bytes"]]
    assert [r[0] for r in cells(browser, "boundaries")] == ["forward_start", "forward_end", "backward_end",
                                                             "optimizer_end"]


def test_plan_report(browser, capsys, tmp_path):
    path = tmp_path / "plan.html"
    args = ["plan", "gpt2", "--gpu", "a100", "--gpus", "4", "--top", "5"]
    assert main([*args, "--html", str(path)]) == 0
    capsys.readouterr()
    data = run_json(capsys, *args)
    open_report(browser, path)
    rows = cells(browser, "plan")
    assert len(rows) == len(data["setups"]) == 5
    speeds = browser.execute_script("return window.reportCharts.throughput.data.datasets[0].data")
    assert speeds == [s["tokens_per_second"] for s in data["setups"]]


def test_run_report_with_curves_memory_and_compressed_files(browser, tmp_path):
    run = tmp_path / "run"
    done = subprocess.run([sys.executable, "-m", "layerwise.cli", "train", "digits-cnn", "--data", "digits",
                           "--max-steps", "12", "--eval-every", "6", "--log-every", "3", "--out", str(run)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    (run / "compressed").mkdir()
    (run / "compressed" / "int8.safetensors").write_bytes(b"\0" * 1000)
    path = tmp_path / "run.html"
    assert main(["report", str(run), "--html", str(path)]) == 0
    open_report(browser, path)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [(m["step"], m["loss"]) for m in metrics if m["kind"] == "train"]
    loss = browser.execute_script("return window.reportCharts.loss.data.datasets"
                                  ".map(d => [d.label, d.data.map(p => [p.x, p.y])])")
    assert dict(loss)["train loss"] == [list(p) for p in train] and len(train) >= 3
    assert "val loss" in dict(loss)
    result = json.loads((run / "result.json").read_text())
    memory = {r[0]: r for r in cells(browser, "memory")}
    assert memory["predicted"][1] == f"{result['predicted_peak_bytes']:,}"
    assert memory["measured"][1] == f"{result['measured_peak_bytes']:,}"
    assert cells(browser, "compressed")[0][:2] == ["int8.safetensors", "1,000"]


def test_report_refuses_a_directory_that_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path), "--html", str(tmp_path / "x.html")]) == 2
    assert "not a training run" in capsys.readouterr().err
