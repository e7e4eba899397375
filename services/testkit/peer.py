"""An independent AMQP 1.0 peer for tests (python-qpid-proton): it shares no
code with the services, so what it reads is what is really on the wire.

  peer.py drain HOST:PORT USER PASSWORD QUEUE IDLE_SECONDS
      receive and accept until IDLE_SECONDS pass without a message; print one
      JSON object per message
  peer.py send HOST:PORT USER PASSWORD QUEUE  < JSON lines
      send one message per input line: {"id", "subject", "body", "body_kind",
      "properties"}; body_kind is "data" (default), "string" or "map"
"""
import json
import sys

from proton import Message, symbol
from proton.utils import BlockingConnection
from proton._exceptions import Timeout


def connect(addr, user, password):
    return BlockingConnection(addr, user=user, password=password, allowed_mechs="PLAIN", timeout=30)


def drain(addr, user, password, queue, idle):
    conn = connect(addr, user, password)
    receiver = conn.create_receiver(queue, credit=1000)
    out = sys.stdout
    while True:
        try:
            m = receiver.receive(timeout=float(idle))
        except Timeout:
            break
        body = m.body
        if isinstance(body, (bytes, memoryview)):
            body = bytes(body).decode("utf-8", "replace")
        elif not isinstance(body, str):
            body = repr(body)
        out.write(json.dumps({
            "id": None if m.id is None else str(m.id),
            "subject": m.subject,
            "content_type": None if m.content_type is None else str(m.content_type),
            "durable": m.durable,
            "properties": {str(k): str(v) for k, v in (m.properties or {}).items()},
            "annotations": {str(k): str(v) for k, v in (m.annotations or {}).items()},
            "body_is_data": isinstance(m.body, (bytes, memoryview)),
            "body": body,
        }) + "\n")
        receiver.accept()
    out.flush()
    conn.close()


def send(addr, user, password, queue):
    conn = connect(addr, user, password)
    sender = conn.create_sender(queue)
    for line in sys.stdin:
        if not line.strip():
            continue
        spec = json.loads(line)
        kind = spec.get("body_kind", "data")
        body = spec.get("body", "")
        if kind == "data":
            body = body.encode("utf-8")
        elif kind == "map":
            body = {"not": "json"}
        m = Message(body=body, id=spec.get("id"), subject=spec.get("subject"),
                    durable=True, properties=spec.get("properties"))
        if kind == "data":
            m.content_type = symbol("application/json")
            m.inferred = True
        sender.send(m)
    conn.close()


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "drain":
        drain(*sys.argv[2:7])
    elif cmd == "send":
        send(*sys.argv[2:6])
    else:
        sys.exit("usage: peer.py drain|send ...")
