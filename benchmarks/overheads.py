#!/usr/bin/env python3
"""kache's own costs, apart from any build: import time of the hit path, peak memory of
the wrapper on a hit and of the daemon, and push/pull throughput to a local S3 server.

    python3 benchmarks/overheads.py

It builds tests/fixtures/ws once through kache (a private store in a temp dir), then:
- import time: ``python -X importtime`` of a real hit (the kc_util compile), summed;
- wrapper wall time and peak RSS of that hit, over 20 runs (median);
- daemon: started on the store, its VmHWM after answering status requests; then the
  same hit served by it through the Python wrapper, through the native client (``kache
  daemon client``, built here with the rustc on PATH) and by the wrapper alone
  (``KACHE_DAEMON_HITS=0``), interleaved: process wall time and the events' ``ms``
  (from the client's or kache.wrapper.run's start to the end), medians;
- throughput: moto's threaded S3 server on 127.0.0.1, ``kache sync --push`` then
  ``--pull --all`` into an empty store, bytes per second.
A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULT = Path(__file__).resolve().parent / "results" / "overheads.json"  # this benchmark's one results file


def kache_exe() -> str:
    beside = Path(sys.executable).with_name("kache")
    return str(beside) if beside.exists() else (shutil.which("kache") or "kache")


def capture_call(ws: Path, env: dict[str, str], crate: str) -> tuple[list[str], dict[str, str]]:
    """The argv and environment cargo gives the wrapper for one crate (via a logging wrapper)."""
    log = ws.parent / "calls.jsonl"
    logger = ws.parent / "logwrap.py"
    logger.write_text(
        "#!" + sys.executable + "\nimport json, os, sys\n"
        f"open({str(log)!r}, 'a').write(json.dumps({{'argv': sys.argv[1:], 'env': dict(os.environ), "
        "'cwd': os.getcwd()}) + '\\n')\n"
        f"os.execv({kache_exe()!r}, [{kache_exe()!r}, *sys.argv[1:]])\n")
    logger.chmod(0o755)
    subprocess.run(["cargo", "clean"], cwd=ws, env=env, capture_output=True)
    subprocess.run(["cargo", "build", "--offline"], cwd=ws, env={**env, "RUSTC_WRAPPER": str(logger)},
                   capture_output=True, check=True)
    for line in log.read_text().splitlines():
        call = json.loads(line)
        if "--crate-name" in call["argv"] and call["argv"][call["argv"].index("--crate-name") + 1] == crate:
            return call["argv"], {**call["env"], "_CWD": call["cwd"]}
    raise SystemExit(f"no call for {crate}")


def daemon_vs_alone(cmds: dict[str, list[str]], cwd: str, env: dict[str, str], events: Path,
                    runs: int) -> dict[str, float]:
    """The same hit, served by the running daemon (``daemon``: the Python wrapper asks;
    ``native``: the native client asks) and by the wrapper alone (``alone``), interleaved
    (rotating which goes first): medians of the process wall time and of the events'
    ``ms``. Fails when a run meant for the daemon was not served by it."""
    hows = list(cmds)
    walls: dict[str, list[float]] = {how: [] for how in hows}
    ms: dict[str, list[float]] = {how: [] for how in hows}
    for i in range(runs):
        for how in hows[i % len(hows):] + hows[:i % len(hows)]:
            t0 = time.perf_counter()
            subprocess.run(cmds[how], cwd=cwd, env={**env, "KACHE_DAEMON_HITS": "0" if how == "alone" else "1"},
                           capture_output=True, check=True)
            walls[how].append(time.perf_counter() - t0)
            event = json.loads(events.read_text().splitlines()[-1])
            if event.get("outcome") != "local_hit" or (event.get("via") == "daemon") != (how != "alone"):
                raise SystemExit(f"a hit meant for {how} was not served that way: {event}")
            ms[how].append(float(event["ms"]))
    out = {}
    for how in hows:
        out[f"hit_{how}_wall_ms_median"] = round(statistics.median(walls[how]) * 1000, 1)
        out[f"hit_{how}_event_ms_median"] = round(statistics.median(ms[how]), 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, default=RESULT,
                    help="where the results go (default: benchmarks/results/overheads.json, overwritten by each run; history is in git)")
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kache-overheads-"))
    results: dict[str, object] = {}
    try:
        ws = tmp / "ws"
        shutil.copytree(ROOT / "tests" / "fixtures" / "ws", ws)
        store = tmp / "store"
        env = {k: v for k, v in os.environ.items() if not k.startswith("KACHE_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env.update({"KACHE_CACHE_DIR": str(store), "RUSTC_WRAPPER": kache_exe()})
        subprocess.run(["cargo", "build", "--offline"], cwd=ws, env=env, capture_output=True, check=True)
        argv, call_env = capture_call(ws, env, "kc_util")
        cwd = call_env.pop("_CWD")
        cmd = [kache_exe(), *argv]
        # import time of a hit
        out = subprocess.run([sys.executable, "-X", "importtime", "-m", "kache", *argv], cwd=cwd, env=call_env,
                             capture_output=True, text=True)
        total = sum(int(line.split("|")[1]) for line in out.stderr.splitlines()
                    if line.startswith("import time:") and "cumulative" not in line
                    and not line.split("|")[2].startswith("  "))
        results["hit_import_ms"] = round(total / 1000, 1)
        walls, rss = [], []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            r = subprocess.run(["/usr/bin/time", "-f", "%M", *cmd], cwd=cwd, env=call_env, capture_output=True,
                               text=True)
            walls.append(time.perf_counter() - t0)
            rss.append(int(r.stderr.strip().splitlines()[-1]))
        results["hit_wall_ms_median"] = round(statistics.median(walls) * 1000, 1)
        results["hit_peak_rss_kib_median"] = int(statistics.median(rss))
        # the daemon
        denv = {**env, "KACHE_DAEMON_IDLE_TIMEOUT": "30"}
        subprocess.run([kache_exe(), "daemon", "start"], env=denv, capture_output=True)
        time.sleep(1.0)
        for _ in range(50):
            subprocess.run([kache_exe(), "daemon", "--json"], env=denv, capture_output=True)
        pid = json.loads(subprocess.run([kache_exe(), "daemon", "--json"], env=denv, capture_output=True,
                                        text=True).stdout or "{}").get("pid")
        if pid:
            status = Path(f"/proc/{pid}/status").read_text()
            results["daemon_peak_rss_kib"] = int(next(x for x in status.splitlines()
                                                      if x.startswith("VmHWM")).split()[1])
            cmds = {"alone": cmd, "daemon": cmd}
            client = tmp / "kache-client"
            built = subprocess.run([kache_exe(), "daemon", "client", "--output", str(client)], env=denv,
                                   capture_output=True, text=True)
            if built.returncode == 0:
                cmds["native"] = [str(client), *argv]
            else:
                print(f"no native client (kache daemon client failed): {built.stderr.strip()}", file=sys.stderr)
            results.update(daemon_vs_alone(cmds, cwd, call_env, store / "events.jsonl", args.runs))
        subprocess.run([kache_exe(), "daemon", "stop"], env=denv, capture_output=True)
        # push / pull through a local S3 server
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        host, port = server.get_host_and_port()
        s3 = {"KACHE_S3_BUCKET": "kache-bench", "KACHE_S3_ENDPOINT": f"http://{host}:{port}",
              "KACHE_S3_ACCESS_KEY": "bench", "KACHE_S3_SECRET_KEY": "bench-secret"}
        import boto3

        boto3.client("s3", endpoint_url=s3["KACHE_S3_ENDPOINT"], aws_access_key_id="bench",
                     aws_secret_access_key="bench-secret", region_name="us-east-1").create_bucket(Bucket="kache-bench")
        for direction, extra, store_dir in (("push", ["--push"], store), ("pull", ["--pull", "--all"], tmp / "empty")):
            t0 = time.perf_counter()
            r = subprocess.run([kache_exe(), "sync", *extra, "--json"], cwd=ws,
                               env={**env, **s3, "KACHE_CACHE_DIR": str(store_dir)}, capture_output=True, text=True)
            elapsed = time.perf_counter() - t0
            doc = json.loads(r.stdout)
            nbytes = (doc.get(direction) or {}).get("bytes", 0)
            results[f"{direction}_mb_per_s"] = round(nbytes / elapsed / 1e6, 1)
            results[f"{direction}_objects"] = (doc.get(direction) or {}).get("objects", 0)
        server.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for k, v in results.items():
        print(f"{k:26s} {v}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
