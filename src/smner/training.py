"""One trainer for every smner model: batching, optimisation, dev evaluation, checkpoints.

``DIR/best/`` holds the model with the best dev F1 (a folder ``from_pretrained`` loads);
``DIR/last/`` the full state (model, optimizer, scheduler, RNG states, epoch and step), written
atomically, from which ``resume=True`` continues a killed run exactly where it stopped.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from smner.box_targets import BoxSupervision, box_supervision
from smner.config import ExperimentConfig, from_dict, to_dict
from smner.data.batching import Collator, ImageInput
from smner.data.conll import Corpus, read_conll
from smner.data.images import ImageStore
from smner.data.types import Example
from smner.distributed import DistributedContext
from smner.encoders.text import load_tokenizer, resolve_text_encoder
from smner.errors import DataFormatError, SmnerError
from smner.fileio import atomic_write_text, make_staging_dir, replace_directory
from smner.images_input import ImageProvider
from smner.inference import (
    batches,
    collate,
    entity_scorer,
    evaluate_saved_model,
    predict_examples,
    resolve_device,
)
from smner.metrics import EntityScorer, Scores
from smner.model import NERModel, build_collator, build_model
from smner.model.base import TOKENIZER_DIR, file_sha256, write_errors
from smner.runlock import RunLock

STATE_FILE = "trainer_state.pt"
#: ``{file name: SHA-256}`` of the files in ``DIR/last`` besides the model folder
CHECKSUMS_FILE = "checksums.json"
TEST_SCORES_FILE = "test_scores.json"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_order(num_examples: int, seed: int, epoch: int) -> list[int]:
    """The shuffled order of one epoch; a function of (seed, epoch) only, so resume replays it."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    return torch.randperm(num_examples, generator=generator).tolist()


def _clip_groups(model: NERModel) -> list[list[torch.nn.Parameter]]:
    """Trainable parameters in groups clipped apart: each detached head, then the rest."""
    heads = [[p for p in head.parameters() if p.requires_grad] for head in model.detached_heads()]
    apart = {id(p) for group in heads for p in group}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in apart]
    return [group for group in [rest, *heads] if group]


def _prf(scores: Scores) -> str:
    return f"P {100 * scores.precision:.2f} R {100 * scores.recall:.2f} F1 {100 * scores.f1:.2f}"


@dataclass
class TrainResult:
    best_f1: float
    best_epoch: int
    epochs_run: int
    output_dir: Path
    #: scores of the best model on ``data.test_file``, when one is set
    test_scores: Scores | None = None


@dataclass
class _Run:
    """Everything one training run holds between steps."""

    model: NERModel
    module: torch.nn.Module  # the model, or its DistributedDataParallel wrapper
    tokenizer: Any
    collator: Collator
    train: list[Example]
    dev: list[Example]
    train_images: ImageProvider
    dev_images: ImageProvider
    #: what the training posts' boxes teach (attention and grounding targets)
    train_targets: BoxSupervision
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler | None
    state: dict[str, Any]


class Trainer:
    """Trains ``config`` into ``output_dir``; see the module docstring for the folder layout.

    Under ``torchrun``/``accelerate launch`` every process runs this same code: each takes its
    shard of every global batch (``train.batch_size`` is the global size), gradients are
    averaged by DDP, dev metrics are gathered from all ranks, and only rank 0 writes files.
    """

    def __init__(self, config: ExperimentConfig, output_dir: str | Path, resume: bool = False):
        self.config = config
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.context = DistributedContext.from_environment(resolve_device(config.train.device))
        self.device = self.context.device_for(resolve_device(config.train.device))
        #: the command line that started the run, for the model card (set by ``smner train``)
        self.command: str | None = None
        #: facts of the run for the model card (data counts, images found), see smner.card
        self.facts: dict[str, Any] = {}

    def log(self, message: str) -> None:
        if self.context.is_main:
            print(message, file=sys.stderr, flush=True)

    # --- set-up -----------------------------------------------------------------------------

    def _read_data(self) -> tuple[list[Example], list[Example]]:
        data = self.config.data
        if not data.train_file or not data.dev_file:
            raise SmnerError("data.train_file and data.dev_file must both be set")
        limit = data.max_file_mb * 2**20
        if data.test_file:
            # Checked now, scored only after training: a broken file should not wait that long.
            if not Path(data.test_file).is_file():
                raise SmnerError(f"data.test_file: {data.test_file} does not exist")
            read_conll(data.test_file, data.label_aliases, limit)
        train = read_conll(data.train_file, data.label_aliases, limit).examples
        dev = read_conll(data.dev_file, data.label_aliases, limit).examples
        for path, examples in ((data.train_file, train), (data.dev_file, dev)):
            if not examples:
                raise DataFormatError(path, None, "has no posts; expected at least one")
        return train, dev

    def _build(self, train: list[Example]) -> tuple[NERModel, Any]:
        model_cfg = self.config.model
        if not model_cfg.labels:
            labels = sorted({e.label for ex in train for e in ex.entities})
            model_cfg = replace(model_cfg, labels=labels)
        model = build_model(model_cfg)
        tokenizer = load_tokenizer(resolve_text_encoder(model_cfg.text_encoder))
        return model, tokenizer

    def _check_labels(
        self, labels: Sequence[str], train: list[Example], dev: list[Example]
    ) -> None:
        """Refuse a training entity type the model has no label for, before any step fails on it.

        Dev types are checked only against labels set in the config: with labels taken from
        the training file, a dev type it lacks is scored as a miss.
        """
        data = self.config.data
        files = [(data.train_file, train)]
        if self.config.model.labels:
            files.append((data.dev_file, dev))
        known = set(labels)
        for path, examples in files:
            for ex in examples:
                for e in ex.entities:
                    if e.label in known:
                        continue
                    name = repr(e.label)
                    raw = ex.tags[e.start][2:] if ex.tags else e.label
                    if raw != e.label:
                        name = f"{raw!r} (read as {e.label!r} through data.label_aliases)"
                    raise DataFormatError(
                        path,
                        ex.token_line(e.start),
                        f"entity type {name} is not in model.labels {list(labels)}; add it "
                        "there or map it to one of them with data.label_aliases",
                    )

    def _optimizer(self, model: NERModel) -> torch.optim.Optimizer:
        pretrained = {id(p) for p in model.pretrained_parameters()}
        groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            no_decay = p.ndim < 2 or "norm" in name.lower()
            groups.setdefault((id(p) in pretrained, no_decay), []).append(p)
        train = self.config.train
        return torch.optim.AdamW(
            [
                {
                    "params": params,
                    "lr": train.encoder_lr if is_pretrained else train.head_lr,
                    "weight_decay": 0.0 if no_decay else train.weight_decay,
                }
                for (is_pretrained, no_decay), params in sorted(groups.items())
            ],
            eps=train.adam_epsilon,
        )

    def _images(self, model: NERModel, examples: list[Example], name: str) -> ImageProvider:
        """Image inputs; rank 0 fills the feature cache first, the others then read it."""
        cfg = self.config
        store = ImageStore(cfg.data.image_dir)
        provider = None
        for turn in (True, False):
            if self.context.is_main == turn:
                provider = ImageProvider(
                    model,
                    examples,
                    store,
                    cfg.data.feature_cache_dir,
                    progress=cfg.train.progress and self.context.is_main,
                )
            self.context.barrier()
        assert provider is not None
        if provider.enabled:
            self.log(f"{name} {store.summary()}")
            counts = {str(status): n for status, n in store.counts.items()}
            self.facts.setdefault("images", {})[name] = {**counts, "without_id": store.without_id}
        return provider

    def _box_supervision(self, model: NERModel, train: list[Example]) -> BoxSupervision:
        data = self.config.data
        if not data.box_dir:
            if model.grounds:
                raise SmnerError(
                    "model.grounding is on, but data.box_dir is not set: the grounding head "
                    "learns from the boxes of a folder of VOC XML files"
                )
            return BoxSupervision(None, None)
        targets = box_supervision(model, train, data.box_dir, data.image_dir)
        if targets.attention is None and targets.grounding is None:
            self.log("data.box_dir is set, but this model has no span attention to supervise")
        else:
            self.log(targets.summary(train))
        return targets

    def _prepare(self) -> _Run:
        cfg = self.config.train
        train, dev = self._read_data()
        seed_everything(cfg.seed)
        resumed = self._load_last(len(train)) if self.resume else None
        if resumed is not None:
            model, tokenizer, state = resumed
        else:
            model, tokenizer = self._build(train)
            state = {
                "epoch": 0,
                "step_in_epoch": 0,
                "global_step": 0,
                "best_f1": -1.0,
                "best_epoch": 0,
                "bad_epochs": 0,
            }
        self._check_labels(model.config.labels, train, dev)
        if resumed is not None:
            self.log(
                f"resuming from {self.output_dir / 'last'} (epoch {state['epoch'] + 1}, "
                f"step {state['step_in_epoch']} of that epoch)"
            )
            if self.context.is_main:
                self._trim_log(state["epoch"])
        else:
            if self.resume:
                self.log(f"no checkpoint in {self.output_dir / 'last'}; starting afresh")
            if self.context.is_main:
                (self.output_dir / "log.jsonl").unlink(missing_ok=True)
        if self.context.is_main:
            # scores of an earlier best model must not sit beside this run until it ends
            (self.output_dir / TEST_SCORES_FILE).unlink(missing_ok=True)
        model.to(self.device)
        if self.context.is_main:
            config = replace(self.config, model=model.config)
            atomic_write_text(
                self.output_dir / "config.json", json.dumps(to_dict(config), indent=2) + "\n"
            )
            self.facts = run_card_facts(self, config, train, dev)
        module: torch.nn.Module = model
        if self.context.enabled:
            # Some parameters sit out some batches (the IB critic without two images, the
            # no-image token when every post has one), hence find_unused_parameters.
            module = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        optimizer = self._optimizer(model)
        steps_per_epoch = math.ceil(len(train) / (cfg.batch_size * cfg.accumulate))
        total_steps = steps_per_epoch * cfg.epochs
        scheduler = get_linear_schedule_with_warmup(
            optimizer, int(cfg.warmup_ratio * total_steps), total_steps
        )
        scaler = None
        if cfg.mixed_precision == "fp16" and self.device.type == "cuda":
            scaler = torch.amp.GradScaler("cuda")
        if resumed is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            _set_rng_state(state["rng"][self.context.rank])
        return _Run(
            model=model,
            module=module,
            tokenizer=tokenizer,
            collator=build_collator(model.config, tokenizer),
            train=train,
            dev=dev,
            train_images=self._images(model, train, "train"),
            dev_images=self._images(model, dev, "dev"),
            train_targets=self._box_supervision(model, train),
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            state=state,
        )

    # --- checkpoints ------------------------------------------------------------------------

    def _snapshot(self, run: _Run, epoch: int, step_in_epoch: int) -> dict[str, Any]:
        """The full training state; RNG states of every rank (a collective call)."""
        keys = ("global_step", "best_f1", "best_epoch", "bad_epochs")
        return {
            **{k: run.state[k] for k in keys},
            "epoch": epoch,
            "step_in_epoch": step_in_epoch,
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict() if run.scaler is not None else None,
            "rng": self.context.gather(_rng_state()),
            "world_size": self.context.world_size,
            "train_posts": len(run.train),
            "config": to_dict(self.config),
        }

    def _save_last(self, run: _Run, epoch: int, step_in_epoch: int, **extra: Any) -> None:
        """Model folder plus trainer state, swapped in as one folder (rank 0 writes)."""
        state = self._snapshot(run, epoch, step_in_epoch) | extra
        if self.context.is_main:
            last = self.output_dir / "last"
            with write_errors(last):
                staging = make_staging_dir(self.output_dir, ".last.")
                try:
                    run.model.save_pretrained(staging / "model", run.tokenizer)
                    torch.save(state, staging / STATE_FILE)
                    write_state_checksum(staging)
                    replace_directory(staging, last)
                finally:
                    if staging.exists():
                        shutil.rmtree(staging)
        self.context.barrier()

    def _load_last(self, train_posts: int) -> tuple[NERModel, Any, dict[str, Any]] | None:
        last = self.output_dir / "last"
        old = self.output_dir / "last.old"
        if not (last / STATE_FILE).is_file() and (old / STATE_FILE).is_file():
            last = old  # killed between the two renames of replace_directory
        if not (last / STATE_FILE).is_file():
            return None
        verify_state_checksum(last)
        try:
            state = torch.load(last / STATE_FILE, map_location="cpu", weights_only=False)
        except Exception as exc:  # a damaged pickle raises almost anything
            raise SmnerError(
                f"resume: {last / STATE_FILE} cannot be read ({type(exc).__name__}); "
                "start afresh without --resume"
            ) from None
        if not isinstance(state, dict):
            raise SmnerError(f"resume: {last / STATE_FILE} is not a training state")
        self._check_resumable(state, last, train_posts)
        model = NERModel.from_pretrained(last / "model")
        tokenizer = load_tokenizer(last / "model" / TOKENIZER_DIR)
        return model, tokenizer, state

    def _check_resumable(self, state: dict[str, Any], folder: Path, train_posts: int) -> None:
        """Refuse to continue under settings that change the batches or their shuffling.

        Each epoch's order and batches come from the seed, the batch size, accumulation, the
        number of processes and of training posts; changing one would silently mix two runs.
        Raising ``train.epochs`` is allowed: the schedule is rebuilt for the new total.
        """
        saved = state.get("config", {}).get("train", {})
        train = self.config.train
        settings = [
            (f"train.{key}", getattr(train, key), saved.get(key))
            for key in ("seed", "batch_size", "accumulate")
        ]
        settings.append(("the world size", self.context.world_size, state.get("world_size")))
        settings.append(("the number of training posts", train_posts, state.get("train_posts")))
        for name, now, then in settings:
            if then is not None and now != then:
                raise SmnerError(
                    f"resume: {name} is {now} but the checkpoint in {folder} used {then}"
                )

    def _trim_log(self, epochs_done: int) -> None:
        """Drop records of epochs the checkpoint does not include (they will be redone)."""
        path = self.output_dir / "log.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the kill
            if record.get("epoch", 0) <= epochs_done:
                kept.append(line)
        atomic_write_text(path, "".join(f"{line}\n" for line in kept))

    # --- the loop ---------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        cfg = self.config.train
        self.output_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.output_dir) if self.context.is_main else None
        try:
            if lock is not None:
                lock.acquire()
                if lock.stale:
                    self.log(f"taking over the lock of a run that ended ({lock.stale})")
                self._remove_stale_staging()
            run = self._prepare()
            state = run.state
            if state.get("stopped"):
                self.log("this run already stopped early; nothing to resume")
            for epoch in range(state["epoch"], cfg.epochs):
                if state.get("stopped"):
                    break
                start_step = state["step_in_epoch"]
                started = time.perf_counter()
                self._train_epoch(run, epoch, start_step)
                scores = self._evaluate_dev(run)
                self._end_epoch(run, epoch, scores, time.perf_counter() - started)
            result = TrainResult(
                state["best_f1"], state["best_epoch"], state["epoch"], self.output_dir
            )
        finally:
            self.context.close()
            if lock is not None:
                lock.release()
        # After the process group is gone: the other ranks do not wait on rank 0's test pass.
        if self.context.is_main:
            result.test_scores = self._test_best()
            self._finish_folder()
        return result

    def _finish_folder(self) -> None:
        """Model cards with the final log and test scores; ``last/`` dropped unless kept."""
        from smner.card import refresh_run_cards

        if (self.output_dir / "best" / "config.json").is_file():
            refresh_run_cards(self.output_dir)
        if not self.config.train.keep_last:
            for name in ("last", "last.old"):
                shutil.rmtree(self.output_dir / name, ignore_errors=True)
            self.log(f"removed {self.output_dir / 'last'} (train.keep_last is false)")

    def _remove_stale_staging(self) -> None:
        """Delete what a killed run left half-written: staging folders and temporary files.

        Called with the run's lock held, so nothing else can be writing them.
        """
        for path in sorted(self.output_dir.glob(".*")):
            staged = path.is_dir() and path.name.startswith((".last.", ".best."))
            temporary = path.is_file() and path.name.endswith(".tmp")
            if staged or temporary:
                self.log(f"removing {path}, left half-written by a run that was stopped")
                if staged:
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def _test_best(self) -> Scores | None:
        """Score ``best/`` on the test file, once, after every epoch was selected on dev."""
        data = self.config.data
        if not data.test_file or not (self.output_dir / "best").is_dir():
            return None
        result = evaluate_saved_model(
            self.output_dir / "best",
            data.test_file,
            data.image_dir,
            data.label_aliases,
            self.config.train.eval_batch_size,
            self.device,
            data.feature_cache_dir,
            progress=self.config.train.progress,
            max_file_bytes=data.max_file_mb * 2**20,
        )
        scores = result.scores
        record = {"test_file": data.test_file, **scores.to_dict()}
        if result.image_summary:
            record["image_summary"] = result.image_summary
        atomic_write_text(self.output_dir / TEST_SCORES_FILE, json.dumps(record, indent=2))
        self.log(f"test ({data.test_file}): {_prf(scores)}")
        return scores

    def _train_epoch(self, run: _Run, epoch: int, start_step: int) -> None:
        cfg = self.config.train
        run.module.train()
        order = epoch_order(len(run.train), cfg.seed, epoch)
        chunks = [
            c
            for c in batches(order, cfg.batch_size * cfg.accumulate)
            if len(c) >= self.context.world_size  # every rank needs a share
        ]
        bar = tqdm(
            total=len(chunks),
            initial=start_step,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not (cfg.progress and self.context.is_main),
            unit="step",
        )
        started, seen = time.perf_counter(), 0
        for step in range(start_step, len(chunks)):
            loss = self._step(run, self.context.shard(chunks[step]))
            run.state["global_step"] += 1
            seen += len(chunks[step])
            rate = seen / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss:.4f}", posts_per_s=f"{rate:.1f}")
            bar.update(1)
            if cfg.checkpoint_every and run.state["global_step"] % cfg.checkpoint_every == 0:
                self._save_last(run, epoch, step + 1)
        bar.close()

    def _step(self, run: _Run, indices: Sequence[int]) -> float:
        """One optimizer step over this rank's share, in micro-batches of accumulation."""
        cfg = self.config.train
        run.optimizer.zero_grad(set_to_none=True)
        parts = list(batches(indices, max(1, math.ceil(len(indices) / cfg.accumulate))))
        total = 0.0
        for n, part in enumerate(parts):
            batch = collate(
                run.collator,
                run.train,
                part,
                run.train_images,
                with_labels=True,
                attention_targets=run.train_targets.attention,
                box_targets=run.train_targets.grounding,
            )
            batch = batch.to(self.device)
            last = n == len(parts) - 1
            sync = contextlib.nullcontext()
            if self.context.enabled and not last:
                sync = run.module.no_sync()  # type: ignore[operator]
            with sync, self._autocast():
                output = run.module(batch, labels=run.model.labels_of(batch))
                assert output.loss is not None
                loss = output.loss * (len(part) / len(indices))
            (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
            total += float(loss.detach())
        if run.scaler is not None:
            run.scaler.unscale_(run.optimizer)
        if cfg.grad_clip:
            for group in _clip_groups(run.model):
                torch.nn.utils.clip_grad_norm_(group, cfg.grad_clip)
        if run.scaler is not None:
            run.scaler.step(run.optimizer)
            run.scaler.update()
        else:
            run.optimizer.step()
        run.scheduler.step()
        return total

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        precision = self.config.train.mixed_precision
        if precision == "no":
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _evaluate_dev(self, run: _Run) -> Scores:
        """Dev scores over the whole dev set: each rank predicts its share, counts are merged."""
        cfg = self.config.train
        mine = self.context.shard(list(range(len(run.dev))))
        examples = [run.dev[i] for i in mine]
        images = _SubsetImages(run.dev_images, mine)
        with self._autocast():
            predictions = predict_examples(
                run.model,
                run.collator,
                examples,
                images,
                cfg.eval_batch_size,
                self.device,
                cfg.progress and self.context.is_main,
                "dev",
            )
        merged = EntityScorer()
        for counts in self.context.gather(entity_scorer(examples, predictions).counts()):
            merged.merge(EntityScorer.from_counts(counts))
        return merged.result()

    def _end_epoch(self, run: _Run, epoch: int, scores: Scores, seconds: float) -> None:
        cfg, state = self.config.train, run.state
        improved = scores.f1 > state["best_f1"]
        record = {
            "epoch": epoch + 1,
            "step": state["global_step"],
            "dev_precision": scores.precision,
            "dev_recall": scores.recall,
            "dev_f1": scores.f1,
            "best": improved,
            "seconds": round(seconds, 2),
        }
        if improved:
            state.update(best_f1=scores.f1, best_epoch=epoch + 1, bad_epochs=0)
            if self.context.is_main:
                facts = {**self.facts, "best_epoch": epoch + 1, "dev": scores.to_dict()}
                with write_errors(self.output_dir / "best"):
                    run.model.save_pretrained(self.output_dir / "best", run.tokenizer, facts)
        else:
            state["bad_epochs"] += 1
        if self.context.is_main:
            with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        self.log(f"epoch {epoch + 1}: dev {_prf(scores)}" + (" (best)" if improved else ""))
        stop = bool(cfg.patience) and state["bad_epochs"] >= cfg.patience
        state.update(step_in_epoch=0, epoch=epoch + 1, stopped=stop)
        self._save_last(run, epoch + 1, 0, stopped=stop)
        if stop:
            self.log(f"no dev improvement for {cfg.patience} epochs: stopping early")


def run_card_facts(
    trainer: Trainer, config: ExperimentConfig, train: list[Example], dev: list[Example]
) -> dict[str, Any]:
    """What the model card states of the data and the run (see :mod:`smner.card`)."""
    from smner.card import data_facts, environment
    from smner.data.stats import corpus_stats

    data, width = config.data, config.model.max_span_width
    splits = {
        "train": (data.train_file, train),
        "dev": (data.dev_file, dev),
    }
    facts_data = {
        split: data_facts(path, corpus_stats(Corpus(path, examples), width))
        for split, (path, examples) in splits.items()
    }
    if data.test_file:
        test = read_conll(data.test_file, data.label_aliases)
        facts_data["test"] = data_facts(data.test_file, corpus_stats(test, width))
    return {
        "command": trainer.command,
        "resumed": trainer.resume,
        "data": facts_data,
        "images": {},
        "config": to_dict(config),
        "environment": environment(),
    }


class _SubsetImages:
    """An :class:`ImageProvider` restricted to some of its examples (a rank's dev share)."""

    def __init__(self, provider: ImageProvider, indices: list[int]) -> None:
        self.provider, self.indices = provider, indices

    def __call__(self, local: Sequence[int]) -> list[ImageInput | None] | None:
        return self.provider([self.indices[i] for i in local])


def write_state_checksum(folder: Path) -> None:
    """Record the SHA-256 of ``folder/trainer_state.pt`` in ``folder/checksums.json``."""
    record = {STATE_FILE: file_sha256(folder / STATE_FILE)}
    atomic_write_text(folder / CHECKSUMS_FILE, json.dumps(record, indent=2) + "\n")


def verify_state_checksum(folder: Path) -> None:
    """Refuse a training state that does not match its recorded SHA-256 (the model folder
    beside it is verified by :meth:`NERModel.from_pretrained`)."""
    path = folder / CHECKSUMS_FILE
    if not path.is_file():
        return  # a checkpoint written before checksums were recorded
    try:
        recorded = json.loads(path.read_text(encoding="utf-8")).get(STATE_FILE)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        recorded = None
    if not isinstance(recorded, str) or file_sha256(folder / STATE_FILE) != recorded:
        raise SmnerError(
            f"resume: {folder / STATE_FILE} does not match the SHA-256 in {path} (the "
            "checkpoint is damaged); start afresh without --resume"
        )


def _rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def train(
    config: ExperimentConfig | dict[str, Any], output_dir: str | Path, resume: bool = False
) -> TrainResult:
    """Train from a config object or a plain dict (for notebooks); returns the best dev F1.

    >>> smner.train({"data": {"train_file": "train.txt", "dev_file": "dev.txt"}}, "runs/x")
    """
    if isinstance(config, dict):
        config = from_dict(ExperimentConfig, config)
    trainer = Trainer(config, output_dir, resume)
    trainer.command = f"smner.train(config, {str(output_dir)!r}, resume={resume}) from Python"
    return trainer.fit()
