"""Resize benchmark: what pixmill costs over raw Pillow for a 4000x3000 JPEG -> 800 px wide, q85.

Measured in one run, on one machine, so the ratios hold even when the machine is noisy:

(a) raw Pillow in this process: open, draft (DCT scaling), resize, save JPEG q85;
(b) `pixmill run` as a user runs it: one process per image, and one process for a batch;
(c) REST over loopback through `pixmill serve`, result returned inline (Accept: image/jpeg),
    at concurrency 1 and 4: server CPU per request (all server processes, read from /proc)
    relative to (a), and requests per second.

Usage: python bench/bench_resize.py [--requests 40] [--port 8799]
Targets (issue 2): REST CPU per request <= 1.15x raw Pillow; req/s at c=4 >= 1.8x c=1.
"""

from __future__ import annotations

import argparse
import http.client
import io
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

from pixmill.testing.images import photo

TARGET_WIDTH = 800
QUALITY = 85
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def make_input() -> bytes:
    out = io.BytesIO()
    photo(4000, 3000, seed=7).save(out, "JPEG", quality=90)
    return out.getvalue()


def raw_pillow(data: bytes) -> bytes:
    img = Image.open(io.BytesIO(data))
    height = round(img.height * TARGET_WIDTH / img.width)
    img.draft("RGB", (TARGET_WIDTH, height))
    img = img.resize((TARGET_WIDTH, height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=QUALITY)
    return out.getvalue()


def cpu_per_call(fn, data: bytes, repeat: int) -> float:
    fn(data)  # warm caches and imports
    start = time.process_time()
    for _ in range(repeat):
        fn(data)
    return (time.process_time() - start) / repeat


def pixmill_bin() -> str:
    found = shutil.which("pixmill", path=str(Path(sys.executable).parent))
    if not found:
        sys.exit("pixmill is not installed in this environment (pip install -e .)")
    return found


def children_cpu_seconds() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def bench_cli(data: bytes, workdir: Path, runs: int) -> tuple[float, float]:
    """Return (CPU seconds per single-image invocation, CPU seconds per image in a batch)."""
    src = workdir / "in.jpg"
    src.write_bytes(data)
    cmd = [
        pixmill_bin(),
        "run",
        "resize",
        str(src),
        "-o",
        str(workdir / "out.jpg"),
        "--set",
        f"width={TARGET_WIDTH}",
    ]
    subprocess.run(cmd, check=True, capture_output=True)
    before = children_cpu_seconds()
    for _ in range(runs):
        subprocess.run(cmd, check=True, capture_output=True)
    single = (children_cpu_seconds() - before) / runs

    batch_dir = workdir / "batch"
    batch_dir.mkdir()
    count = 2 * runs
    for i in range(count):
        (batch_dir / f"in{i}.jpg").write_bytes(data)
    before = children_cpu_seconds()
    subprocess.run(
        [
            pixmill_bin(),
            "run",
            "resize",
            *map(str, sorted(batch_dir.glob("*.jpg"))),
            "-o",
            str(workdir / "batch-out"),
            "--set",
            f"width={TARGET_WIDTH}",
        ],
        check=True,
        capture_output=True,
    )
    batch = (children_cpu_seconds() - before) / count
    return single, batch


def process_tree_cpu(root_pid: int) -> float:
    """utime+stime of `root_pid` and every live descendant, in seconds."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        pid = int(entry)
        parents[pid] = int(fields[1])
        times[pid] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree = {root_pid}
    changed = True
    while changed:
        changed = False
        for pid, ppid in parents.items():
            if ppid in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return sum(times.get(pid, 0.0) for pid in tree)


def multipart(data: bytes) -> tuple[bytes, str]:
    boundary = "pixmillbench0123456789"
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="settings"\r\n\r\n'.encode(),
            f'{{"width": {TARGET_WIDTH}}}\r\n'.encode(),
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="in.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n".encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return body, f"multipart/form-data; boundary={boundary}"


def post_many(port: int, body: bytes, content_type: str, count: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": content_type, "Accept": "image/jpeg"}
    for _ in range(count):
        conn.request("POST", "/api/v1/tools/image/resize", body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status != 200 or response.getheader("Content-Type") != "image/jpeg":
            raise RuntimeError(f"server answered {response.status}: {payload[:200]!r}")
    conn.close()


def start_server(port: int, workdir: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PIXMILL_DATA_DIR=str(workdir / "data"))
    server = subprocess.Popen(
        [pixmill_bin(), "serve", "--port", str(port), "--workers", str(os.cpu_count() or 2)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/v1/health")
            if conn.getresponse().status == 200:
                return server
        except OSError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.kill()
            raise RuntimeError("pixmill serve did not start")
        time.sleep(0.2)


def _client(port: int, body: bytes, content_type: str, count: int, go: Any, done: Any) -> None:
    go.wait()
    post_many(port, body, content_type, count)
    done.put(time.perf_counter())


def rest_round(port: int, body: bytes, content_type: str, concurrency: int, count: int, pid: int):
    """Send `count` requests over `concurrency` connections; return (CPU s/request, req/s).

    Each connection is its own (forked) process, started before the clock: the load
    generator must not be held back by its own GIL while the server is measured.
    """
    per_client = max(1, count // concurrency)
    context = multiprocessing.get_context("fork")
    go, done = context.Event(), context.Queue()
    clients = [
        context.Process(target=_client, args=(port, body, content_type, per_client, go, done))
        for _ in range(concurrency)
    ]
    for client in clients:
        client.start()
    cpu_before = process_tree_cpu(pid)
    start = time.perf_counter()
    go.set()
    finished = max(done.get(timeout=600) for _ in clients)
    for client in clients:
        client.join()
    if any(client.exitcode for client in clients):
        raise RuntimeError("a benchmark client failed")
    cpu = process_tree_cpu(pid) - cpu_before
    done_requests = per_client * concurrency
    return cpu / done_requests, done_requests / (finished - start)


def bench_rest(
    data: bytes, port: int, requests: int, rounds: int, workdir: Path
) -> dict[str, float]:
    """Interleave raw Pillow and REST rounds so machine noise hits both sides alike.

    Returns medians over rounds: raw CPU per image, REST CPU per request at c=1 and c=4,
    their ratios to raw, and req/s at c=1 and c=4.
    """
    server = start_server(port, workdir)
    try:
        body, content_type = multipart(data)
        # Warm every worker (imports, decoder tables) before measuring.
        rest_round(port, body, content_type, 4, 8, server.pid)
        per = max(4, requests // rounds)
        samples: dict[str, list[float]] = {k: [] for k in ("raw", "c1", "c4", "rps1", "rps4")}
        for _ in range(rounds):
            samples["raw"].append(cpu_per_call(raw_pillow, data, per))
            cpu1, rps1 = rest_round(port, body, content_type, 1, per, server.pid)
            cpu4, rps4 = rest_round(port, body, content_type, 4, per, server.pid)
            samples["c1"].append(cpu1)
            samples["c4"].append(cpu4)
            samples["rps1"].append(rps1)
            samples["rps4"].append(rps4)
        ratio1 = [c / r for c, r in zip(samples["c1"], samples["raw"], strict=True)]
        ratio4 = [c / r for c, r in zip(samples["c4"], samples["raw"], strict=True)]
        scaling = [b / a for a, b in zip(samples["rps1"], samples["rps4"], strict=True)]
        result = {k: statistics.median(v) for k, v in samples.items()}
        result.update(
            ratio1=statistics.median(ratio1),
            ratio4=statistics.median(ratio4),
            scaling=statistics.median(scaling),
            # Totals over every round: less sensitive to one noisy round than the medians.
            total1=sum(samples["c1"]) / sum(samples["raw"]),
            total4=sum(samples["c4"]) / sum(samples["raw"]),
        )
        return result
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=80, help="REST requests per concurrency")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()

    data = make_input()
    print(
        f"input: 4000x3000 JPEG, {len(data) / 1e6:.2f} MB; "
        f"output {TARGET_WIDTH} px wide, q{QUALITY}; cores: {os.cpu_count()}"
    )
    raw = cpu_per_call(raw_pillow, data, 20)
    print(f"(a) raw Pillow with draft:            {raw * 1000:7.1f} ms CPU per image")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        single, batch = bench_cli(data, workdir, args.cli_runs)
        raw_now = cpu_per_call(raw_pillow, data, 10)
        print(
            f"(b) pixmill run, one process per image: {single * 1000:7.1f} ms CPU per image "
            f"{single / raw_now:5.2f}x (includes interpreter start-up and plugin loading)"
        )
        print(
            f"    pixmill run, {2 * args.cli_runs} images in one run:  {batch * 1000:7.1f} ms CPU "
            f"per image {batch / raw_now:5.2f}x (includes starting the worker processes)"
        )
        rest = bench_rest(data, args.port, args.requests, args.rounds, workdir)
    print(
        f"(c) REST inline, interleaved with raw Pillow over {args.rounds} rounds (medians); "
        f"raw Pillow in those rounds: {rest['raw'] * 1000:.1f} ms"
    )
    for level in ("1", "4"):
        print(
            f"    concurrency {level}: {rest['c' + level] * 1000:7.1f} ms server CPU per request "
            f"{rest['ratio' + level]:5.2f}x raw   {rest['rps' + level]:6.2f} req/s"
        )
    print(
        f"    over all rounds: c=1 {rest['total1']:.2f}x, "
        f"c=4 {rest['total4']:.2f}x raw Pillow's CPU"
    )
    verdict = "PASS" if rest["ratio1"] <= 1.15 else "MISS"
    print(
        f"REST CPU per request / raw Pillow (median of rounds): {rest['ratio1']:.2f}x "
        f"(target <= 1.15x) {verdict}"
    )
    verdict = "PASS" if rest["scaling"] >= 1.8 else "MISS"
    print(f"req/s at c=4 / c=1: {rest['scaling']:.2f}x (target >= 1.8x) {verdict}")


if __name__ == "__main__":
    main()
