"""Writes RATE lines a second to stdout for SECONDS, in 10 ms batches, and
says how long its longest write was blocked: a reader that cannot keep up
shows as a blocked writer and a rate below RATE."""
import os
import sys
import time

rate = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
batch = max(1, rate // 100)
pad = b"lorem ipsum dolor sit amet " * 2

start = time.monotonic()
tick = start
written = 0
longest = 0.0
while time.monotonic() - start < seconds:
    chunk = b"".join(b"INFO flood line %d %s\n" % (written + i, pad) for i in range(batch))
    began = time.monotonic()
    view = memoryview(chunk)
    while view:
        view = view[os.write(1, view):]
    longest = max(longest, time.monotonic() - began)
    written += batch
    tick += 0.01
    pause = tick - time.monotonic()
    if pause > 0:
        time.sleep(pause)
elapsed = time.monotonic() - start
print(
    f"flood done: wrote {written} lines in {elapsed:.2f}s ({written / elapsed:.0f} lines/s); "
    f"longest write blocked {longest * 1000:.1f} ms",
    flush=True,
)
if os.environ.get("FLOOD_REPORT"):
    with open(os.environ["FLOOD_REPORT"], "w") as report:
        report.write(f"{written} {elapsed:.3f} {longest * 1000:.2f}\n")
if "--stay" in sys.argv:
    # Stay up, so the dashboard has a running resource to show.
    time.sleep(3600)
