"""Load test of `smner serve`: what micro-batching buys under concurrent clients.

    python bench/load.py --model runs/t17/best --clients 16 --seconds 30 --image photo.jpg
    python bench/load.py --model runs/t17/best --model runs/t17-int8 --clients 16  # side by side
    python bench/load.py --model runs/t17/best --clients 32 --bad-clients 8 \
        --bad-image huge.png --seconds 30     # valid clients beside clients posting a bomb

Starts the server in a subprocess on a free local port, then runs one sequential client and
then --clients concurrent ones for --seconds each, all posting the same post. For each phase it
reports throughput (requests/s), p50/p95 latency, errors, and the server's peak RSS, then prints
a JSON record and a Markdown table. Client and server share the machine's CPUs, so compare
phases of one run rather than runs on different machines. With ``--model`` given several times
(a PyTorch folder and its ``smner export``, say), each model is served and measured in turn,
one server at a time, and the table sets them side by side.
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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_TEXT = "RT @user: George visited Paris today with the Apple team #travel"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(args: argparse.Namespace, port: int, model: str) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "smner.commands.serve",
        "--model",
        model,
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


@contextlib.contextmanager
def served(args: argparse.Namespace, model: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """``model`` served on a free local port, ready: its URL and process; stopped after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(args, port, model)
    try:
        wait_until_ready(url, server, args.startup_timeout)
        yield url, server
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def peak_rss_mib(pid: int) -> float | None:
    """The process's peak resident memory (VmHWM), from /proc; None where there is none."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def rss_mib(pid: int, field: str = "VmRSS") -> float | None:
    """A memory field of /proc/PID/status (VmRSS now, VmHWM peak) in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def reset_peak_rss(pid: int) -> bool:
    """Start VmHWM afresh from the current RSS (Linux: writing 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def run_mixed_phase(
    url: str,
    body: dict[str, Any],
    bad_body: dict[str, Any],
    clients: int,
    bad_clients: int,
    seconds: float,
    expected: Any,
) -> dict[str, Any]:
    """``clients - bad_clients`` clients post ``body``, the others ``bad_body``; answers to
    the valid ones must equal ``expected``, and the bad ones' statuses are counted."""
    latencies: list[float] = []
    valid_errors = wrong = 0
    bad_statuses: dict[str, int] = {}
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as http:

        async def valid(deadline: float) -> None:
            nonlocal valid_errors, wrong
            while time.perf_counter() < deadline:
                started = time.perf_counter()
                try:
                    response = await http.post("/v1/predict", json=body)
                except httpx.HTTPError:
                    valid_errors += 1
                    continue
                if response.status_code != 200:
                    valid_errors += 1
                elif response.json()["entities"] != expected:
                    wrong += 1
                else:
                    latencies.append(time.perf_counter() - started)

        async def bad(deadline: float) -> None:
            while time.perf_counter() < deadline:
                try:
                    response = await http.post("/v1/predict", json=bad_body)
                    key = str(response.status_code)
                    if response.status_code == 503:
                        await asyncio.sleep(float(response.headers.get("retry-after", "1")))
                except httpx.HTTPError as error:
                    key = type(error).__name__
                bad_statuses[key] = bad_statuses.get(key, 0) + 1

        began = time.perf_counter()
        deadline = began + seconds
        await asyncio.gather(
            *(valid(deadline) for _ in range(clients - bad_clients)),
            *(bad(deadline) for _ in range(bad_clients)),
        )
        elapsed = time.perf_counter() - began
    latencies.sort()
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    return {
        "clients": clients,
        "bad_clients": bad_clients,
        "seconds": round(elapsed, 2),
        "requests": len(latencies),
        "errors": valid_errors,
        "wrong_answers": wrong,
        "throughput_rps": round(len(latencies) / elapsed, 2),
        "p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
        "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
        "bad_client_statuses": bad_statuses,
    }


def settle(pid: int, target_mib: float, seconds: float) -> dict[str, Any]:
    """Sample RSS each second for up to ``seconds``, until it is within 20% of the target."""
    began = time.monotonic()
    samples = []
    while True:
        rss = rss_mib(pid)
        waited = round(time.monotonic() - began, 1)
        samples.append((waited, rss))
        if rss is not None and rss <= 1.2 * target_mib:
            return {"within_20pct_after_s": waited, "rss_mib": rss}
        if waited >= seconds:
            return {"within_20pct_after_s": None, "rss_mib": rss, "samples": samples[-5:]}
        time.sleep(1)


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


def markdown(records: list[dict[str, Any]]) -> str:
    """One row per phase of every model's record."""
    rows = [
        "| model | clients | requests/s | p50 ms | p95 ms | requests | errors "
        "| server peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for record in records:
        for p in record["phases"]:
            rows.append(
                f"| {record['model']} | {p['clients']} | {p['throughput_rps']} | {p['p50_ms']} "
                f"| {p['p95_ms']} | {p['requests']} | {p['errors']} | {p['server_peak_rss_mib']} |"
            )
    return "\n".join(rows)


def measure(args: argparse.Namespace, model: str, body: dict[str, Any]) -> dict[str, Any]:
    """Serve ``model`` alone, then one sequential client and ``--clients`` concurrent ones."""
    phases = []
    with served(args, model) as (url, server):
        for _ in range(args.warmup):
            response = httpx.post(f"{url}/v1/predict", json=body, timeout=120)
            if response.status_code != 200:
                sys.exit(f"warm-up request failed: {response.status_code} {response.text[:500]}")
        info = httpx.get(f"{url}/v1/model", timeout=30).json()
        backend = " ".join(filter(None, (info.get("backend"), info.get("quantization"))))
        for clients in (1, args.clients):
            phase = asyncio.run(run_phase(url, body, clients, args.seconds))
            phase["server_peak_rss_mib"] = peak_rss_mib(server.pid)  # cumulative peak
            phases.append(phase)
    sequential, concurrent = phases
    speedup = (
        round(concurrent["throughput_rps"] / sequential["throughput_rps"], 2)
        if sequential["throughput_rps"]
        else None
    )
    return {
        "model": model,
        "backend": backend,
        "image": bool(args.image),
        "max_batch": args.max_batch,
        "batch_wait_ms": args.batch_wait_ms,
        "phases": phases,
        "speedup": speedup,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        required=True,
        action="append",
        metavar="DIR",
        help="saved model folder (PyTorch or exported); repeat it to measure several in turn",
    )
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase")
    parser.add_argument("--image", metavar="PATH", help="image sent with every post")
    parser.add_argument("--text", default=DEFAULT_TEXT, help="text of every post")
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=5.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=3, help="requests before measuring")
    parser.add_argument("--startup-timeout", type=float, default=180.0)
    parser.add_argument("--bad-image", metavar="PATH", help="image the bad clients post")
    parser.add_argument("--bad-clients", type=int, default=0, help="clients posting it")
    parser.add_argument(
        "--settle-seconds", type=float, default=60.0, help="how long to watch RSS fall back"
    )
    args = parser.parse_args()
    if args.bad_clients:
        mixed_main(args)
        return

    body: dict[str, Any] = {"text": args.text}
    if args.image:
        body["image"] = base64.b64encode(Path(args.image).read_bytes()).decode("ascii")
    records = [measure(args, model, body) for model in args.model]
    print(json.dumps(records[0] if len(records) == 1 else {"models": records}, indent=2))
    print()
    print(markdown(records))
    for record in records:
        print(
            f"\n{record['model']} ({record['backend']}): throughput with {args.clients} clients "
            f"/ 1 client: {record['speedup']}x"
        )
    if len(records) > 1:
        base = records[0]["phases"][1]["throughput_rps"]
        for record in records[1:]:
            ratio = record["phases"][1]["throughput_rps"] / base if base else float("nan")
            print(
                f"{record['model']} against {records[0]['model']} at {args.clients} clients: "
                f"{ratio:.2f}x the requests/s"
            )


def mixed_main(args: argparse.Namespace) -> None:
    """Valid clients alone, then beside ``--bad-clients`` posting ``--bad-image``."""
    if not args.bad_image or not 0 < args.bad_clients < args.clients:
        sys.exit("--bad-clients needs --bad-image and fewer bad clients than --clients")
    if len(args.model) > 1:
        sys.exit("--bad-clients measures one --model at a time")
    (model,) = args.model
    body: dict[str, Any] = {"text": args.text}
    if args.image:
        body["image"] = base64.b64encode(Path(args.image).read_bytes()).decode("ascii")
    bad_body = {
        "text": args.text,
        "image": base64.b64encode(Path(args.bad_image).read_bytes()).decode("ascii"),
    }
    with served(args, model) as (url, server):
        expected = None
        for _ in range(args.warmup):
            response = httpx.post(f"{url}/v1/predict", json=body, timeout=120)
            if response.status_code != 200:
                sys.exit(f"warm-up request failed: {response.status_code} {response.text[:500]}")
            expected = response.json()["entities"]
        valid = args.clients - args.bad_clients
        alone = asyncio.run(run_phase(url, body, valid, args.seconds))
        time.sleep(2)
        idle = rss_mib(server.pid)
        reset_peak_rss(server.pid)
        mixed = asyncio.run(
            run_mixed_phase(
                url, body, bad_body, args.clients, args.bad_clients, args.seconds, expected
            )
        )
        peak = rss_mib(server.pid, "VmHWM")
        after = rss_mib(server.pid)
        settled = settle(server.pid, idle or 0.0, args.settle_seconds)
    rate = alone["throughput_rps"]
    kept = round(mixed["throughput_rps"] / rate, 2) if rate else None
    record = {
        "model": model,
        "bad_image_bytes": Path(args.bad_image).stat().st_size,
        "valid_alone": alone,
        "mixed": mixed,
        "idle_rss_mib": idle,
        "peak_rss_mib": peak,
        "peak_over_idle_mib": round(peak - idle, 1) if peak and idle else None,
        "rss_after_load_mib": after,
        "settle": settled,
        "valid_throughput_kept": kept,
    }
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
