"""The predictor against its floor, in one process: alternating rounds, medians.

The floor is the model's own text encoder (tokenisation + forward) on the same batches. Every
round times each subject once, in turn, so that the machine's load falls on all of them alike:
the floor, SMNER's prediction with cached image features (collation, model, decoding), and the
same with ``--quantize int8``. Batches are the posts in length order (as the Predictor groups
them) and in file order (as the speed suite batches them).
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path
from typing import Any

ORDERS = ("length order", "file order")
SUBJECTS = ("encoder floor", "SMNER", "SMNER int8")


def run(
    data: str, image_dir: str, limit: int, rounds: int, model_overrides: dict[str, Any]
) -> dict[str, Any]:
    import torch

    from smner.config.check import from_dict
    from smner.config.model import ModelConfig
    from smner.data.conll import read_conll
    from smner.encoders.text import load_tokenizer, resolve_text_encoder
    from smner.model import build_model
    from smner.model.quantize import quantize_model
    from smner.predict.loop import batches
    from smner.processing.batching import ImageInput
    from smner.processing.processor import Processor
    from speed_suite import _photos

    torch.manual_seed(0)
    posts = [ex.tokens for ex in read_conll(data).examples][:limit]
    values = {"labels": ["LOC", "MISC", "ORG", "PER"], **model_overrides}
    model = build_model(from_dict(ModelConfig, values, "model")).eval()
    processor = Processor.for_model(
        model.config, load_tokenizer(resolve_text_encoder(model.config.text_encoder))
    )
    int8 = quantize_model(copy.deepcopy(model), "int8", torch.device("cpu"))
    photos = _photos(Path(image_dir))
    with torch.no_grad():
        features = model.image(processor.pixels(photos))
    images = [
        ImageInput(
            pooled=features.pooled[i % len(photos)], regions=features.regions[i % len(photos)]
        )
        for i in range(len(posts))
    ]
    orders = {
        "length order": sorted(range(len(posts)), key=lambda i: len(posts[i])),
        "file order": list(range(len(posts))),
    }
    words = processor.word_pieces

    def floor(order: list[int]) -> None:
        with torch.no_grad():
            for chunk in batches(order, 32):
                encoded = words([posts[i] for i in chunk])
                model.text(**encoded)

    def predictor(which: Any) -> Any:
        def step(order: list[int]) -> None:
            for chunk in batches(order, 32):
                batch = processor([posts[i] for i in chunk], None, [images[i] for i in chunk])
                which.predict(batch)

        return step

    steps = {"encoder floor": floor, "SMNER": predictor(model), "SMNER int8": predictor(int8)}
    results: dict[str, Any] = {"posts": len(posts), "rounds": rounds}
    for name, order in orders.items():
        times: dict[str, list[float]] = {s: [] for s in SUBJECTS}
        for subject in SUBJECTS:
            steps[subject](order)  # warm-up
        for _ in range(rounds):
            for subject in SUBJECTS:
                started = time.perf_counter()
                steps[subject](order)
                times[subject].append(time.perf_counter() - started)
        medians = {s: statistics.median(t) for s, t in times.items()}
        results[name] = {
            s: {
                "posts_per_s": len(posts) / medians[s],
                "ratio_to_floor": medians["encoder floor"] / medians[s],
                "seconds": times[s],
            }
            for s in SUBJECTS
        }
        print(name, {s: round(r["ratio_to_floor"], 3) for s, r in results[name].items()})
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        f"{results['posts']} posts, batch 32, median of {results['rounds']} alternating rounds.",
        "",
        "| batches | subject | posts/s | x floor |",
        "|---|---|---|---|",
    ]
    for order in ORDERS:
        for subject in SUBJECTS:
            r = results[order][subject]
            rows.append(
                f"| {order} | {subject} | {r['posts_per_s']:.0f} | {r['ratio_to_floor']:.2f} |"
            )
    return "\n".join(rows)
