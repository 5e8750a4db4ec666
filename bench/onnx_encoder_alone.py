"""The text encoder alone on ONNX Runtime against PyTorch: is the runtime faster at all here?

    python bench/onnx_encoder_alone.py --model runs/t17/best [--data valid.txt] [--rounds 5]

Exports the model folder's text encoder by itself (``torch.onnx.export``, the exporter ``smner
export`` uses, batch and length dynamic) and times it against its PyTorch forward on the same
length-ordered batches of 32, in alternating rounds; prints the medians and their ratio. The
ONNX suite's float32 goal (1.5x the PyTorch encoder) needs this ratio above 1.5 to be reachable.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import tempfile
import time
import warnings
from pathlib import Path

from common import ROOT


def main() -> None:
    import onnxruntime as ort
    import torch

    from smner.data.conll import read_conll
    from smner.predict.loop import batches
    from smner.predict.predictor import Predictor

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/twitter2017/valid.txt"
    )
    parser.add_argument("--rounds", type=int, default=5)
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
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, torch.get_num_threads())
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])

    def pytorch() -> None:
        with torch.no_grad():
            for feed in feeds:
                encoder(feed["input_ids"], feed["attention_mask"])

    def onnx() -> None:
        for feed in feeds:
            names = ("input_ids", "attention_mask")
            session.run(None, {name: feed[name].numpy() for name in names})

    pytorch(), onnx()
    times: dict[str, list[float]] = {"pytorch": [], "onnx": []}
    for _ in range(args.rounds):
        for name, step in (("pytorch", pytorch), ("onnx", onnx)):
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    torch_s, onnx_s = (statistics.median(times[n]) for n in ("pytorch", "onnx"))
    print(
        f"{len(examples)} posts, {torch.get_num_threads()} threads: PyTorch encoder "
        f"{torch_s:.2f} s, ONNX Runtime encoder {onnx_s:.2f} s, {torch_s / onnx_s:.2f}x"
    )


if __name__ == "__main__":
    main()
