"""The text encoder alone on ONNX Runtime against PyTorch: is the runtime faster at all here?

    python bench/onnx_encoder_alone.py --model runs/t17/best [--data valid.txt] [--rounds 5]

Exports the model folder's text encoder by itself (``torch.onnx.export``, the exporter ``smner
export`` uses, batch and length dynamic) and times it against its PyTorch forward on the same
length-ordered batches of 32, in alternating rounds; prints the medians and their ratios.
Also timed: the same graph with every linear layer in int8 (ONNX Runtime's dynamic
quantisation, one scale per output channel, as ``smner export --quantize int8`` does) and the
PyTorch forward under bfloat16 autocast (``--quantize bf16``). A predictor runs its encoder and
more, so these ratios are the ceilings of the ONNX suite's goals (1.5x the PyTorch encoder in
float32, 2.5x in int8).

With ``--fused`` (onnxruntime's ``transformers`` tools), the encoder is also exported by the
TorchScript exporter and passed through ONNX Runtime's BERT optimizer, which fuses attention,
layer norms and GELU where it recognises them, and timed in float32 (and in int8 where the
quantizer accepts the fused graph): whether those fusions, which ``smner export`` does not
apply, would raise the ceilings.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT


def main() -> None:
    import onnxruntime as ort
    import torch

    from smner.data.conll import read_conll
    from smner.predict.loop import batches
    from smner.predict.onnx_backend import session_options
    from smner.predict.onnx_quantize import quantize_int8
    from smner.predict.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/twitter2017/valid.txt"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--fused", action="store_true", help="also time ONNX Runtime's BERT-optimised graph"
    )
    args = parser.parse_args()
    examples = read_conll(args.data, {"OTHER": "MISC"}).examples
    predictor = Predictor.from_pretrained(args.model)
    words, backbone = predictor.processor.word_pieces, predictor.model.text.backbone.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))
    feeds = [words([examples[i].tokens for i in chunk]) for chunk in batches(order, 32)]

    class Encoder(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    encoder = Encoder().eval()
    last = feeds[-1]
    dims = {0: torch.export.Dim("posts"), 1: torch.export.Dim("pieces", max=512)}
    graph = Path(tempfile.mkdtemp()) / "encoder.onnx"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (last["input_ids"], last["attention_mask"]),
            dynamo=True,
            dynamic_shapes=(dims, dims),
            input_names=["input_ids", "attention_mask"],
        ).save(str(graph))
    options = session_options(ort)  # the backend's: threads follow torch's
    int8_graph = graph.with_name("encoder-int8.onnx")
    quantize_int8(graph, int8_graph)  # as smner export --quantize int8, every layer
    graphs = {"ONNX float32": graph, "ONNX int8": int8_graph}
    if args.fused:
        fused = fused_graph(encoder, backbone, last, graph.with_name("encoder-fused.onnx"))
        graphs["ONNX float32 fused"] = fused
        fused_int8 = fused.with_name("encoder-fused-int8.onnx")
        try:
            quantize_int8(fused, fused_int8)
            graphs["ONNX int8 fused"] = fused_int8
        except RuntimeError as exc:  # the quantizer cannot type the fused contrib operators
            print(f"ONNX int8 fused: not timed, the quantizer refused it ({str(exc)[:120]})")
    sessions = {
        name: ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for name, path in graphs.items()
    }

    def pytorch(bfloat16: bool) -> Callable[[], None]:
        def step() -> None:
            with torch.no_grad(), torch.autocast("cpu", torch.bfloat16, enabled=bfloat16):
                for feed in feeds:
                    encoder(feed["input_ids"], feed["attention_mask"])

        return step

    def onnx(session: Any) -> Callable[[], None]:
        def step() -> None:
            for feed in feeds:
                names = ("input_ids", "attention_mask")
                session.run(None, {name: feed[name].numpy() for name in names})

        return step

    steps = {"PyTorch float32": pytorch(False), "PyTorch bfloat16": pytorch(True)}
    steps.update({name: onnx(session) for name, session in sessions.items()})
    for step in steps.values():
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(args.rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    medians = {name: statistics.median(values) for name, values in times.items()}
    floor = medians["PyTorch float32"]
    print(f"{len(examples)} posts, {torch.get_num_threads()} threads, the encoder alone:")
    for name, seconds in medians.items():
        print(f"  {name}: {seconds:.2f} s, {floor / seconds:.2f}x PyTorch float32")


def fused_graph(encoder: Any, backbone: Any, feed: dict[str, Any], target: Path) -> Path:
    """The encoder exported by the TorchScript exporter (whose attention pattern ONNX
    Runtime's BERT optimizer knows) and optimised by it; prints the fused operators."""
    import torch
    from onnxruntime.transformers.optimizer import optimize_model

    plain = target.with_name("encoder-torchscript.onnx")
    axes = {0: "posts", 1: "pieces"}
    for parameter in backbone.parameters():  # the tracer takes no weights that want gradients
        parameter.requires_grad_(False)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            encoder,
            (feed["input_ids"], feed["attention_mask"]),
            str(plain),
            dynamo=False,
            input_names=["input_ids", "attention_mask"],
            output_names=["hidden"],
            dynamic_axes={"input_ids": axes, "attention_mask": axes, "hidden": axes},
            opset_version=17,
        )
    optimized = optimize_model(
        str(plain),
        model_type="bert",
        num_heads=backbone.config.num_attention_heads,
        hidden_size=backbone.config.hidden_size,
    )
    print(f"BERT optimizer fused: {optimized.get_fused_operator_statistics()}")
    optimized.save_model_to_file(str(target))
    return target


if __name__ == "__main__":
    main()
