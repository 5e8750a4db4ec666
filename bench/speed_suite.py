"""The speed suite: training and inference throughput, latency and peak memory.

Each measurement runs in its own process (``--worker``) so that peak RSS belongs to one model.
The floor is the bare text encoder (tokenisation + forward) on the same posts: SMNER's extra
cost (span enumeration, alignment, decoding) reads as a ratio to it.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SUBJECTS = ("encoder floor", "SMNER", "SMNER text-only", "BIO-softmax")


def _posts(data: str, limit: int) -> list[list[str]]:
    from smner.data.conll import read_conll

    return [ex.tokens for ex in read_conll(data).examples][:limit]


def _photos(image_dir: Path) -> list[Any]:
    from PIL import Image

    photos = []
    for path in sorted(image_dir.rglob("*.jpg")):
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    return photos


def _timed(fn: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def worker(
    subject: str,
    data: str,
    image_dir: str,
    limit: int,
    repeats: int,
    model_overrides: dict[str, Any],
) -> dict[str, Any]:
    import torch

    from smner.config.check import from_dict
    from smner.config.model import ModelConfig
    from smner.encoders.text import WordTokenizer, load_tokenizer, resolve_text_encoder
    from smner.model import build_model
    from smner.predict.loop import batches
    from smner.processing.batching import ImageInput
    from smner.processing.processor import Processor

    torch.manual_seed(0)
    posts = _posts(data, limit)
    base = {"labels": ["LOC", "MISC", "ORG", "PER"], **model_overrides}
    if subject == "encoder floor":
        from smner.encoders.text import TextEncoder

        name = resolve_text_encoder(base.get("text_encoder", "minilm"))
        encoder = TextEncoder.from_pretrained(name)
        words = WordTokenizer(load_tokenizer(name))

        def infer(size: int) -> None:
            with torch.no_grad():
                for chunk in batches(range(len(posts)), size):
                    encoder(**words([posts[i] for i in chunk]))

        def train_pass() -> None:
            optimizer = torch.optim.AdamW(encoder.parameters(), lr=1e-5)
            for chunk in batches(range(len(posts)), 16):
                out, sentence = encoder(**words([posts[i] for i in chunk]))
                (out.sum() + sentence.sum()).backward()
                optimizer.step()
                optimizer.zero_grad()

        encoder.eval()
        step = infer
    else:
        overrides = {
            "SMNER": {},
            "SMNER text-only": {"use_image": False},
            "BIO-softmax": {"type": "bio-tagger", "use_image": False},
        }[subject]
        model = build_model(from_dict(ModelConfig, {**base, **overrides}, "model"))
        collator = Processor.for_model(
            model.config, load_tokenizer(resolve_text_encoder(model.config.text_encoder))
        )
        images: list[ImageInput | None] = [None] * len(posts)
        if model.config.use_image:
            photos = _photos(Path(image_dir))
            with torch.no_grad():
                features = model.image(model.image.preprocessing(photos))
            images = [
                ImageInput(
                    pooled=features.pooled[i % len(photos)],
                    regions=features.regions[i % len(photos)],
                )
                for i in range(len(posts))
            ]

        def infer(size: int) -> None:
            for chunk in batches(range(len(posts)), size):
                batch = collator([posts[i] for i in chunk], None, [images[i] for i in chunk])
                model.predict(batch)

        from smner.data.conll import read_conll

        gold = [ex.entities for ex in read_conll(data).examples][:limit]

        def train_pass() -> None:
            model.train()
            optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
            for chunk in batches(range(len(posts)), 16):
                batch = collator(
                    [posts[i] for i in chunk], [gold[i] for i in chunk], [images[i] for i in chunk]
                )
                model(batch, labels=model.labels_of(batch)).loss.backward()
                optimizer.step()
                optimizer.zero_grad()
            model.eval()

        model.eval()
        step = infer
    step(32)  # warm-up
    infer_seconds = _timed(lambda: step(32), repeats)
    latencies = []
    for i in range(min(200, len(posts))):
        started = time.perf_counter()
        if subject == "encoder floor":
            with torch.no_grad():
                encoder(**words([posts[i]]))
        else:
            model.predict(collator([posts[i]], None, [images[i]]))
        latencies.append(time.perf_counter() - started)
    latencies.sort()
    train_seconds = _timed(train_pass, 1)
    return {
        "posts": len(posts),
        "inference_posts_per_s": len(posts) / infer_seconds,
        "latency_p50_ms": 1000 * latencies[len(latencies) // 2],
        "latency_p95_ms": 1000 * latencies[int(0.95 * (len(latencies) - 1))],
        "train_posts_per_s": len(posts) / train_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run(
    data: str, image_dir: str, limit: int, repeats: int, model_overrides: dict[str, Any]
) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for subject in SUBJECTS:
        spec = json.dumps(
            {
                "subject": subject,
                "data": data,
                "image_dir": image_dir,
                "limit": limit,
                "repeats": repeats,
                "model": model_overrides,
            }
        )
        proc = subprocess.run(
            [sys.executable, __file__, "--worker", spec],
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1"},
        )
        if proc.returncode:
            raise RuntimeError(f"{subject} failed:\n{proc.stderr[-3000:]}")
        results[subject] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"{subject}: {results[subject]}", flush=True)
    floor = results["encoder floor"]
    for r in results.values():
        r["inference_ratio_to_floor"] = r["inference_posts_per_s"] / floor["inference_posts_per_s"]
        r["train_ratio_to_floor"] = r["train_posts_per_s"] / floor["train_posts_per_s"]
    results["epoch_time_ratio_smner_to_text_only"] = (
        results["SMNER text-only"]["train_posts_per_s"] / results["SMNER"]["train_posts_per_s"]
    )
    return results


def table(results: dict[str, Any]) -> str:
    rows = [
        "| model | inference posts/s (batch 32) | x floor | p50 / p95 latency ms (batch 1) "
        "| training posts/s | x floor | peak RSS MiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for subject in SUBJECTS:
        r = results[subject]
        rows.append(
            f"| {subject} | {r['inference_posts_per_s']:.0f} | "
            f"{r['inference_ratio_to_floor']:.2f} | {r['latency_p50_ms']:.1f} / "
            f"{r['latency_p95_ms']:.1f} | {r['train_posts_per_s']:.1f} | "
            f"{r['train_ratio_to_floor']:.2f} | {r['peak_rss_mib']:.0f} |"
        )
    ratio = results["epoch_time_ratio_smner_to_text_only"]
    rows.append(f"\nTraining epoch with cached image features vs text-only: {ratio:.2f}x.")
    return "\n".join(rows)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == "--worker":
    spec = json.loads(sys.argv[2])
    print(
        json.dumps(
            worker(
                spec["subject"],
                spec["data"],
                spec["image_dir"],
                spec["limit"],
                spec["repeats"],
                spec["model"],
            )
        )
    )
