"""``smner serve``: a trained model behind an HTTP API and a web page."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

from smner.commands import (
    add_model_option,
    add_quantize_option,
    model_folder,
    positive_float,
    positive_int,
)
from smner.errors import SmnerError

EPILOG = """\
endpoints:
  GET  /             web page: type a post, attach images, see entities and heatmaps
  GET  /health       {"status": "ok"}
  GET  /v1/model     labels, encoders, ablation switches, limits, smner version
  POST /v1/predict   JSON {"text" or "tokens", "image": base64} or multipart (text, image);
                     several images: JSON "images": [base64, ...] or multipart "images"
                     parts, in order (each entity then says its image_index)
  GET  /openapi.json the API schema

example:
  smner serve --model runs/t17/best --port 8000
  curl -s localhost:8000/v1/predict -H 'content-type: application/json' \\
       -d '{"text": "George visited Paris today"}'

limits: 10 MiB per request, 40 megapixels per image, 80 megapixels over a post's images,
4 images a post (fewer where the model takes fewer), 2000 characters per post (fixed);
request headers within --header-timeout, bodies within --body-timeout,
at most --max-connections open connections and --max-buffered-mb of request bodies at once.
Requests are answered only for the host names in --allowed-host (default: the --host
address, and localhost for a loopback address), and form posts only from this server's page.

The server has no authentication: keep the default --host 127.0.0.1, or put it behind a
proxy that authenticates, before exposing it to a network.
"""


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {value}")
    return number


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "serve",
        help="serve a model over HTTP (JSON API and a web page)",
        description="Serve a saved model: a JSON API that returns each post's entities with\n"
        "their attention over the image regions, and a web page that highlights them and\n"
        "draws the heatmaps. Concurrent requests are batched into one model call.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_option(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_quantize_option(parser)
    parser.add_argument(
        "--max-batch",
        type=positive_int,
        default=16,
        metavar="N",
        help="most posts per model call (default: 16)",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        default=5.0,
        metavar="MS",
        help="how long a request waits for others to share its model call (default: 5)",
    )
    limits = parser.add_argument_group("connection limits")
    limits.add_argument(
        "--allowed-host",
        action="append",
        metavar="HOST",
        help="answer requests whose Host header names HOST (repeatable; '*' for any). "
        "Default: the --host address, plus localhost and 127.0.0.1 for a loopback address; "
        "any host when listening on every address (0.0.0.0 or ::)",
    )
    limits.add_argument(
        "--max-connections",
        type=positive_int,
        default=200,
        metavar="N",
        help="open connections at most; more are answered 503 and closed (default: 200)",
    )
    limits.add_argument(
        "--limit-concurrency",
        type=positive_int,
        default=100,
        metavar="N",
        help="connections or requests in progress at most before new requests are answered "
        "503 (uvicorn's limit_concurrency; default: 100)",
    )
    limits.add_argument(
        "--header-timeout",
        type=positive_float,
        default=10.0,
        metavar="S",
        help="seconds a connection has to send a request's headers (default: 10)",
    )
    limits.add_argument(
        "--body-timeout",
        type=positive_float,
        default=30.0,
        metavar="S",
        help="seconds a request has to send its whole body; then 408 (default: 30)",
    )
    limits.add_argument(
        "--timeout-keep-alive",
        type=positive_float,
        default=5.0,
        metavar="S",
        help="seconds an idle keep-alive connection stays open (default: 5)",
    )
    limits.add_argument(
        "--max-header-bytes",
        type=positive_int,
        default=16384,
        metavar="N",
        help="largest request line and headers, in bytes (default: 16384)",
    )
    limits.add_argument(
        "--max-buffered-mb",
        type=positive_int,
        default=256,
        metavar="MB",
        help="request bodies all requests may hold at once, in MiB; then 503 (default: 256)",
    )
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="server log level (default: info)",
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from smner.data.images import ImageLimits
    from smner.predict.predictor import Predictor
    from smner.serve.app import create_app
    from smner.serve.settings import ServeSettings

    if args.batch_wait_ms < 0:
        raise SmnerError("--batch-wait-ms must not be negative")
    from smner.serve.memory import keep_large_blocks_off_the_heap
    from smner.serve.protocol import guarded_protocol

    allowed = tuple(args.allowed_host) if args.allowed_host else default_allowed_hosts(args.host)
    if args.max_buffered_mb * 2**20 < ServeSettings.max_request_bytes:
        raise SmnerError(
            f"--max-buffered-mb must be at least {ServeSettings.max_request_bytes // 2**20} "
            "(one request's body)"
        )
    settings = ServeSettings(
        max_batch=args.max_batch,
        batch_wait_ms=args.batch_wait_ms,
        allowed_hosts=allowed,
        body_timeout_s=args.body_timeout,
        max_buffered_bytes=args.max_buffered_mb * 2**20,
    )
    limits = ImageLimits(settings.max_request_bytes, settings.max_image_pixels)
    predictor = Predictor.from_pretrained(
        model_folder(args), device=args.device, limits=limits, quantize=args.quantize
    )
    keep_large_blocks_off_the_heap()
    if not _is_loopback(args.host):
        print(
            f"smner: warning: listening on {args.host} without authentication",
            file=sys.stderr,
        )
    if allowed is None:
        print(
            f"smner: warning: answering every Host header on {args.host}; name the host "
            "names clients use with --allowed-host",
            file=sys.stderr,
        )
    uvicorn.run(
        create_app(predictor, settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        server_header=False,
        http=guarded_protocol(args.max_connections, args.header_timeout),
        timeout_keep_alive=args.timeout_keep_alive,
        limit_concurrency=args.limit_concurrency,
        h11_max_incomplete_event_size=args.max_header_bytes,
    )
    return 0


def default_allowed_hosts(host: str) -> tuple[str, ...] | None:
    """The Host header values a server on ``host`` answers by default (None: any)."""
    if host in ("0.0.0.0", "::", ""):
        return None
    if _is_loopback(host):
        return tuple(dict.fromkeys((host, "localhost", "127.0.0.1", "::1")))
    return (host,)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m smner.commands.serve ...``: the verb on its own (used by bench/load.py)."""
    parser = argparse.ArgumentParser(prog="smner")
    register(parser.add_subparsers(dest="verb", required=True))
    args = parser.parse_args(["serve", *(sys.argv[1:] if argv is None else argv)])
    try:
        return run(args)
    except (SmnerError, OSError) as error:
        print(f"smner: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
