"""Benchmark: how long a webhook's change takes to land in the other app, as a user measures it.

The HubSpot simulator (N contacts, no vendor rate limit) runs in a child process on loopback.
The real daemon, `customer-sync run --config ...`, runs as its own process with two apps:
`hubspot` (the simulator; polled every `--hubspot-poll-s`, long, so that only the webhooks bring
the changes) and `warehouse`, a `sql` app on a SQLite file. The script:

1. starts the daemon and waits until the initial sync has put every contact in the warehouse,
   then stops it (SIGTERM) and starts it again, as the peer tools' harness does, so the measured
   daemon is one in its steady state; waits for `/readyz` and a few quiet seconds;
2. `--rate` times a second for `--seconds`: edits contact k's first name in the simulator to a
   unique value (a PATCH, as an edit in HubSpot), then POSTs a v3-signed
   `contact.propertyChange` webhook for it to the daemon, noting the time just before the POST;
3. a watcher thread reads the warehouse table every `--watch-ms` and notes when each value
   appears. Latency = appeared - posted.

Prints one JSON line: latency p50/p90/p99/max in ms, how many appeared and went missing, the
achieved rate, the webhook answers, and the peak RSS of the daemon process and of its whole
process tree (daemon plus the workers it starts, summed, sampled every 50 ms) while the load
ran. Both processes are ended at the end (SIGTERM, by pid).

    python bench/webhook_latency.py                                   # 2,000 contacts, 50/s for 20 s
    python bench/webhook_latency.py --rate 50 --seconds 30 --contacts 2000
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Self

from customer_sync.sandbox.hubspot import sign_v3

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from hubspot_pull import _simulator  # the seeded simulator, in a child process

SECRET = "sandbox-secret"  # the simulator's default app secret


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(xs: list[float], q: float) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    return xs[min(len(xs) - 1, max(0, round(q / 100 * (len(xs) - 1))))]


def write_config(work: Path, base_url: str, port: int, *, hubspot_poll_s: int, sql_poll_s: int) -> Path:
    cfg = work / "config.toml"
    cfg.write_text(f"""[daemon]
store_url = "sqlite:///{work}/store.db"
listen = "127.0.0.1:{port}"
log_level = "warning"
log_format = "json"

[apps.hubspot]
connector = "hubspot"
poll_interval_s = {hubspot_poll_s}

[apps.hubspot.settings]
base_url = "{base_url}"
access_token = "${{HUBSPOT_TOKEN}}"
app_secret = "${{HUBSPOT_APP_SECRET}}"

[apps.warehouse]
connector = "sql"
poll_interval_s = {sql_poll_s}

[apps.warehouse.fields]
email = "email"
first_name = "first_name"
last_name = "last_name"
phone = "phone"
company = "company"

[apps.warehouse.settings]
url = "sqlite:///{work}/warehouse.db"
table = "people"
create_table = true
column_types = {{ email = "text", first_name = "text", last_name = "text", phone = "text", company = "text" }}
""")
    return cfg


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                out.extend(int(c) for c in f.read().split())
    except OSError:
        pass
    return out


def _tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo.extend(_children(p))
    return pids


def _status_kb(pid: int, key: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class TreeRss:
    """Samples the summed RSS of a process and its descendants (Linux /proc) in a thread."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self.pid, self.every_s = pid, every_s
        self.peak_sum_kb = 0
        self.peak_procs = 0
        self.hwm_kb: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            pids = _tree(self.pid)
            self.peak_sum_kb = max(self.peak_sum_kb, sum(_status_kb(p, "VmRSS") for p in pids))
            self.peak_procs = max(self.peak_procs, len(pids))
            for p in pids:
                self.hwm_kb[p] = max(self.hwm_kb.get(p, 0), _status_kb(p, "VmHWM"))
            self._stop.wait(self.every_s)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class Daemon:
    def __init__(self, cfg: Path, work: Path, port: int) -> None:
        exe = Path(sys.executable).parent / "customer-sync"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "customer_sync"]
        env = dict(os.environ, HUBSPOT_TOKEN="bench-token", HUBSPOT_APP_SECRET=SECRET)
        self.log = open(work / "daemon.log", "a")  # noqa: SIM115 (closed in stop)
        self.port = port
        self.proc = subprocess.Popen([*cmd, "run", "--config", str(cfg)], stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env, cwd=work)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_ready(self, timeout_s: float = 120) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            if not self.alive():
                raise SystemExit(f"daemon exited rc={self.proc.returncode}")
            try:
                c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    return time.perf_counter() - t0
            except OSError:
                pass
            time.sleep(0.1)
        raise SystemExit("daemon not ready in time")

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def count(db: Path, sql: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute(sql).fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return -1


def run(a: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="cs-bench-webhook-"))
    ours, theirs = mp.Pipe()
    child = mp.get_context("spawn").Process(target=_simulator, args=(a.contacts, None, theirs))
    child.start()
    base_url = ours.recv()  # seeded and listening
    port = free_port()
    wh, store = work / "warehouse.db", work / "store.db"
    result: dict[str, Any] = {"contacts": a.contacts, "rate": a.rate, "seconds": a.seconds}
    daemon = None
    try:
        # -- phase 1: the initial sync (HubSpot polled once at start), then a clean restart
        cfg = write_config(work, base_url, port, hubspot_poll_s=a.hubspot_poll_s, sql_poll_s=a.sql_poll_s)
        t0 = time.perf_counter()
        daemon = Daemon(cfg, work, port)
        deadline = time.perf_counter() + 300
        while count(wh, "select count(*) from people") < a.contacts:
            if not daemon.alive() or time.perf_counter() > deadline:
                raise SystemExit(f"initial sync incomplete; see {work}/daemon.log")
            time.sleep(0.5)
        result["initial_sync_s"] = round(time.perf_counter() - t0, 1)
        daemon.stop()
        daemon = Daemon(cfg, work, port)
        result["restart_ready_s"] = round(daemon.wait_ready(), 2)
        while count(store, "select count(*) from outbox") > 0:  # a write left from phase 1
            time.sleep(0.2)
        time.sleep(a.settle_s)
        con = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5)
        ids = sorted(int(r[0]) for r in con.execute(
            "select app_record_id from links where app='hubspot' and state='active'"))
        con.close()

        # -- phase 2: the load, and the watcher
        seen: dict[str, float] = {}
        stop_watch = threading.Event()

        def watch() -> None:
            con = sqlite3.connect(f"file:{wh}?mode=ro", uri=True, timeout=5)
            while not stop_watch.is_set():
                try:
                    rows = con.execute("select first_name from people where first_name like 'W%'").fetchall()
                except sqlite3.Error:
                    rows = []
                now = time.perf_counter()
                for (v,) in rows:
                    if v not in seen:
                        seen[v] = now
                stop_watch.wait(a.watch_ms / 1000)
            con.close()

        watcher = threading.Thread(target=watch, daemon=True)
        sim_host, sim_port = base_url.split("//")[1].rstrip("/").split(":")
        sim = http.client.HTTPConnection(sim_host, int(sim_port), timeout=30)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        url = f"http://127.0.0.1:{port}/webhooks/hubspot"
        run_tag = str(int(time.time()))
        posted: dict[str, float] = {}
        answers: dict[int, int] = {}
        post_ms: list[float] = []
        total = int(a.rate * a.seconds)
        with TreeRss(daemon.proc.pid) as rss:
            watcher.start()
            t_load = time.perf_counter()
            for k in range(total):
                delay = t_load + k / a.rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                cid = ids[k % len(ids)]
                value = f"W{k}-{run_tag}"
                sim.request("PATCH", f"/crm/v3/objects/contacts/{cid}",
                            body=json.dumps({"properties": {"firstname": value}}),
                            headers={"Content-Type": "application/json", "Authorization": "Bearer x"})
                sim.getresponse().read()
                now_ms = int(time.time() * 1000)
                body = json.dumps([{
                    "eventId": k + 1, "subscriptionId": 1, "portalId": 1, "appId": 1, "occurredAt": now_ms,
                    "subscriptionType": "contact.propertyChange", "attemptNumber": 0, "objectId": cid,
                    "propertyName": "firstname", "propertyValue": value, "changeSource": "CRM"}]).encode()
                sig = sign_v3(SECRET, "POST", url, body, str(now_ms))
                tp = time.perf_counter()
                conn.request("POST", "/webhooks/hubspot", body=body, headers={
                    "Content-Type": "application/json", "X-HubSpot-Signature-v3": sig,
                    "X-HubSpot-Request-Timestamp": str(now_ms)})
                resp = conn.getresponse()
                resp.read()
                post_ms.append((time.perf_counter() - tp) * 1000)
                answers[resp.status] = answers.get(resp.status, 0) + 1
                posted[value] = tp
            load_s = time.perf_counter() - t_load
            drain = time.perf_counter() + a.drain_s
            while time.perf_counter() < drain and not all(v in seen for v in posted):
                time.sleep(0.05)
            stop_watch.set()
            watcher.join()
        lat = [(seen[v] - posted[v]) * 1000 for v in posted if v in seen]
        daemon_pid = daemon.proc.pid
        result.update({
            "posted": len(posted), "achieved_rate": round(len(posted) / load_s, 1),
            "webhook_answers": {str(k): v for k, v in sorted(answers.items())},
            "webhook_post_ms_p50": round(statistics.median(post_ms), 1),
            "webhook_post_ms_p99": round(pct(post_ms, 99) or 0, 1),
            "appeared": len(lat), "missing": len(posted) - len(lat),
            "latency_ms_p50": round(pct(lat, 50)) if lat else None,
            "latency_ms_p90": round(pct(lat, 90)) if lat else None,
            "latency_ms_p99": round(pct(lat, 99)) if lat else None,
            "latency_ms_max": round(max(lat)) if lat else None,
            "daemon_peak_rss_mb": round(rss.hwm_kb.get(daemon_pid, 0) / 1024, 1),
            "tree_peak_rss_mb": round(rss.peak_sum_kb / 1024, 1),
            "tree_procs": rss.peak_procs,
        })
    finally:
        if daemon is not None:
            daemon.stop()
        ours.send("stop")
        result["simulator_requests"] = ours.recv()["by_route"]
        child.join(timeout=30)
        if a.keep:
            result["work_dir"] = str(work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contacts", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=50.0, help="changes (webhooks) per second")
    ap.add_argument("--seconds", type=float, default=20.0, help="how long the load runs")
    ap.add_argument("--watch-ms", type=float, default=10.0, help="how often the watcher reads the warehouse")
    ap.add_argument("--hubspot-poll-s", type=int, default=600)
    ap.add_argument("--sql-poll-s", type=int, default=30)
    ap.add_argument("--settle-s", type=float, default=5.0, help="quiet wait after the restart")
    ap.add_argument("--drain-s", type=float, default=30.0, help="how long to wait after the last post")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (config, logs, stores)")
    a = ap.parse_args()
    print(json.dumps(run(a)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
