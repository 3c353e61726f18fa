"""The flood's clients (tests/faults/test_flood.py), run as a process of their own:

    python flood.py WEBHOOK_PORT METRICS_PORT ORG SECONDS

64 threads on loopback, each alternating M3's crafted AdmissionReview at /validate-organization
and a junk bearer token at /metrics, each on a new TLS connection (as curl in a loop makes
them), until SECONDS have passed; then prints the answers counted, as one JSON line.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import threading
import time
from collections import Counter

CLIENTS = 64
GROUP, VERSION = "orgkeeper.dev", "v1alpha1"
UNVERIFIED = ssl._create_unverified_context()  # the ports' own certificates; loopback only


def crafted_review(org: str, index: int) -> bytes:
    """M3's AdmissionReview: an update of `org` moving it from an Owner who is no member."""
    meta = {"name": org}
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(index),
                "kind": {"group": GROUP, "version": VERSION, "kind": "Organization"},
                "resource": {"group": GROUP, "version": VERSION, "resource": "organizations"},
                "name": org,
                "operation": "UPDATE",
                "userInfo": {"username": f"x{index}@flood.test"},
                "object": {"metadata": meta, "spec": {"owner": "a@flood.test"}},
                "oldObject": {"metadata": meta, "spec": {"owner": f"gone{index}@flood.test"}},
            },
        }
    ).encode()


def request(port: int, method: str, path: str, body: bytes | None, headers: dict[str, str]) -> int:
    """One request on a new TLS connection (as curl in a loop makes them); 0 if it failed."""
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=15, context=UNVERIFIED)
    try:
        connection.request(method, path, body=body, headers=headers)
        answer = connection.getresponse()
        answer.read()
        return answer.status
    except OSError:
        return 0
    finally:
        connection.close()


def flood(webhook_port: int, metrics_port: int, org: str, seconds: float) -> Counter[str]:
    """CLIENTS threads, each alternating a crafted review and a junk-token scrape."""
    until = time.monotonic() + seconds
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def client_loop(number: int) -> None:
        index = number
        while time.monotonic() < until:
            index += CLIENTS
            review = request(
                webhook_port,
                "POST",
                "/validate-organization",
                crafted_review(org, index),
                {"Content-Type": "application/json"},
            )
            scrape = request(
                metrics_port, "GET", "/metrics", None, {"Authorization": f"Bearer junk{index}"}
            )
            with lock:
                counts[f"webhook {review}"] += 1
                counts[f"metrics {scrape}"] += 1

    threads = [threading.Thread(target=client_loop, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return counts


if __name__ == "__main__":
    webhook, metrics, name, duration = sys.argv[1:5]
    print(json.dumps(flood(int(webhook), int(metrics), name, float(duration))))
