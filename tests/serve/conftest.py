"""A layerwise server on a free loopback port, in a thread of the test process, and a tiny client."""
import http.client
import json
import threading

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))  # tests/serve/browser.py

from layerwise.serve.server import make_server


class Client:
    def __init__(self, port: int):
        self.port = port

    def request(self, method: str, path: str, body: bytes | None = None, headers=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def post(self, endpoint: str, payload) -> tuple[int, dict]:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        status, data = self.request("POST", f"/api/{endpoint}", body, {"Content-Type": "application/json"})
        return status, json.loads(data)


@pytest.fixture(scope="module")
def server():
    srv = make_server("127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="module")
def client(server):
    return Client(server.server_address[1])


@pytest.fixture(scope="module")
def browser():
    from browser import chromium

    driver = chromium()
    yield driver
    driver.quit()
