"""The basic flow with python-socketio's client (run by run.sh against a running hub).

Connects alice with the default transports (polling, then the upgrade to WebSocket),
subscribes to a list and checks the ack, receives 200 publications made through
POST /api/v1/publish in order, unsubscribes, and checks that a bad token gives a
connect_error carrying close code 4500. Environment: SIO_URL, SIO_API_KEY,
SIO_TOKEN_ALICE. Exits 1 naming the failed step.
"""

import json
import os
import sys
import threading
import urllib.request

import socketio

URL = os.environ["SIO_URL"]
API_KEY = os.environ["SIO_API_KEY"]
TOKEN = os.environ["SIO_TOKEN_ALICE"]
COUNT = 200


def fail(step, why):
    print(f"FAIL python-socketio: {step}: {why}", file=sys.stderr)
    sys.exit(1)


def publish(body):
    request = urllib.request.Request(
        f"{URL}/api/v1/publish",
        data=json.dumps(body).encode(),
        headers={"authorization": f"Bearer {API_KEY}", "content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        if response.status != 200:
            fail("publish", f"HTTP {response.status}")


def main():
    client = socketio.Client(reconnection=False)
    seen = []
    done = threading.Event()

    @client.on("tick")
    def on_tick(data, meta):
        seen.append((data, meta))
        if len(seen) == COUNT:
            done.set()

    client.connect(URL, auth={"token": TOKEN}, wait_timeout=10)
    ack = client.call("subscribe", ["py.ticks", "py.other"], timeout=5)
    if ack != {"ok": True}:
        fail("subscribe a list", ack)
    for i in range(COUNT):
        publish({"channel": "py.ticks", "event": "tick", "data": {"i": i}})
    if not done.wait(20):
        fail("publications", f"got {len(seen)} of {COUNT}")
    for i, (data, meta) in enumerate(seen):
        if data != {"i": i} or meta.get("channel") != "py.ticks":
            fail("publications in order", f"#{i}: {data} {meta}")
    ack = client.call("unsubscribe", "py.ticks", timeout=5)
    if ack != {"ok": True}:
        fail("unsubscribe", ack)
    transport = client.transport()
    client.disconnect()

    refused = socketio.Client(reconnection=False)
    errors = []

    @refused.event
    def connect_error(data):
        errors.append(data)

    try:
        refused.connect(URL, auth={"token": "not-a-token"}, wait_timeout=5)
        fail("bad token", "connected")
    except socketio.exceptions.ConnectionError:
        pass
    if not errors or errors[0].get("data", {}).get("code") != 4500:
        fail("bad token", errors)
    print(f"ok python-socketio ({COUNT} publications in order over {transport})")


if __name__ == "__main__":
    main()
