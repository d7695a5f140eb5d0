"""The JSON API: the CLI's --json for the same flags, HTTP 400 naming the field for bad input, the
server alive after hundreds of bad requests, no torch on the cost path, no client path opened."""
import json
import random
import socket
import subprocess
import sys
import textwrap

import pytest

from layerwise.cli import main
from layerwise.commands._workload import WORKLOAD_OPTIONS
from layerwise.cost.hardware import CATALOG
from layerwise.cost.memory import training_memory
from layerwise.cost.overhead import device_overhead_bytes
from layerwise.presets import get_preset
from layerwise.serve.api import Api
from layerwise.workload import Workload


def cli_json(capsys, *args) -> dict:
    assert main([*args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("endpoint, workload, argv", [
    ("memory", {"batch": 2, "seq": 32, "precision": "bf16-mixed", "fit": 0.05, "verdict": True},
     ["--batch", "2", "--seq", "32", "--precision", "bf16-mixed", "--fit", "0.05", "--verdict"]),
    ("memory", {"mode": "infer", "new_tokens": 16, "quant": "int8"},
     ["--mode", "infer", "--new-tokens", "16", "--quant", "int8"]),
    ("flops", {"batch": 3, "checkpointing": "full", "tokens": 1e6},
     ["--batch", "3", "--checkpointing", "full", "--tokens", "1e6"]),
    ("time", {"gpu": "h100", "gpus": 8, "tokens": 3e9, "mfu": 0.5}, ["--gpu", "h100", "--gpus", "8", "--tokens", "3e9",
                                                                    "--mfu", "0.5"]),
    ("time", {"gpu": "a100", "gpus": 8, "tp": 2, "sp": True, "checkpointing": "selective", "price_per_gpu_hour": 2.5},
     ["--gpu", "a100", "--gpus", "8", "--tp", "2", "--sp", "--checkpointing", "selective", "--price-per-gpu-hour", "2.5"]),
    ("plan", {"gpu": "rtx-4090", "gpus": 2, "seq": 64}, ["--gpu", "rtx-4090", "--gpus", "2", "--seq", "64"]),
    ("summary", {"batch": 4}, ["--batch", "4"]),
])
def test_every_endpoint_answers_the_cli_json(client, capsys, endpoint, workload, argv):
    status, data = client.post(endpoint, {"model": "tiny-gpt", "workload": workload})
    assert status == 200, data
    assert data == cli_json(capsys, endpoint, "tiny-gpt", *argv)


def test_a_pasted_spec_and_a_pasted_hf_config_answer_as_the_files_do(client, capsys, tmp_path):
    hf = {"model_type": "llama", "hidden_size": 256, "intermediate_size": 688, "num_attention_heads": 4,
          "num_key_value_heads": 2, "num_hidden_layers": 2, "vocab_size": 1000, "max_position_embeddings": 512}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(hf))
    status, data = client.post("memory", {"model": json.dumps(hf), "workload": {"seq": 64}})
    assert status == 200, data
    assert data == cli_json(capsys, "memory", str(path), "--seq", "64")
    from layerwise.spec.io import dump

    spec = tmp_path / "tiny.yaml"
    dump(get_preset("tiny-gpt", n_layers=2), spec)
    status, data = client.post("flops", {"model": spec.read_text(), "workload": {"batch": 2}})
    assert status == 200, data
    assert data == cli_json(capsys, "flops", str(spec), "--batch", "2")


def test_the_api_accepts_every_workload_flag_of_the_cli():
    api = Api()
    flags = {option.param_decls[0].lstrip("-").replace("-", "_") for _, option in WORKLOAD_OPTIONS.values()}
    for endpoint in ("memory", "flops"):
        assert flags <= set(api.fields(endpoint))
    for endpoint in ("memory", "flops", "time", "plan", "summary"):
        assert not {"json", "max_level"} & set(api.fields(endpoint))


def test_verdict_batch_and_context_are_the_largest_that_fit():
    """Checked against training_memory itself: the batch (context) found fits, one more does not."""
    model, work = get_preset("tiny-gpt"), Workload(seq=64, device="cuda")
    verdicts = Api().handle("memory", json.dumps({"model": "tiny-gpt", "workload": {"seq": 64, "verdict": True}})
                            .encode())["verdicts"]
    assert [v["gpu"] for v in verdicts] == list(CATALOG)

    def need(batch, seq):
        peak = training_memory(model, work.with_(batch=batch, seq=seq)).peak_bytes
        return peak + device_overhead_bytes(peak, device="cuda").total

    for v in random.Random(0).sample(verdicts, 3):
        assert need(v["max_batch"], 64) <= v["memory_bytes"] < need(v["max_batch"] + 1, 64)
        assert v["max_seq"] == 128  # the position table's length: longer is refused, shorter fits
        assert v["fits"] == (v["spare_bytes"] >= 0)
        assert v["spare_bytes"] == v["memory_bytes"] - need(1, 64)


BAD = [
    b"", b"{", b"[]", b"null", b"\xff\xfe", b'"tiny-gpt"', b'{"model": 3}', b'{"model": ""}',
    b'{"model": "tiny-gpt", "workload": []}', b'{"model": "tiny-gpt", "extra": 1}',
    b'{"model": "no-such-preset"}', b'{"model": "../../etc/passwd"}', b'{"model": "/etc/passwd"}',
    b'{"model": "type: nosuchblock"}', b'{"model": "a: [1, 2"}', b'{"model": "{\\"model_type\\": \\"nope\\"}"}',
    b'{"model": "tiny-gpt", "workload": {"batch": "x"}}', b'{"model": "tiny-gpt", "workload": {"batch": 0}}',
    b'{"model": "tiny-gpt", "workload": {"batch": [1]}}', b'{"model": "tiny-gpt", "workload": {"batch": true}}',
    b'{"model": "tiny-gpt", "workload": {"precision": "fp8"}}', b'{"model": "tiny-gpt", "workload": {"nope": 1}}',
    b'{"model": "tiny-gpt", "workload": {"seq": 100000}}', b'{"model": "tiny-gpt", "workload": {"json": true}}',
    b'{"model": "tiny-gpt", "workload": {"verdict": "yes"}}', b'{"model": "tiny-gpt", "workload": {"zero": 7}}',
]


def test_bad_requests_get_400_naming_the_field_and_the_server_keeps_serving(client):
    rng = random.Random(0)
    for i in range(300):
        body = BAD[i % len(BAD)] if i < 2 * len(BAD) else bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
        endpoint = rng.choice(["memory", "flops", "time", "plan", "summary"])
        status, data = client.post(endpoint, body)
        assert status == 400, (body, data)
        assert set(data) == {"error", "field"} and data["error"]
    status, data = client.post("memory", b'{"model": "tiny-gpt", "workload": {"batch": 0}}')
    assert data["field"] == "workload.batch" and "--batch" in data["error"]
    status, data = client.post("time", b'{"model": "tiny-gpt", "workload": {"gpu": "h1000"}}')
    assert status == 400 and data["field"] == "workload.gpu" and "did you mean" in data["error"]
    status, data = client.post("memory", {"model": "tiny-gpt", "workload": {"batch": 2}})
    assert status == 200 and data["peak_bytes"] > 0


def test_bodies_over_1mb_are_refused_and_no_path_is_served(client):
    # refused from the header, before the body is read (the connection is then closed)
    with socket.create_connection(("127.0.0.1", client.port), timeout=30) as sock:
        sock.sendall(b"POST /api/memory HTTP/1.1\r\nHost: x\r\nContent-Length: 1048577\r\n\r\n" + b"{" * 1000)
        head, _, body = _read_all(sock).partition(b"\r\n\r\n")
    data = json.loads(body)
    assert head.startswith(b"HTTP/1.1 400") and data["field"] == "body" and "limit" in data["error"]
    assert client.post("memory", b'{"model": "' + b"x" * ((1 << 20) - 20) + b'"}')[0] == 400  # under: read, parsed
    for path in ("/../pyproject.toml", "/static/../server.py", "/index.html/..", "/etc/passwd", "/api.py"):
        status, _ = client.request("GET", path)
        assert status == 404
    assert client.request("GET", "/")[0] == 200
    assert client.post("memory", {"model": "tiny-gpt"})[0] == 200


def _read_all(sock) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_server_and_its_cost_endpoints_import_no_torch(tmp_path):
    code = textwrap.dedent("""
        import json, sys, threading, urllib.request
        from layerwise.serve.server import make_server
        srv = make_server("127.0.0.1", 0)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        port = srv.server_address[1]
        for ep, w in [("memory", {"verdict": True}), ("flops", {}), ("time", {"gpu": "h100"}),
                      ("plan", {"gpu": "a100"}), ("summary", {})]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}/api/{ep}", method="POST",
                                         data=json.dumps({"model": "tiny-gpt", "workload": w}).encode())
            assert urllib.request.urlopen(req).status == 200
        urllib.request.urlopen(f"http://127.0.0.1:{port}/").read()
        print("torch" in sys.modules)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_serve_warns_off_loopback_and_refuses_a_taken_port_in_one_line():
    proc = subprocess.Popen([sys.executable, "-m", "layerwise.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # printed once bound
        assert line.startswith("layerwise serving on http://0.0.0.0:")
        port = int(line.rsplit(":", 1)[1].split("/")[0])
        taken = subprocess.run([sys.executable, "-m", "layerwise.cli", "serve", "--port", str(port)],
                               capture_output=True, text=True, timeout=60)
        assert taken.returncode == 2 and "cannot bind" in taken.stderr and len(taken.stderr.strip().splitlines()) == 1
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "warning" in err and "0.0.0.0" in err and "no authentication" in err


def test_every_asset_of_the_page_is_package_data():
    """A clean (non-editable) install ships exactly what pyproject declares: every file the server
    or the reports read must match its package-data patterns."""
    import fnmatch
    import tomllib
    from pathlib import Path

    import layerwise.serve
    from layerwise.serve.server import STATIC

    root = Path(__file__).parents[2]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    static = Path(layerwise.serve.__file__).parent / "static"
    needed = {name for name, _ in STATIC.values()} | {"report.js", "charts.js", "chart.umd.min.js"}
    assert needed <= {p.name for p in static.iterdir()}
    for name in needed:
        assert any(fnmatch.fnmatch(f"static/{name}", pat) for pat in patterns["layerwise.serve"]), name
