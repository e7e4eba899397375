"""The dashboard's benchmark (not a test): apphost's CPU and memory while its
dashboard shows an idle healthy demo stack, and under a flood of 50,000
lines/s from one child, each against a reference run in the same invocation.

    python3 dashboard/bench/run.py            # from the repository root

Needs what `.ci/setup` installs (tmux, Docker and the two images). Writes
docs/benchmarks.md.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
APPHOST = os.path.join(ROOT, "target", "debug", "apphost")
DEMO = os.path.join(ROOT, "apphost.yaml")
FLOOD = os.path.join(ROOT, "dashboard", "bench", "flood.yaml")
TICKS = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGESIZE")
IDLE_SECONDS = 30


def cpu_seconds(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def rss_bytes(pid):
    return int(open(f"/proc/{pid}/statm").read().split()[1]) * PAGE


class Run:
    """`apphost up` in a tmux window of its own (a real terminal)."""

    def __init__(self, topology, dashboard, extra_env=None):
        self.state = tempfile.mkdtemp(prefix="apphost-bench-")
        self.socket = "apphost-bench-" + os.path.basename(self.state)
        self.topology = topology
        env = " ".join(f"{k}={v}" for k, v in (extra_env or {}).items())
        mode = "" if dashboard else "--headless > /dev/null 2>&1"
        command = f"{env} APPHOST_STATE_DIR={self.state} {APPHOST} -f {topology} up --no-build --runtime docker {mode}; sleep 300"
        subprocess.run(["tmux", "-L", self.socket, "new-session", "-d", "-s", "b", "-x", "100", "-y", "30", command], check=True)
        session = os.path.join(self.state, "session.json")
        deadline = time.time() + 60
        while not os.path.exists(session):
            if time.time() > deadline:
                sys.exit(f"no session after 60 s: {self.screen()}")
            time.sleep(0.2)
        time.sleep(0.2)
        self.pid = json.load(open(session))["pid"]

    def apphost(self, *args):
        env = dict(os.environ, APPHOST_STATE_DIR=self.state)
        return subprocess.run([APPHOST, "-f", self.topology, *args], env=env, capture_output=True, text=True)

    def wait_healthy(self, limit=240):
        deadline = time.time() + limit
        while time.time() < deadline:
            out = self.apphost("ps", "--json")
            if out.returncode == 0:
                ps = json.loads(out.stdout)
                if ps and all(s["state"] == "healthy" for s in ps):
                    return
            time.sleep(0.5)
        sys.exit("the stack was not healthy in time")

    def screen(self):
        return subprocess.run(["tmux", "-L", self.socket, "capture-pane", "-p", "-t", "b"], capture_output=True, text=True).stdout

    def sample(self, seconds):
        """apphost's CPU (percent of one core) and peak resident memory over `seconds`."""
        start, began, peak = cpu_seconds(self.pid), time.time(), 0
        while time.time() - began < seconds:
            peak = max(peak, rss_bytes(self.pid))
            time.sleep(0.5)
        return (cpu_seconds(self.pid) - start) / (time.time() - began) * 100, peak

    def close(self):
        self.apphost("down")
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True)
        shutil.rmtree(self.state, ignore_errors=True)


def idle(dashboard):
    run = Run(DEMO, dashboard)
    try:
        run.wait_healthy()
        time.sleep(10)  # let the start settle
        return run.sample(IDLE_SECONDS)
    finally:
        run.close()


def flood(dashboard):
    report = tempfile.mktemp(prefix="flood-report-")
    run = Run(FLOOD, dashboard, {"FLOOD_REPORT": report})
    try:
        screens = []
        began = time.time()
        cpu_start = cpu_seconds(run.pid)
        peak = 0
        while not os.path.exists(report) and time.time() - began < 60:
            peak = max(peak, rss_bytes(run.pid))
            screens.append(run.screen())
            time.sleep(0.5)
        cpu = (cpu_seconds(run.pid) - cpu_start) / (time.time() - began) * 100
        written, seconds, longest = open(report).read().split()
        distinct = len(set(screens))
        return {"cpu": cpu, "peak": peak, "rate": int(written) / float(seconds), "longest_ms": float(longest), "screens": len(screens), "distinct": distinct, "last": screens[-1] if screens else ""}
    finally:
        run.close()
        if os.path.exists(report):
            os.remove(report)


def alone():
    """The flood writing to /dev/null: the rate and blocking of the child on its own."""
    report = tempfile.mktemp(prefix="flood-report-")
    with open(os.devnull, "w") as null:
        subprocess.run([sys.executable, os.path.join(ROOT, "dashboard", "bench", "flood.py"), "50000", "10"], stdout=null, env=dict(os.environ, FLOOD_REPORT=report), check=True)
    written, seconds, longest = open(report).read().split()
    os.remove(report)
    return int(written) / float(seconds), float(longest)


def main():
    subprocess.run(["cargo", "build", "-q", "-p", "apphost", "-p", "sender", "-p", "receiver"], cwd=ROOT, check=True)
    headless_cpu, headless_rss = idle(dashboard=False)
    dash_cpu, dash_rss = idle(dashboard=True)
    ref_rate, ref_longest = alone()
    headless_flood = flood(dashboard=False)
    dash_flood = flood(dashboard=True)
    mb = lambda b: b / 1024 / 1024
    import re
    dropped = re.search(r"(\d+) dropped", dash_flood["last"])
    dropped = f"{int(dropped.group(1)):,} lines dropped" if dropped else "nothing dropped"
    text = f"""## The dashboard

Reproduce from the repository root (after `.ci/setup`): `python3 dashboard/bench/run.py`.
Each figure is measured against a reference run in the same invocation; the
ratio is what carries over to another machine. Debug build, docker runtime,
{os.cpu_count()} cores, measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.

### Idle: the demo stack healthy, nothing happening ({IDLE_SECONDS} s after 10 s of settling)

| apphost | CPU (% of one core) | peak resident memory |
|---|---|---|
| `up --headless` (reference) | {headless_cpu:.2f} % | {mb(headless_rss):.1f} MB |
| `up` with the dashboard | {dash_cpu:.2f} % | {mb(dash_rss):.1f} MB |
| ratio dashboard / headless | {dash_cpu / max(headless_cpu, 0.01):.2f} | {dash_rss / headless_rss:.2f} |

Goal: under 2 % of one core and under 50 MB resident with the dashboard.

### Flood: one child writing 50,000 lines/s for 10 s (`dashboard/bench/flood.yaml`)

| the child writes to | its rate | longest blocked write | apphost CPU | apphost peak memory |
|---|---|---|---|---|
| `/dev/null` (reference) | {ref_rate:,.0f} lines/s | {ref_longest:.1f} ms | - | - |
| apphost `up --headless`, output to /dev/null | {headless_flood['rate']:,.0f} lines/s | {headless_flood['longest_ms']:.1f} ms | {headless_flood['cpu']:.1f} % | {mb(headless_flood['peak']):.1f} MB |
| apphost `up` with the dashboard | {dash_flood['rate']:,.0f} lines/s | {dash_flood['longest_ms']:.1f} ms | {dash_flood['cpu']:.1f} % | {mb(dash_flood['peak']):.1f} MB |
| ratio dashboard / reference rate | {dash_flood['rate'] / ref_rate:.3f} | | | |

The screen kept moving: {dash_flood['distinct']} different screens in {dash_flood['screens']} captures
taken every 0.5 s during the flood. The logs pane counted what the bounded
store dropped: `{dropped}`.
"""
    out = os.path.join(ROOT, "docs", "benchmarks.md")
    write_section(out, text)
    print(text)


BEGIN = "<!-- dashboard bench: begin (written by dashboard/bench/run.py; edits here are replaced) -->"
END = "<!-- dashboard bench: end -->"


def write_section(path, text):
    """Puts text between this benchmark's markers in path, keeping the rest
    (`apphost bench` writes its own section of the same file); at the end
    when the markers are not there yet."""
    old = open(path).read() if os.path.exists(path) else ""
    section = f"{BEGIN}\n{text}{END}\n"
    a, b = old.find(BEGIN), old.find(END)
    if a != -1 and b > a:
        new = old[:a] + section + old[b + len(END):].lstrip("\n")
    else:
        new = (old.rstrip("\n") + "\n\n" if old else "") + section
    open(path, "w").write(new)


if __name__ == "__main__":
    main()
