"""``smner export``: a saved model folder that runs on ONNX Runtime."""

from __future__ import annotations

import argparse
import json
import sys

from smner.commands import positive_float

EPILOG = """\
The output folder holds the model folder's files (config, weights, processor, card), the
graph of the text encoder and heads (model.onnx) and onnx.json: the backend, opset,
quantisation and the export's own check against PyTorch. The image encoder stays in PyTorch
(image features are graph inputs, so the feature cache is reused). Load it like any model
folder: 'smner predict/evaluate/serve --model OUT', Predictor.from_pretrained(OUT); the
backend comes from the folder.

Before writing, the export checks the graph against PyTorch on a few posts with and without
an image; if they differ by more than --tolerance, or decode to other entities, it fails and
writes nothing. Needs pip install 'smner[onnx]'.

examples:
  smner export --model runs/t17/best --output runs/t17/onnx
  smner export --model runs/t17/best --output runs/t17/onnx-int8 --quantize int8
  smner export --model runs/t17/best --output runs/t17/onnx-pruned --span-pruning 16
"""


def register(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser(
        "export",
        help="export a saved model to ONNX Runtime (float32 or int8)",
        description="Write a saved model folder whose text encoder and heads run on ONNX "
        "Runtime, checked against PyTorch before it is written.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="saved model folder")
    parser.add_argument(
        "--output",
        required=True,
        metavar="OUT",
        help="folder to write (a new or empty folder, or a model folder to replace)",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8"],
        default=None,
        help="quantise the text encoder's linear layers to int8 (ONNX Runtime's dynamic "
        "quantisation; smner's own layers stay in float; default: float32)",
    )
    parser.add_argument(
        "--tolerance",
        type=positive_float,
        default=None,
        metavar="T",
        help="largest difference allowed between the graph's and PyTorch's logits and "
        "attention weights on the check posts (default: 1e-3)",
    )
    parser.add_argument(
        "--span-pruning",
        type=int,
        default=None,
        metavar="N",
        help="send only each image post's N likeliest spans (by their text-side score) "
        "through the span-to-region attention in the graph, as 'smner evaluate "
        "--span-pruning N' does in PyTorch; 0: every span (default: the model's "
        "model.span_pruning)",
    )
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from smner.predict.onnx_export import DEFAULT_TOLERANCE, export_onnx

    result = export_onnx(
        args.model,
        args.output,
        quantize=args.quantize,
        tolerance=args.tolerance if args.tolerance is not None else DEFAULT_TOLERANCE,
        span_pruning=args.span_pruning,
    )
    if args.json:
        print(json.dumps(result.manifest, indent=2))
        return 0
    check = result.verification
    kind = "int8" if args.quantize else "float32"
    checked = "its float32 graph checked" if args.quantize else "checked"
    print(
        f"wrote {result.output} ({kind} ONNX graph, opset {result.manifest['opset']}); "
        f"{checked} on {check.posts} posts ({check.posts_with_image} with an image): logits "
        f"within {check.max_logit_diff:.2g} of PyTorch's, the same entities",
        file=sys.stderr,
    )
    if result.quantized is not None:
        q = result.quantized
        print(
            f"int8: {100 * q.span_label_agreement:.1f}% of the spans get PyTorch's label, logits "
            f"within {q.max_logit_diff:.2g}, "
            + ("the same entities" if q.entities_equal else "some entities differ"),
            file=sys.stderr,
        )
    return 0
