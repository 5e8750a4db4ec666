"""Load test of `smner serve`: what micro-batching buys under concurrent clients.

    python bench/load.py --model runs/t17/best --clients 16 --seconds 30 --image photo.jpg

Starts the server in a subprocess on a free local port, then runs one sequential client and
then --clients concurrent ones for --seconds each, all posting the same post. For each phase it
reports throughput (requests/s), p50/p95 latency, errors, and the server's peak RSS, then prints
a JSON record and a Markdown table. Client and server share the machine's CPUs, so compare
phases of one run rather than runs on different machines.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

DEFAULT_TEXT = "RT @user: George visited Paris today with the Apple team #travel"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "smner.commands.serve",
        "--model",
        args.model,
        "--port",
        str(port),
        "--max-batch",
        str(args.max_batch),
        "--batch-wait-ms",
        str(args.batch_wait_ms),
        "--device",
        args.device,
        "--log-level",
        "warning",
    ]
    return subprocess.Popen(command)


def wait_until_ready(url: str, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            sys.exit(f"the server exited with status {server.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.2)
    sys.exit(f"the server did not answer {url}/health within {timeout:.0f} s")


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), from /proc; None where there is none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def run_phase(url: str, body: dict[str, Any], clients: int, seconds: float) -> dict[str, Any]:
    """``clients`` loops, each posting as soon as its previous answer arrived, for ``seconds``."""
    latencies: list[float] = []
    errors = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:

        async def client(deadline: float) -> None:
            nonlocal errors
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await http.post("/v1/predict", json=body)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(client(began + seconds) for _ in range(clients)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    p50, p95 = percentile(latencies, 0.5), percentile(latencies, 0.95)
    return {
        "clients": clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "errors": errors,
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
        "p95_ms": round(p95 * 1000, 1) if p95 is not None else None,
    }


def markdown(phases: list[dict[str, Any]]) -> str:
    rows = [
        "| clients | requests/s | p50 ms | p95 ms | requests | errors | server peak RSS MiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for p in phases:
        rows.append(
            f"| {p['clients']} | {p['throughput_rps']} | {p['p50_ms']} | {p['p95_ms']} | "
            f"{p['requests']} | {p['errors']} | {p['server_peak_rss_mib']} |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, metavar="DIR", help="saved model folder")
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--image", metavar="PATH", help="image sent with every post")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="text of every post")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3, help="requests before measuring")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    args = parser.parse_args()

    body: dict[str, Any] = {"text": args.text}
    if args.image:
        body["image"] = base64.b64encode(Path(args.image).read_bytes()).decode("ascii")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args, port)
    phases = []
    try:
        wait_until_ready(url, server, args.startup_timeout)
        for _ in range(args.warmup):
            response = httpx.post(f"{url}/v1/predict", json=body, timeout=120)
            if response.status_code != 200:
                sys.exit(f"warm-up request failed: {response.status_code} {response.text[:500]}")
        for clients in (1, args.clients):
            phase = asyncio.run(run_phase(url, body, clients, args.seconds))
            phase["server_peak_rss_mib"] = peak_rss_mib(server.pid)  # cumulative peak
            phases.append(phase)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    sequential, concurrent = phases
    speedup = (
        round(concurrent["throughput_rps"] / sequential["throughput_rps"], 2)
        if sequential["throughput_rps"]
        else None
    )
    record = {
        "model": args.model,
        "image": bool(args.image),
        "max_batch": args.max_batch,
        "batch_wait_ms": args.batch_wait_ms,
        "phases": phases,
        "speedup": speedup,
    }
    print(json.dumps(record, indent=2))
    print()
    print(markdown(phases))
    print(f"\nthroughput with {args.clients} clients / 1 client: {speedup}x")


if __name__ == "__main__":
    main()
