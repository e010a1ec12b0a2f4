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
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

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


def bench_rest(
    data: bytes, port: int, requests: int, workdir: Path
) -> dict[int, tuple[float, float]]:
    """Return {concurrency: (server CPU seconds per request, requests per second)}."""
    env = dict(os.environ, PIXMILL_DATA_DIR=str(workdir / "data"))
    server = subprocess.Popen(
        [pixmill_bin(), "serve", "--port", str(port), "--workers", str(os.cpu_count() or 2)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                conn.request("GET", "/api/v1/health")
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise RuntimeError(
                    "pixmill serve did not start: " + server.stderr.read().decode()
                    if server.stderr
                    else ""
                )
            time.sleep(0.2)
        body, content_type = multipart(data)
        # Warm every worker (imports, decoder tables) before measuring.
        warm = [
            threading.Thread(target=post_many, args=(port, body, content_type, 3)) for _ in range(4)
        ]
        for thread in warm:
            thread.start()
        for thread in warm:
            thread.join()
        results = {}
        for concurrency in (1, 4):
            per_client = requests // concurrency
            cpu_before = process_tree_cpu(server.pid)
            start = time.perf_counter()
            threads = [
                threading.Thread(target=post_many, args=(port, body, content_type, per_client))
                for _ in range(concurrency)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - start
            done = per_client * concurrency
            cpu = process_tree_cpu(server.pid) - cpu_before
            results[concurrency] = (cpu / done, done / wall)
        return results
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--cli-runs", type=int, default=5)
    parser.add_argument("--port", type=int, default=8799)
    args = parser.parse_args()

    data = make_input()
    print(
        f"input: 4000x3000 JPEG, {len(data) / 1e6:.2f} MB; "
        f"output {TARGET_WIDTH} px wide, q{QUALITY}"
    )
    print(f"cores: {os.cpu_count()}")
    raw = cpu_per_call(raw_pillow, data, 20)
    print(f"(a) raw Pillow with draft:          {raw * 1000:7.1f} ms CPU per image   1.00x")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        single, batch = bench_cli(data, workdir, args.cli_runs)
        print(
            f"(b) pixmill run, one process/image: {single * 1000:7.1f} ms CPU per image "
            f"{single / raw:6.2f}x (includes interpreter start-up)"
        )
        print(
            f"    pixmill run, {2 * args.cli_runs} images in one run: {batch * 1000:7.1f} ms "
            f"CPU per image {batch / raw:6.2f}x"
        )
        rest = bench_rest(data, args.port, args.requests, workdir)
    for concurrency, (cpu, rps) in rest.items():
        print(
            f"(c) REST inline, concurrency {concurrency}:    {cpu * 1000:7.1f} ms server CPU per "
            f"request {cpu / raw:6.2f}x   {rps:6.2f} req/s"
        )
    scaling = rest[4][1] / rest[1][1]
    rest_ratio = rest[1][0] / raw
    print(
        f"REST CPU per request / raw Pillow: {rest_ratio:.2f}x (target <= 1.15x) "
        f"{'PASS' if rest_ratio <= 1.15 else 'MISS'}"
    )
    print(
        f"req/s at c=4 / c=1: {scaling:.2f}x (target >= 1.8x) "
        f"{'PASS' if scaling >= 1.8 else 'MISS'}"
    )


if __name__ == "__main__":
    main()
