#!/usr/bin/env python3
"""Bulk load into PostgreSQL as `espwatch ingest --database-url` does it (issue 23).

Each run loads FILES into a fresh database (created and dropped here) after a CHECKPOINT, and
reports the rate the command prints, its wall time, its own CPU (user+sys of the reaped child) and the
local PostgreSQL cluster's CPU per 1 000 readings: the run's database's backends and the
cluster's auxiliary processes (WAL writer, checkpointer, ...), polled from /proc every 50 ms
(a backend's CPU after its last poll is lost: at most 50 ms of an idle connection closing).
With --resend each run also loads the same files a second time (all duplicates).

  scripts/pg-ingest-bench.py --bin target/release/espwatch --runs 3 \
      [--url postgres://postgres@127.0.0.1:5432] [--pgdata /var/lib/postgresql/15/main] \
      [--resend] FILE... [-- INGEST ARGS...]

Several --bin may be given: runs alternate between them (A B A B ...), so both see the same
machine, and the medians are printed per binary at the end.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

TICKS = os.sysconf("SC_CLK_TCK")


def psql(url, db, sql):
    subprocess.run(
        ["psql", f"{url}/{db}", "-q", "-v", "ON_ERROR_STOP=1", "-c", sql],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def cpu_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICKS
    except (OSError, IndexError, ValueError):
        return None


def title_of(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def children_of(ppid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[1]) == ppid:
                out.append(int(d))
        except (OSError, IndexError, ValueError):
            pass
    return out


class PgCpu:
    """CPU of one cluster's processes that belong to `db` or to no database."""

    AUX = ("checkpointer", "background writer", "walwriter", "autovacuum launcher")

    def __init__(self, postmaster, db):
        self.postmaster, self.db = postmaster, db
        self.start = {}
        self.last = {}
        self.stop = threading.Event()

    def relevant(self, pid):
        t = title_of(pid)
        return any(a in t for a in self.AUX) or re.search(rf"\b{re.escape(self.db)}\b", t)

    def poll(self, first=False):
        for pid in children_of(self.postmaster):
            if pid not in self.last and not first and not self.relevant(pid):
                continue
            if first and not self.relevant(pid):
                continue
            c = cpu_of(pid)
            if c is None:
                continue
            if first:
                self.start[pid] = c
            self.last[pid] = c

    def run(self):
        while not self.stop.is_set():
            self.poll()
            time.sleep(0.05)

    def __enter__(self):
        self.poll(first=True)
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.poll()
        self.stop.set()
        self.thread.join()

    def seconds(self):
        return sum(v - self.start.get(pid, 0.0) for pid, v in self.last.items())


RATE = re.compile(r"done: (\d+) readings in .* in ([\d.]+)s \((\d+) readings/s\)")
COUNTS = re.compile(r"accepted (\d+), duplicates (\d+), rejected (\d+)")
CLOSE = re.compile(r"then ([\d.]+)s closing the store")


def load(binary, url, db, files, extra, postmaster, workdir):
    psql(url, "postgres", "CHECKPOINT")
    env = dict(os.environ, ESPWATCH_DATABASE_URL=f"{url}/{db}")
    env.setdefault("RUST_LOG", "warn")
    cmd = [binary, "ingest", *files, "--rejects", os.path.join(workdir, "rejects.csv"), *extra]
    with PgCpu(postmaster, db) as pg:
        t0 = time.monotonic()
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir)
        out, err = p.communicate()
        wall = time.monotonic() - t0
        status = p.returncode
    if status != 0:
        sys.exit(f"{' '.join(cmd)} failed ({status}):\n{out.decode()}{err.decode()}")
    text = out.decode()
    m, c = RATE.search(text), COUNTS.search(text)
    if not m or not c:
        sys.exit(f"unexpected output:\n{text}")
    readings = int(m.group(1))
    return {
        "readings": readings,
        "rate": int(m.group(3)),
        "load_s": float(m.group(2)),
        "wall_s": wall,
        "pg_ms_per_1000": pg.seconds() * 1e3 / readings * 1000,
        "counts": c.group(0),
        "close_s": float(CLOSE.search(text).group(1)) if CLOSE.search(text) else 0.0,
        "output": text.strip(),
    }


def client_cpu_wrap(fn, *args):
    before = os.times()
    r = fn(*args)
    after = os.times()
    r["client_ms_per_1000"] = (
        (after.children_user - before.children_user + after.children_system - before.children_system)
        * 1e3 / r["readings"] * 1000
    )
    return r


def main():
    argv = sys.argv[1:]
    extra = []
    if "--" in argv:
        i = argv.index("--")
        argv, extra = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", action="append", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--url", default="postgres://postgres@127.0.0.1:5432")
    ap.add_argument("--pgdata", default="/var/lib/postgresql/15/main")
    ap.add_argument("--resend", action="store_true")
    ap.add_argument("--keep", action="store_true", help="keep the last run's database")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args(argv)
    with open(os.path.join(a.pgdata, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    files = [os.path.abspath(f) for f in a.files]
    # Each load runs in a temporary directory: a binary given as a relative path is resolved
    # here, against where the script was started (a name without a slash is looked up in PATH).
    exe = {b: os.path.abspath(b) if os.sep in b else b for b in a.bin}
    results = {b: [] for b in a.bin}
    with tempfile.TemporaryDirectory() as work:
        for run in range(a.runs):
            for b in a.bin:
                db = f"pgin_load_{os.getpid()}_{run}"
                psql(a.url, "postgres", f"DROP DATABASE IF EXISTS {db}")
                psql(a.url, "postgres", f"CREATE DATABASE {db}")
                try:
                    r = client_cpu_wrap(load, exe[b], a.url, db, files, extra, postmaster, work)
                    line = (f"{b} run {run + 1}: {r['rate']} readings/s ({r['readings']} in {r['load_s']:.2f} s, "
                            f"wall {r['wall_s']:.2f} s, of which closing {r['close_s']:.1f} s), PostgreSQL {r['pg_ms_per_1000']:.2f} ms CPU per 1000, "
                            f"espwatch {r['client_ms_per_1000']:.2f} ms per 1000; {r['counts']}")
                    if a.resend:
                        s = client_cpu_wrap(load, exe[b], a.url, db, files, extra, postmaster, work)
                        r["resend"] = s
                        line += (f"\n    resend: {s['rate']} readings/s, PostgreSQL {s['pg_ms_per_1000']:.2f} ms "
                                 f"per 1000, espwatch {s['client_ms_per_1000']:.2f}; {s['counts']}")
                    print(line, flush=True)
                    results[b].append(r)
                finally:
                    if not (a.keep and run == a.runs - 1):
                        psql(a.url, "postgres", f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    for b, rs in results.items():
        med = lambda k, rs=rs: statistics.median(r[k] for r in rs)
        print(f"median {b}: {med('rate'):.0f} readings/s, PostgreSQL {med('pg_ms_per_1000'):.2f} ms CPU "
              f"per 1000 readings, espwatch {med('client_ms_per_1000'):.2f} ms per 1000, wall {med('wall_s'):.2f} s "
              f"(rates {[r['rate'] for r in rs]})")
        if a.resend:
            rr = [r["resend"] for r in rs]
            print(f"  resend: {statistics.median(r['rate'] for r in rr):.0f} readings/s, PostgreSQL "
                  f"{statistics.median(r['pg_ms_per_1000'] for r in rr):.2f} ms per 1000 "
                  f"(rates {[r['rate'] for r in rr]})")


if __name__ == "__main__":
    main()
