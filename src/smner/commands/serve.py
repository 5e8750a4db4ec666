"""``smner serve``: a trained model behind an HTTP API and a web page."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

from smner.commands import add_model_option, model_folder
from smner.errors import SmnerError

EPILOG = """\
endpoints:
  GET  /             web page: type a post, attach an image, see entities and heatmaps
  GET  /health       {"status": "ok"}
  GET  /v1/model     labels, encoders, ablation switches, limits, smner version
  POST /v1/predict   JSON {"text" or "tokens", "image": base64} or multipart (text, image)
  GET  /openapi.json the API schema

example:
  smner serve --model runs/t17/best --port 8000
  curl -s localhost:8000/v1/predict -H 'content-type: application/json' \\
       -d '{"text": "George visited Paris today"}'

The server has no authentication: keep the default --host 127.0.0.1, or put it behind a
proxy that authenticates, before exposing it to a network.
"""


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return number


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
    parser.add_argument(
        "--max-batch",
        type=_positive_int,
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
    from smner.predict import Predictor
    from smner.serve import ServeSettings, create_app

    if args.batch_wait_ms < 0:
        raise SmnerError("--batch-wait-ms must not be negative")
    settings = ServeSettings(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms)
    limits = ImageLimits(settings.max_request_bytes, settings.max_image_pixels)
    predictor = Predictor.from_pretrained(model_folder(args), device=args.device, limits=limits)
    if not _is_loopback(args.host):
        print(
            f"smner: warning: listening on {args.host} without authentication",
            file=sys.stderr,
        )
    uvicorn.run(
        create_app(predictor, settings),
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        server_header=False,
    )
    return 0


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
