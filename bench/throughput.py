"""Throughput, latency under a fixed load, memory and scaling of `webhook serve` against a do-nothing baseline.

    .venv/bin/python bench/throughput.py [--quick] [--policies DIR] [--json FILE] [--profile FILE.json]

One run, each server a fresh process on a free loopback port, one worker, HTTPS with keep-alive:

1. the baseline (bench/baseline_app.py: FastAPI + uvicorn + uvloop + httptools with the server's TLS
   setup; POST /validate parses the body with orjson and allows) and the real server (`python -m webhook
   serve --workers 1 --no-watch --log-level warning` with the shipped `policies/`) are driven by `wrk`
   (bench/wrk_reviews.lua) with a mix of 200 prepared AdmissionReviews (bench/reviews.py); the real server
   gets each body on /mutate then /validate, the baseline twice on /validate. Saturation throughput: wrk
   `-t2 -c16` for 15 s after a 3 s warm-up. Before that, each body is sent once to the real server's
   /validate and /mutate and the share of each outcome (allowed, denied, patched) is printed.
2. latency at a fixed offered rate (open loop: 500 and 1,000 requests/s, bench/openloop.mjs on Node.js):
   p50/p90/p99 from each request's scheduled send time (coordinated-omission-correct).
3. RSS (VmRSS) of the serving process idle (ready, before any review) and its peak under saturation; with
   subscribers also the `webhook deliver` process.
4. the same saturation with two event subscribers (a healthy receiver on loopback in a process of its own,
   and a sink whose port refuses connections).
5. per-request cost against the number of policies (5 matching Pod policies plus 5, 45, 195 for other
   resources) and against the object size (2 KB, 20 KB, 200 KB): sequential requests over one keep-alive
   connection per server (http.client), a fresh server per configuration, the servers of one comparison
   running at once and measured in interleaved blocks (the machine's drift reaches them alike).

Prints the machine, a table and a final JSON line (also written to --json FILE). --quick: short durations,
for a smoke run (numbers not meaningful). --profile FILE.json: one more saturation run of the real server
with py-spy recording it (speedscope format) and a summary (bench/profile_summary.py).
Needs `wrk` (Debian/Ubuntu: apt-get install -y wrk) and `node` (for the open-loop part; skipped without).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

import profile_summary  # noqa: E402  (bench/ is not a package)
import reviews  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = {"ratio": 0.6, "p99_ms_at_1000": 5.0, "rss_mib": 128, "subscribers_cost": 0.10, "policies_cost": 0.05}


@dataclass
class Durations:
    warmup: float = 3
    saturation: float = 15
    openloop: float = 15
    openloop_warmup: float = 2
    profile: float = 10
    blocks: int = 20  # sequential parts: blocks of `block` requests per server, interleaved
    block: int = 100
    sequential_warmup: int = 300

    @classmethod
    def quick(cls) -> Durations:
        return cls(warmup=1, saturation=3, openloop=3, openloop_warmup=1, profile=3, blocks=4, block=50,
                   sequential_warmup=50)


# --- processes ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB (empty when the process is gone)."""
    values = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
    return values


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def machine_busy() -> tuple[float, float]:
    """CPU seconds all cores spent not idle so far, and of those in interrupts (irq, softirq), from /proc/stat."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS, (fields[5] + fields[6]) / CLOCK_TICKS


def all_processes() -> dict[int, tuple[int, int, float]]:
    """pid -> (parent pid, start time, CPU seconds so far) of every process now."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                found[int(entry.name)] = (int(fields[1]), int(fields[19]),
                                          (int(fields[11]) + int(fields[12])) / CLOCK_TICKS)
    return found


class CpuWindow:
    """CPU use over a stretch of time, in % of one core: each watched process; "client": this process and the
    children it reaped meanwhile (wrk, node); "kernel": interrupts and softirq (the loopback network work)
    and kernel threads; "others": everything else, i.e. processes that are not this benchmark's (someone
    else's tests on a shared machine), including short-lived ones seen only in the machine's total."""

    def __init__(self, watched: dict[str, int]) -> None:
        self.watched = watched
        self.before = {name: cpu_seconds(pid) for name, pid in watched.items()}
        self.processes = all_processes()
        self.usage = (resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF))
        self.busy = machine_busy()
        self.started = time.monotonic()

    def stop(self) -> dict[str, float]:
        wall = time.monotonic() - self.started
        busy_now = machine_busy()
        busy, interrupts = busy_now[0] - self.busy[0], busy_now[1] - self.busy[1]
        now = all_processes()
        cpu = {name: round(100 * (cpu_seconds(pid) - self.before[name]) / wall, 1)
               for name, pid in self.watched.items()}
        usage = (resource.getrusage(resource.RUSAGE_CHILDREN), resource.getrusage(resource.RUSAGE_SELF))
        client = sum((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                     for before, after in zip(self.usage, usage, strict=True))
        cpu["client"] = round(100 * client / wall, 1)
        ours = {os.getpid()}
        changed = True  # this process's descendants
        while changed:
            changed = False
            for pid, (parent, _, _) in now.items():
                if pid not in ours and parent in ours:
                    ours.add(pid)
                    changed = True
        kernel_threads = seen = 0.0
        for pid, (parent, started, seconds) in now.items():
            if pid in ours:
                continue
            previous = self.processes.get(pid)
            used = seconds - (previous[2] if previous is not None and previous[1] == started else 0.0)
            if pid == 2 or parent == 2:  # kthreadd and its children, the kernel threads
                kernel_threads += used
            else:
                seen += used
        cpu["kernel"] = round(100 * (interrupts + kernel_threads) / wall, 1)
        # processes seen at both ends, or the busy time nothing else explains (short-lived processes), whichever
        # is more (softirq time may be counted in a process's time as well as in /proc/stat's softirq)
        cpu["others"] = round(max(100 * seen / wall, 100 * busy / wall - sum(cpu.values())), 1)
        return cpu


QUIET = {"limit_s": 180.0, "threshold": 15.0, "retries": 3}  # set from the command line


def wait_for_quiet(watched: dict[str, int]) -> float:
    """Wait (up to QUIET["limit_s"]) until other people's processes use less than QUIET["threshold"] % of one
    core over one second: on a shared machine their test runs would be measured too. Returns the wait."""
    started = time.monotonic()
    told = False
    while True:
        window = CpuWindow(watched)
        time.sleep(1.0)
        others = window.stop()["others"]
        waited = time.monotonic() - started
        if others < QUIET["threshold"]:
            if told:
                print(f"  machine quiet again after {waited:.0f} s", flush=True)
            return waited
        if waited > QUIET["limit_s"]:
            print(f"  warning: other processes still use {others:.0f}% of a core; measuring anyway", flush=True)
            return waited
        if not told:
            print(f"  waiting for the machine to be quiet (other processes use {others:.0f}% of a core)",
                  flush=True)
            told = True


T = typing.TypeVar("T")


def measured(what: str, watched: dict[str, int], run: Callable[[], T], cpu_of: Callable[[T], dict[str, float]]
             ) -> T:
    """Run a measurement when the machine is quiet; when other processes took more than the threshold
    meanwhile, once more (up to QUIET["retries"] times), keeping the run they disturbed least."""
    attempts: list[tuple[float, T]] = []
    for attempt in range(int(QUIET["retries"]) + 1):
        wait_for_quiet(watched)
        result = run()
        cpu = cpu_of(result)
        attempts.append((cpu["others"], result))
        if cpu["others"] < QUIET["threshold"]:
            break
        if attempt < QUIET["retries"]:
            print(f"  {what}: other processes used {cpu['others']:.0f}% of a core meanwhile; measuring again",
                  flush=True)
    return min(attempts, key=lambda pair: pair[0])[1]


def children(pid: int) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append((int(entry.name), command))
    return found


def mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    ca_file: Path
    log_path: Path
    log: Any = None

    def processes(self) -> dict[str, int]:
        """The processes to watch: the serving process, and `webhook deliver` when there is one (worker
        processes of --workers N > 1 would be listed as worker-N)."""
        found = {"server": self.process.pid}
        workers = 0
        for pid, command in children(self.process.pid):
            if " deliver" in command:
                found["deliverer"] = pid
            elif "multiprocessing" in command or "spawn" in command:
                workers += 1
                found[f"worker-{workers}"] = pid
        return found

    def connection(self, timeout: float = 30) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.log is not None:
            self.log.close()


SOURCE = {"dir": ROOT}  # where the `webhook` package the servers run comes from (see --source)


def start_server(name: str, base: Path, *, baseline: bool = False, policies: Path | None = None,
                 subscribers: Path | None = None) -> Server:
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cert_dir = base / "certs"
    if baseline:
        command = [sys.executable, str(BENCH / "baseline_app.py"), "--port", str(port), "--cert-dir", str(cert_dir)]
    else:
        command = [sys.executable, "-m", "webhook", "serve", "--port", str(port), "--policies", str(policies),
                   "--workers", "1", "--no-watch", "--log-level", "warning", "--cert-dir", str(cert_dir),
                   "--state-dir", str(base / "state")]
        if subscribers is not None:
            command += ["--subscribers", str(subscribers)]
    log_path = base / "server.log"
    log = log_path.open("wb")
    source = SOURCE["dir"]
    process = subprocess.Popen(command, cwd=source, stdout=log, stderr=subprocess.STDOUT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1",
                                    "PYTHONPATH": os.pathsep.join(filter(None, [str(source),
                                                                                os.environ.get("PYTHONPATH")]))})
    server = Server(name, process, port, cert_dir / "ca.crt", log_path, log)
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = server.connection(timeout=5)
            connection.request("GET", "/readyz")
            reply = connection.getresponse()
            reply.read()
            connection.close()
            if reply.status == 200:
                return server
        except (OSError, http.client.HTTPException):
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise SystemExit(f"{name} did not become ready:\n{log_path.read_text()}")
        time.sleep(0.1)


@contextlib.contextmanager
def running(name: str, base: Path, **options: Any) -> Iterator[Server]:
    server = start_server(name, base, **options)
    try:
        yield server
    finally:
        server.stop()


# --- load -------------------------------------------------------------------------------------------------


def require_wrk() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise SystemExit("bench/throughput.py needs wrk (HTTP load generator), which is not installed.\n"
                         "Install it with:  apt-get install -y wrk   (Debian/Ubuntu; macOS: brew install wrk)")
    return found


@dataclass
class LoadResult:
    wrk: dict[str, Any]
    rps: float
    cpu_percent: dict[str, float]  # of one core, per watched process, and "client" (wrk)
    rss_peak_kib: dict[str, int] = field(default_factory=dict)
    hwm_kib: dict[str, int] = field(default_factory=dict)


def run_wrk(server: Server, bodies: Path, mode: str, *, duration: float, threads: int, connections: int,
            extra: dict[str, int] | None = None) -> LoadResult:
    watched = server.processes() | (extra or {})
    command = [require_wrk(), f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration))}s", "--timeout", "10s",
               "-s", str(BENCH / "wrk_reviews.lua"), f"https://127.0.0.1:{server.port}", "--", str(bodies), mode,
               uuid.uuid4().hex[:7]]
    window = CpuWindow(watched)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peaks: dict[str, int] = collections.defaultdict(int)
    while process.poll() is None:
        for name, pid in watched.items():
            peaks[name] = max(peaks[name], proc_status(pid).get("VmRSS", 0))
        time.sleep(0.2)
    output, errors = process.communicate()
    cpu = window.stop()
    line = next((text for text in output.splitlines() if text.startswith("WRKJSON ")), None)
    if process.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed ({process.returncode}):\n{output}\n{errors}")
    result = json.loads(line.removeprefix("WRKJSON "))
    failures = sum(result[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors",
                                           "timeouts"))
    if failures:
        print(f"  warning: wrk counted {failures} errors or non-2xx answers on {server.name}: {result}")
    hwm = {name: proc_status(pid).get("VmHWM", 0) for name, pid in watched.items()}
    return LoadResult(wrk=result, rps=round(result["requests"] / (result["duration_us"] / 1e6), 1),
                      cpu_percent=cpu, rss_peak_kib=dict(peaks), hwm_kib=hwm)


def run_openloop(server: Server, bodies: Path, mode: str, *, rate: int, duration: float, warmup: float,
                 connections: int) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        raise SystemExit("the open-loop part needs Node.js (node), which is not installed; "
                         "install it (apt-get install -y nodejs) or run with --skip openloop")
    config = {"port": server.port, "bodies": str(bodies), "mode": mode, "rate": rate, "duration": duration,
              "warmup": warmup, "connections": connections}
    window = CpuWindow(server.processes())
    done = subprocess.run([node, str(BENCH / "openloop.mjs"), json.dumps(config)], capture_output=True, text=True,
                          timeout=duration + warmup + 120, check=False)
    cpu = window.stop()
    if done.returncode != 0:
        raise SystemExit(f"openloop.mjs failed:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_percent"] = cpu
    return result


def classify(server: Server, mix: list[reviews.Review]) -> dict[str, Any]:
    """Send each body once to /validate and once to /mutate; count what the server answered."""
    counts: dict[str, collections.Counter[str]] = {"/validate": collections.Counter(),
                                                   "/mutate": collections.Counter()}
    by_case: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    connection = server.connection()
    for review in mix:
        for path in ("/mutate", "/validate"):
            connection.request("POST", path, body=review.body, headers={"content-type": "application/json"})
            reply = connection.getresponse()
            data = reply.read()
            if reply.status != 200:
                outcome = f"HTTP {reply.status}"
            else:
                answer = json.loads(data)["response"]
                outcome = ("denied" if not answer["allowed"] else "patched" if answer.get("patch") else "allowed")
                if answer.get("warnings"):
                    outcome += "+warnings"
            counts[path][outcome] += 1
            by_case[f"{review.case} {path}"][outcome] += 1
    connection.close()
    total = len(mix)
    return {path: {outcome: round(count / total, 3) for outcome, count in sorted(counter.items())}
            for path, counter in counts.items()} | {
        "by_case": {case: dict(counter) for case, counter in sorted(by_case.items())}}


def percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def interleaved(targets: dict[str, tuple[Server, bytes]], *, path: str, blocks: int, block: int, warmup: int
                ) -> dict[str, Any]:
    """Sequential requests (one after another over one keep-alive connection per server, http.client as in
    bench/latency.py) to several servers in turn: `blocks` rounds of `block` requests to each, the order
    rotating, so that the machine's drifts (other tenants, frequency) reach every server alike. Per server:
    median and p99 of all its requests, and each block's median (for paired comparisons)."""
    watched = {f"{name}:{process}": pid for name, (server, _) in targets.items()
               for process, pid in server.processes().items()}
    return measured("sequential " + ", ".join(targets), watched,
                    lambda: _interleaved(targets, path=path, blocks=blocks, block=block, warmup=warmup),
                    lambda result: result["cpu_percent"])


def _interleaved(targets: dict[str, tuple[Server, bytes]], *, path: str, blocks: int, block: int, warmup: int
                 ) -> dict[str, Any]:
    headers = {"content-type": "application/json"}
    connections = {name: server.connection() for name, (server, _) in targets.items()}

    def send(name: str) -> float:
        server, body = targets[name]
        connection = connections[name]
        started = time.perf_counter()
        connection.request("POST", path, body=body, headers=headers)
        reply = connection.getresponse()
        data = reply.read()
        elapsed = (time.perf_counter() - started) * 1000
        if reply.status != 200:
            raise SystemExit(f"{server.name}: HTTP {reply.status} {data[:500]!r}")
        return elapsed

    for name in targets:
        for _ in range(warmup):
            send(name)
    window = CpuWindow({f"{name}:{process}": pid for name, (server, _) in targets.items()
                        for process, pid in server.processes().items()})
    latencies: dict[str, list[float]] = {name: [] for name in targets}
    block_medians: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for number in range(blocks):
        order = names[number % len(names):] + names[:number % len(names)]
        for name in order:
            measured_block = [send(name) for _ in range(block)]
            latencies[name].extend(measured_block)
            block_medians[name].append(statistics.median(measured_block))
    cpu = window.stop()
    for connection in connections.values():
        connection.close()
    found: dict[str, Any] = {"cpu_percent": {"others": cpu["others"], "kernel": cpu["kernel"],
                                             "client": cpu["client"]}}
    for name in names:
        ordered = sorted(latencies[name])
        found[name] = {"requests": len(ordered), "p50_ms": round(statistics.median(ordered), 3),
                       "p99_ms": round(percentile(ordered, 0.99), 3),
                       "block_medians_ms": [round(value, 3) for value in block_medians[name]]}
    return found


def paired_change(found: dict[str, Any], name: str, reference: str) -> float:
    """Median over blocks of (block median of `name` / block median of `reference` in the same block round) - 1."""
    ratios = [value / base for value, base in zip(found[name]["block_medians_ms"],
                                                  found[reference]["block_medians_ms"], strict=True)]
    return round(float(statistics.median(ratios)) - 1, 4)


# --- the event subscribers ---------------------------------------------------------------------------------


def run_receiver(port: int) -> None:
    """The healthy subscriber: an aiohttp app that answers 200 to every POST (a process of its own)."""
    from aiohttp import web

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=200)

    app = web.Application()
    app.router.add_post("/events", accept)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def write_subscribers(path: Path, healthy_port: int) -> None:
    down = free_port()  # nothing listens there: connection refused
    path.write_text(json.dumps({"subscribers": [
        {"name": "healthy", "sink": f"http://127.0.0.1:{healthy_port}/events",
         "filters": [{"prefix": {"type": "dev.webhook.admission."}}]},
        {"name": "down", "sink": f"http://127.0.0.1:{down}/events",
         "filters": [{"prefix": {"type": "dev.webhook.admission."}}]},
    ]}, indent=1))


def event_metrics(server: Server) -> dict[str, float]:
    connection = server.connection()
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    wanted = {}
    for line in text.splitlines():
        match = re.match(r'(webhook_(?:events_\w+_total|outbox_backlog))(\{[^}]*\})? ([0-9.e+]+)$', line)
        if match:
            wanted[f"{match.group(1)}{match.group(2) or ''}"] = float(match.group(3))
    return wanted


# --- machine -------------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("uvicorn", "uvloop", "httptools", "fastapi", "starlette", "pydantic", "orjson",
                    "cel-expr-python"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[package] = metadata.version(package)
    wrk = shutil.which("wrk")
    node = shutil.which("node")
    return {
        "cpu": model, "cores": os.cpu_count(), "cores_usable": len(os.sched_getaffinity(0)),
        "python": platform.python_version(), "kernel": platform.release(), "openssl": ssl.OPENSSL_VERSION,
        "wrk": subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False).stdout.splitlines()[0]
        if wrk else None,
        "node": subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
        if node else None,
        "packages": versions,
    }


# --- the parts ------------------------------------------------------------------------------------------


def saturation(server: Server, bodies: Path, mode: str, durations: Durations, arguments: argparse.Namespace,
               extra: dict[str, int] | None = None) -> LoadResult:
    run_wrk(server, bodies, mode, duration=durations.warmup, threads=arguments.threads,
            connections=arguments.connections)
    return measured(f"{server.name} saturation", server.processes() | (extra or {}),
                    lambda: run_wrk(server, bodies, mode, duration=durations.saturation, threads=arguments.threads,
                                    connections=arguments.connections, extra=extra),
                    lambda result: result.cpu_percent)


def idle_rss(server: Server) -> dict[str, int]:
    time.sleep(1.0)  # let the deliverer finish starting
    return {name: proc_status(pid).get("VmRSS", 0) for name, pid in server.processes().items()}


def openloops(server: Server, bodies: Path, mode: str, durations: Durations, arguments: argparse.Namespace
              ) -> dict[str, Any]:
    found = {}
    if shutil.which("node") is None:
        print("  node is not installed: open-loop latency skipped (install Node.js to measure it)")
        return {}
    for rate in arguments.rates:
        def run(rate: int = rate) -> dict[str, Any]:
            return run_openloop(server, bodies, mode, rate=rate, duration=durations.openloop,
                                warmup=durations.openloop_warmup, connections=arguments.open_connections)

        result = measured(f"{server.name} open loop {rate}/s", server.processes(), run,
                          lambda result: dict(result["cpu_percent"]))
        found[str(rate)] = result
        print(f"  {server.name} open loop {rate}/s: {json.dumps(result)}", flush=True)
    return found


def profile(server: Server, bodies: Path, durations: Durations, arguments: argparse.Namespace, output: Path
            ) -> dict[str, Any]:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    # The server's threads on the last core, wrk on the others: py-spy counts a thread that is runnable but
    # waiting for a core as busy where it was preempted, so a shared core would blur the profile.
    cores = sorted(os.sched_getaffinity(0))
    server_cores, client_cores = ({cores[-1]}, set(cores[:-1])) if len(cores) > 1 else (set(cores), set(cores))
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), server_cores)
    load = subprocess.Popen(
        [require_wrk(), f"-t{arguments.threads}", f"-c{arguments.connections}",
         f"-d{round(durations.profile) + 4}s", "-s", str(BENCH / "wrk_reviews.lua"),
         f"https://127.0.0.1:{server.port}", "--", str(bodies), "split", uuid.uuid4().hex[:7]],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: os.sched_setaffinity(0, client_cores))
    time.sleep(1.5)
    command = [py_spy, "record", "--pid", str(server.process.pid), "--rate", str(arguments.profile_rate),
               "--duration", str(round(durations.profile)), "--format", "speedscope", "--output", str(output),
               "--nonblocking"]
    if arguments.profile_native:
        command.append("--native")
        command.remove("--nonblocking")  # native unwinding needs the process paused
    subprocess.run(command, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    load.wait()
    for task in Path(f"/proc/{server.process.pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task.name), set(cores))
    if not output.exists():
        print(f"  py-spy wrote no profile ({' '.join(command)})")
        return {}
    return profile_summary.summarize(output)


def policy_scaling(base: Path, durations: Durations, totals: list[int], matching: int) -> dict[str, Any]:
    """One fresh server per policy count, all running at once and measured interleaved (see interleaved)."""
    body = reviews.scaling_review()
    with contextlib.ExitStack() as stack:
        targets = {}
        for total in totals:
            directory = base / f"policies-{total}"
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "generated.yaml").write_text(reviews.scaling_policies(total, matching))
            targets[str(total)] = (stack.enter_context(running(f"{total} policies", base / f"scaling-{total}",
                                                               policies=directory)), body)
        found = interleaved(targets, path="/validate", blocks=durations.blocks, block=durations.block,
                            warmup=durations.sequential_warmup)
    reference = str(totals[0])
    for total in totals:
        row = found[str(total)]
        row["matching"] = matching
        row["p50_vs_first"] = round(row["p50_ms"] / found[reference]["p50_ms"] - 1, 4)
        row["paired_vs_first"] = paired_change(found, str(total), reference)
        print(f"  policies {total} ({matching} matching): p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
              f"paired change against {reference}: {row['paired_vs_first']:+.1%}", flush=True)
    return found


def size_scaling(base: Path, durations: Durations, sizes: list[int], policies: Path) -> dict[str, Any]:
    """Per size: a fresh baseline and a fresh real server, measured interleaved."""
    found = {}
    for size in sizes:
        body = reviews.sized_pod_review(size)
        blocks = durations.blocks if size < 100_000 else max(2, durations.blocks // 4)
        with running(f"baseline {size}", base / f"size-baseline-{size}", baseline=True) as baseline, \
                running(f"real {size}", base / f"size-real-{size}", policies=policies) as real:
            measured_size = interleaved({"baseline": (baseline, body), "real": (real, body)}, path="/validate",
                                        blocks=blocks, block=durations.block, warmup=durations.sequential_warmup)
        row: dict[str, Any] = {"body_bytes": len(body), "object_bytes": len(json.dumps(
            json.loads(body)["request"]["object"], separators=(",", ":"))), **measured_size}
        row["real_minus_baseline_p50_ms"] = round(row["real"]["p50_ms"] - row["baseline"]["p50_ms"], 3)
        found[str(size)] = row
        print(f"  size {size}: object {row['object_bytes']} B, baseline p50 {row['baseline']['p50_ms']} ms, "
              f"real p50 {row['real']['p50_ms']} ms", flush=True)
    return found


# --- report ---------------------------------------------------------------------------------------------


def _ms(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.0f}" if value >= 1000 else f"{value:.1f}" if value >= 100 else f"{value:.2f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def report(results: dict[str, Any]) -> None:
    m = results["machine"]
    print("\n" + "=" * 100)
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['cores_usable']} usable), Python {m['python']}, "
          f"{m['openssl']}, {m['wrk']}, node {m['node']}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in m["packages"].items()))
    print(f"webhook code: {results['settings']['source']}")
    mix = results["mix"]
    print(f"\nreview mix: {mix['count']} bodies; objects {mix['object_kib']['min']}-{mix['object_kib']['max']} KiB "
          f"(median {mix['object_kib']['median']}, mean {mix['object_kib']['mean']}); bodies mean "
          f"{mix['body_kib_mean']} KiB; kinds {mix['kinds']}; operations {mix['operations']}; cases {mix['cases']}")
    if "policy_set" in results:
        policy_set = results["policy_set"]
        print(f"policy set: {policy_set['directory']}: {policy_set['policies']} policies ({policy_set['engine']}) "
              f"from {len(policy_set['files'])} files: {', '.join(policy_set['files'])}")
    if "outcomes" in results:
        outcomes = results["outcomes"]
        shares = {path: ", ".join(f"{outcome} {share:.1%}" for outcome, share in outcomes[path].items())
                  for path in ("/validate", "/mutate")}
        print(f"outcomes on the real server (each body sent once to each endpoint): /validate: {shares['/validate']}; "
              f"/mutate: {shares['/mutate']}")

    sat = results["saturation"]
    print(f"\nsaturation: wrk -t{results['settings']['threads']} -c{results['settings']['connections']}, "
          f"{results['settings']['saturation_s']} s after a {results['settings']['warmup_s']} s warm-up, "
          "HTTPS keep-alive (closed loop; wrk's latencies are under full load)")
    print("CPU columns: % of one core over the run (the machine has "
          f"{results['machine']['cores_usable'] * 100}%); wrk: wrk and this script; kernel: interrupts, softirq "
          "(loopback network) and kernel threads; others: the rest, processes not of this benchmark")
    print(f"{'server':<22}{'req/s':>7}{'wrk p50':>9}{'wrk p99':>9}{'errors':>7}{'server':>8}{'deliver':>8}"
          f"{'receiver':>9}{'wrk':>6}{'kernel':>8}{'others':>8}")

    def percent(row: dict[str, Any], key: str) -> str:
        return f"{row['cpu_percent'][key]:.0f}%" if key in row["cpu_percent"] else "-"

    for name, row in sat.items():
        print(f"{name:<22}{row['rps']:>7.0f}{row['wrk']['p50_us'] / 1000:>9.2f}{row['wrk']['p99_us'] / 1000:>9.2f}"
              f"{row['errors']:>7}{percent(row, 'server'):>8}{percent(row, 'deliverer'):>8}"
              f"{percent(row, 'receiver'):>9}{percent(row, 'client'):>6}{percent(row, 'kernel'):>8}"
              f"{percent(row, 'others'):>8}")
    ratio = results["ratio_real_baseline"]
    print(f"ratio real/baseline: {ratio:.3f} (target >= {TARGETS['ratio']})")
    if "subscribers_cost" in results:
        cost = results["subscribers_cost"] * 100
        print(f"two subscribers (one down): {abs(cost):.1f}% of the throughput {'lost' if cost >= 0 else 'gained'} "
              f"(target: less than {TARGETS['subscribers_cost'] * 100:.0f}% lost)")
        if results.get("event_metrics"):
            print(f"  events after the run: {results['event_metrics']}")

    if results.get("openloop"):
        print("\nlatency at a fixed offered rate (open loop, bench/openloop.mjs, "
              f"{results['settings']['open_connections']} keep-alive connections, "
              f"{results['settings']['openloop_s']} s each; ms from the scheduled send time; "
              "'from send' excludes queueing in the client; 'lag' = actual send - scheduled; percentiles of the "
              "answered requests; 'failed': not 200, or no answer 10 s after the schedule ended)")
        print(f"{'server':<12}{'offered':>8}{'achieved':>9}{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}"
              f"{'p99 from send':>14}{'lag p50':>8}{'lag p99':>8}{'failed':>8}{'others CPU':>11}")
        for name, rates in results["openloop"].items():
            for rate, row in rates.items():
                s = row["latency_from_schedule"]
                print(f"{name:<12}{rate:>8}{row['achieved_rps']:>9}{_ms(s['p50_ms']):>8}{_ms(s['p90_ms']):>8}"
                      f"{_ms(s['p99_ms']):>8}{_ms(s['p999_ms']):>8}{_ms(s['max_ms']):>8}"
                      f"{_ms(row['latency_from_send']['p99_ms']):>14}{_ms(row['send_lag']['p50_ms']):>8}"
                      f"{_ms(row['send_lag']['p99_ms']):>8}{row['errors'] + row['unanswered']:>8}"
                      f"{row['cpu_percent']['others']:>10.0f}%")
        print(f"target: real p99 < {TARGETS['p99_ms_at_1000']} ms at 1,000/s")

    print("\nmemory (VmRSS, MiB; one worker: uvicorn runs in the `webhook serve` process itself)")
    print(f"{'server':<26}{'process':<12}{'idle':>8}{'peak under load':>17}{'VmHWM':>8}")
    for name, rows in results["rss_mib"].items():
        for process, row in rows.items():
            print(f"{name:<26}{process:<12}{_mib(row['idle']):>8}{_mib(row['load_peak']):>17}{_mib(row['hwm']):>8}")
    print(f"target: < {TARGETS['rss_mib']} MiB per worker")

    if results.get("policy_scaling"):
        settings = results["settings"]
        print(f"\ncost of policies (sequential /validate of a 2.9 KB Pod, one keep-alive connection per server; "
              f"a fresh server per policy set, all measured interleaved in {settings['blocks']} blocks of "
              f"{settings['block']} requests each; 'paired' = median over blocks of the ratio to the 5-policy "
              "server's block in the same round)")
        print(f"{'policies':>9}{'matching':>10}{'p50 ms':>9}{'p99 ms':>9}{'p50 vs 5':>10}{'paired vs 5':>13}")
        scaling = {key: value for key, value in results["policy_scaling"].items() if key != "cpu_percent"}
        for total, row in scaling.items():
            print(f"{total:>9}{row['matching']:>10}{row['p50_ms']:>9.3f}{row['p99_ms']:>9.3f}"
                  f"{row['p50_vs_first']:>+10.1%}{row['paired_vs_first']:>+13.1%}")
        print(f"other processes meanwhile: {results['policy_scaling']['cpu_percent']['others']:.0f}% of a core; "
              f"target: 195 non-matching policies add < {TARGETS['policies_cost']:.0%} to the median")
    if results.get("size_scaling"):
        print("\ncost of object size (sequential /validate of an allowed Pod with the shipped policies; a fresh "
              "baseline and real server per size, measured interleaved)")
        print(f"{'object':>9}{'body':>9}{'base p50':>10}{'base p99':>10}{'real p50':>10}{'real p99':>10}"
              f"{'real-base p50':>15}{'others CPU':>12}")
        for row in results["size_scaling"].values():
            print(f"{row['object_bytes'] / 1000:>8.1f}K{row['body_bytes'] / 1000:>8.1f}K"
                  f"{row['baseline']['p50_ms']:>10.3f}{row['baseline']['p99_ms']:>10.3f}"
                  f"{row['real']['p50_ms']:>10.3f}{row['real']['p99_ms']:>10.3f}"
                  f"{row['real_minus_baseline_p50_ms']:>15.3f}{row['cpu_percent']['others']:>11.0f}%")
    if results.get("profile"):
        print("\nprofile of the real server under saturation (py-spy, "
              f"{results['settings']['profile_s']} s at {results['settings']['profile_rate']} Hz"
              f"{', native frames' if results['settings']['profile_native'] else ''}; "
              f"{results['settings']['profile_file']})")
        profile_summary.print_summary(results["profile"])
    print("=" * 100)


# --- main ----------------------------------------------------------------------------------------------


def mix_summary(mix: list[reviews.Review]) -> dict[str, Any]:
    sizes = [review.object_bytes / 1024 for review in mix]
    return {
        "count": len(mix),
        "object_kib": {"min": round(min(sizes), 1), "median": round(statistics.median(sizes), 1),
                       "mean": round(statistics.mean(sizes), 1), "max": round(max(sizes), 1)},
        "body_kib_mean": round(statistics.mean(len(review.body) for review in mix) / 1024, 1),
        "kinds": dict(collections.Counter(review.kind for review in mix).most_common()),
        "operations": dict(collections.Counter(review.operation for review in mix).most_common()),
        "cases": dict(collections.Counter(review.case for review in mix).most_common()),
    }


def run_all(arguments: argparse.Namespace, durations: Durations, policies: Path, source_note: str) -> dict[str, Any]:
    results: dict[str, Any] = {"machine": machine(), "settings": {
        "quick": arguments.quick, "threads": arguments.threads, "connections": arguments.connections,
        "warmup_s": durations.warmup, "saturation_s": durations.saturation, "openloop_s": durations.openloop,
        "open_connections": arguments.open_connections, "blocks": durations.blocks,
        "block": durations.block, "policies": str(arguments.policies.resolve()), "source": source_note,
        "profile_s": durations.profile,
        "profile_rate": arguments.profile_rate, "profile_native": arguments.profile_native,
        "profile_file": str(arguments.profile) if arguments.profile else None}}
    m = results["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}", flush=True)
    mix = reviews.review_mix(arguments.bodies)
    results["mix"] = mix_summary(mix)
    results["saturation"] = {}
    results["rss_mib"] = {}
    results["openloop"] = {}

    def record(name: str, server: Server, idle: dict[str, int], load: LoadResult) -> None:
        errors = sum(load.wrk[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors",
                                               "timeouts"))
        results["saturation"][name] = {"rps": load.rps, "wrk": load.wrk, "errors": errors,
                                       "cpu_percent": load.cpu_percent}
        results["rss_mib"][name] = {process: {"idle": mib(idle.get(process)),
                                              "load_peak": mib(load.rss_peak_kib.get(process)),
                                              "hwm": mib(load.hwm_kib.get(process))} for process in idle}
        print(f"  {name}: {load.rps:.0f} req/s, CPU {load.cpu_percent}, wrk p50 {load.wrk['p50_us']} us, "
              f"RSS idle {idle} KiB, peak {load.rss_peak_kib} KiB", flush=True)

    with tempfile.TemporaryDirectory(prefix="webhook-throughput-") as temporary:
        base = Path(temporary)
        bodies = base / "bodies.jsonl"
        bodies.write_bytes(b"".join(review.body + b"\n" for review in mix))
        print(f"mix: {json.dumps(results['mix'])}", flush=True)

        print("baseline (bench/baseline_app.py)", flush=True)
        with running("baseline", base / "baseline", baseline=True) as server:
            idle = idle_rss(server)
            record("baseline", server, idle, saturation(server, bodies, "validate", durations, arguments))
            if "openloop" not in arguments.skip:
                results["openloop"]["baseline"] = openloops(server, bodies, "validate", durations, arguments)

        print(f"real server (webhook serve --policies {policies})", flush=True)
        with running("real", base / "real", policies=policies) as server:
            idle = idle_rss(server)
            connection = server.connection()
            connection.request("GET", "/readyz")
            ready = json.loads(connection.getresponse().read())
            connection.close()
            results["policy_set"] = {"directory": str(arguments.policies), "policies": ready.get("policies"),
                                     "engine": ready.get("engine"), "files": sorted(
                                         str(path.relative_to(policies)) for path in policies.rglob("*")
                                         if path.is_file() and path.suffix in (".yaml", ".yml", ".py")
                                         and not path.name.startswith(("_", ".")) and ".test." not in path.name)}
            print(f"  policy set: {json.dumps(results['policy_set'])}", flush=True)
            results["outcomes"] = classify(server, mix)
            print(f"  outcomes: {json.dumps(results['outcomes'])}", flush=True)
            record("real", server, idle, saturation(server, bodies, "split", durations, arguments))
            if "openloop" not in arguments.skip:
                results["openloop"]["real"] = openloops(server, bodies, "split", durations, arguments)
            if arguments.profile:
                results["profile"] = profile(server, bodies, durations, arguments, arguments.profile.resolve())
        results["ratio_real_baseline"] = round(results["saturation"]["real"]["rps"] /
                                               results["saturation"]["baseline"]["rps"], 3)

        if "subscribers" not in arguments.skip:
            print("real server with two event subscribers (one healthy receiver, one refusing connections)", flush=True)
            receiver_port = free_port()
            receiver = subprocess.Popen([sys.executable, __file__, "--receiver", str(receiver_port)])
            try:
                subscribers = base / "subscribers.yaml"
                write_subscribers(subscribers, receiver_port)
                with running("real + 2 subscribers", base / "events", policies=policies,
                             subscribers=subscribers) as server:
                    idle = idle_rss(server)
                    record("real + 2 subscribers", server, idle,
                           saturation(server, bodies, "split", durations, arguments,
                                      extra={"receiver": receiver.pid}))
                    time.sleep(2)
                    results["event_metrics"] = event_metrics(server)
            finally:
                receiver.terminate()
                receiver.wait(timeout=10)
            results["subscribers_cost"] = round(
                1 - results["saturation"]["real + 2 subscribers"]["rps"] / results["saturation"]["real"]["rps"], 4)

        if "policies" not in arguments.skip:
            print("cost of policies (5 matching, the rest for other resources)", flush=True)
            results["policy_scaling"] = policy_scaling(base / "scaling", durations, [5, 10, 50, 200], 5)
        if "sizes" not in arguments.skip:
            print("cost of object size", flush=True)
            results["size_scaling"] = size_scaling(base / "sizes", durations, [2_000, 20_000, 200_000], policies)

    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short durations: a smoke run")
    parser.add_argument("--policies", type=Path, default=ROOT / "policies",
                        help="policy directory (policies/; copied when the run starts)")
    parser.add_argument("--source", type=Path,
                        help="directory holding the `webhook` package to run (default: a copy of this repository's "
                        "webhook/ taken when the run starts, so that edits during the run do not mix versions)")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the results as JSON to FILE")
    parser.add_argument("--profile", type=Path, metavar="FILE.json",
                        help="record the real server under saturation with py-spy (speedscope) and summarise it")
    parser.add_argument("--profile-python-only", dest="profile_native", action="store_false",
                        help="py-spy without --native (by default C frames are recorded too: OpenSSL, orjson, cel-cpp)")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second (200)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections (16)")
    parser.add_argument("--open-connections", type=int, default=8, help="open-loop keep-alive connections (8)")
    parser.add_argument("--rates", type=int, nargs="+", default=[500, 1000], help="open-loop rates (500 1000)")
    parser.add_argument("--bodies", type=int, default=200, help="reviews in the mix (200)")
    parser.add_argument("--skip", nargs="*", default=[],
                        choices=["openloop", "subscribers", "policies", "sizes"], help="leave parts out")
    parser.add_argument("--quiet-threshold", type=float, default=15.0,
                        help="before each measurement wait until other processes use less than this %% of a core, "
                        "and measure again when they used more meanwhile (15)")
    parser.add_argument("--retries", type=int, default=3, help="measure again at most this often (3)")
    parser.add_argument("--quiet-wait", type=float, default=180.0, help="wait at most this long for that (180 s)")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)  # internal: the healthy subscriber
    arguments = parser.parse_args()
    if arguments.receiver:
        run_receiver(arguments.receiver)
        return 0
    require_wrk()
    QUIET.update(limit_s=arguments.quiet_wait, threshold=arguments.quiet_threshold, retries=arguments.retries)
    durations = Durations.quick() if arguments.quick else Durations()
    revision = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=False).stdout.strip()
    changed = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "webhook", "policies"],
                             capture_output=True, text=True, check=False).stdout.splitlines()
    snapshot = Path(tempfile.mkdtemp(prefix="webhook-throughput-source-"))
    if arguments.source is None:
        shutil.copytree(ROOT / "webhook", snapshot / "webhook", ignore=shutil.ignore_patterns("__pycache__"))
        SOURCE["dir"] = snapshot
        source_note = f"copy of {ROOT / 'webhook'} (HEAD {revision}, {len(changed)} changed files under webhook/ "
        source_note += "and policies/)"
    else:
        SOURCE["dir"] = arguments.source.resolve()
        source_note = str(SOURCE["dir"])
    shutil.copytree(arguments.policies, snapshot / "policies", ignore=shutil.ignore_patterns("__pycache__"))
    policies = snapshot / "policies"
    try:
        results = run_all(arguments, durations, policies, source_note)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    report(results)
    if arguments.json:
        arguments.json.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
