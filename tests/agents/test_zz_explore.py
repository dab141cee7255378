import json, time, logging
import httpx
import pytest
from websockets.sync.client import connect

pytestmark = pytest.mark.e2e

def test_explore(agent_gateway, triton_server):
    def metrics():
        text = httpx.get(triton_server.metrics_url if triton_server.metrics_url.endswith("/metrics") else triton_server.metrics_url + "/metrics").text
        return [l for l in text.splitlines() if "session" in l and not l.startswith("#")]
    print("\n".join(metrics()))
    t0 = time.monotonic()
    ws = connect(agent_gateway.ws_url + "/ws/session", open_timeout=30, max_size=None)
    ws.send(json.dumps({"type": "start", "voice": "ryan", "language": "english", "do_sample": False, "max_new_tokens": 2000}))
    print(ws.recv(timeout=30))
    ws.send(json.dumps({"type": "text", "text": "Hello there, this is a long session test with many words that keep going on and on. " * 5}))
    print(len(ws.recv(timeout=30)))
    ws.close()
    time.sleep(2)
    print("\n".join(metrics()))
    print(httpx.get(agent_gateway.url + "/metrics").text.count("cancelled"), [l for l in httpx.get(agent_gateway.url + "/metrics").text.splitlines() if "session" in l and not l.startswith("#")])
    print(open(triton_server.log_path).read()[-1500:])
