"""Fills a running apphost's OTLP receiver with spans over OTLP/JSON (not a test).

    python3 docs/bench/otlp-fill.py http://127.0.0.1:PORT [SECONDS]

PORT: the receiver's, as a service of the app sees it
(OTEL_EXPORTER_OTLP_ENDPOINT in /proc/<pid>/environ of the sender, or
`GET /v1/telemetry`). Sends batches of 20 traces of 50 spans each for SECONDS
(default 10); then `apphost traces -n 1` says what the store kept and let go,
and /proc/<apphost pid>/status its resident memory.
"""
import json, os, sys, time, urllib.request, random
endpoint = sys.argv[1]
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10
t_end = time.time() + seconds
n = 0
while time.time() < t_end:
    spans = []
    for t in range(20):
        trace = "%032x" % random.getrandbits(128)
        for s in range(50):
            spans.append({"traceId": trace, "spanId": "%016x" % (random.getrandbits(63) | 1), "name": "fill span %d" % s,
                          "kind": 1, "startTimeUnixNano": str(time.time_ns()), "endTimeUnixNano": str(time.time_ns() + 1000),
                          "attributes": [{"key": "k%d" % i, "value": {"stringValue": "v" * 20}} for i in range(4)]})
    body = {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "fill"}}]},
                               "scopeSpans": [{"spans": spans}]}]}
    req = urllib.request.Request(endpoint + "/v1/traces", data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    urllib.request.urlopen(req).read()
    n += len(spans)
print("sent", n, "spans")
