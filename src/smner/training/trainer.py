"""One trainer for every smner model: the loop over epochs and steps, dev selection, test.

``DIR/best/`` holds the model with the best dev F1 (a folder ``from_pretrained`` loads);
``DIR/last/`` the full state (model, optimizer, scheduler, RNG states, epoch and step), from
which ``resume=True`` continues a killed run exactly where it stopped
(:mod:`smner.training.run_folder`).
The optimizer's parts are in :mod:`smner.training.optimization`, the data checks in
:mod:`smner.training.data`.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from smner.config.check import from_dict, to_dict
from smner.config.experiment import ExperimentConfig
from smner.data.images import ImageStore
from smner.data.types import Example
from smner.evaluation.evaluate import entity_scorer, evaluate_saved_model
from smner.evaluation.metrics import EntityScorer, Scores, format_prf
from smner.fileio import atomic_write_text
from smner.model.base import NERModel
from smner.predict.image_input import ImageProvider, SubsetImages
from smner.predict.loop import batches, collate, predict_examples, resolve_device
from smner.processing.processor import Processor
from smner.saved.card import LOG_FILE, TEST_SCORES_FILE
from smner.saved.folder import write_errors
from smner.training.data import (
    box_targets,
    check_labels,
    new_model,
    read_training_data,
    run_card_facts,
    training_order,
)
from smner.training.distributed import DistributedContext
from smner.training.optimization import apply_gradients, autocast, build_optimizer, build_scheduler
from smner.training.run_folder import (
    check_resumable,
    finish_run_folder,
    load_checkpoint_model,
    load_last,
    remove_stale_staging,
    rng_state,
    save_last,
    seed_everything,
    set_rng_state,
    trim_log,
)
from smner.training.run_lock import RunLock
from smner.training.targets import BoxSupervision

__all__ = ["TrainResult", "Trainer", "train"]


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
    #: turns posts into batches (and is saved with every checkpoint and best model)
    processor: Processor
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
        #: facts of the run for the model card (data counts, images found), see smner.saved.card
        self.facts: dict[str, Any] = {}

    def log(self, message: str) -> None:
        if self.context.is_main:
            print(message, file=sys.stderr, flush=True)

    # --- set-up -----------------------------------------------------------------------------

    def _images(
        self, model: NERModel, processor: Processor, examples: list[Example], name: str
    ) -> ImageProvider:
        """Image inputs; rank 0 fills the feature cache first, the others then read it."""
        cfg = self.config
        store = ImageStore(cfg.data.image_dir)
        provider = None
        for turn in (True, False):
            if self.context.is_main == turn:
                provider = ImageProvider(
                    model,
                    processor,
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

    def _prepare(self) -> _Run:
        cfg = self.config.train
        train, dev = read_training_data(self.config)
        seed_everything(cfg.seed)
        resumed = self._load_last(len(train)) if self.resume else None
        if resumed is not None:
            model, processor, state = resumed
        else:
            model, processor = new_model(self.config.model, train)
            state = {
                "epoch": 0,
                "step_in_epoch": 0,
                "global_step": 0,
                "best_f1": -1.0,
                "best_epoch": 0,
                "bad_epochs": 0,
            }
        check_labels(self.config, model.config.labels, train, dev)
        if resumed is not None:
            self.log(
                f"resuming from {self.output_dir / 'last'} (epoch {state['epoch'] + 1}, "
                f"step {state['step_in_epoch']} of that epoch)"
            )
            if self.context.is_main:
                trim_log(self.output_dir, state["epoch"])
        else:
            if self.resume:
                self.log(f"no checkpoint in {self.output_dir / 'last'}; starting afresh")
            if self.context.is_main:
                (self.output_dir / LOG_FILE).unlink(missing_ok=True)
        if self.context.is_main:
            # scores of an earlier best model must not sit beside this run until it ends
            (self.output_dir / TEST_SCORES_FILE).unlink(missing_ok=True)
        model.to(self.device)
        if self.context.is_main:
            config = replace(self.config, model=model.config)
            atomic_write_text(
                self.output_dir / "config.json", json.dumps(to_dict(config), indent=2) + "\n"
            )
            self.facts = run_card_facts(config, train, dev, self.command, self.resume)
        module: torch.nn.Module = model
        if self.context.enabled:
            # Some parameters sit out some batches (the IB critic without two images, the
            # no-image token when every post has one), hence find_unused_parameters.
            module = DistributedDataParallel(
                model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, len(train))
        scaler = None
        if cfg.mixed_precision == "fp16" and self.device.type == "cuda":
            scaler = torch.amp.GradScaler("cuda")
        if resumed is not None:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"][self.context.rank])
        return _Run(
            model=model,
            module=module,
            processor=processor,
            train=train,
            dev=dev,
            train_images=self._images(model, processor, train, "train"),
            dev_images=self._images(model, processor, dev, "dev"),
            train_targets=box_targets(model, train, self.config.data, self.log),
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
            "rng": self.context.gather(rng_state()),
            "world_size": self.context.world_size,
            "train_posts": len(run.train),
            "config": to_dict(self.config),
        }

    def _save_last(self, run: _Run, epoch: int, step_in_epoch: int, **extra: Any) -> None:
        """The full state into ``last/`` (rank 0 writes; every rank takes part in the gather)."""
        state = self._snapshot(run, epoch, step_in_epoch) | extra
        if self.context.is_main:
            save_last(self.output_dir, run.model, run.processor, state)
        self.context.barrier()

    def _load_last(self, train_posts: int) -> tuple[NERModel, Processor, dict[str, Any]] | None:
        found = load_last(self.output_dir)
        if found is None:
            return None
        folder, state = found
        world = self.context.world_size
        check_resumable(state, folder, self.config.train, world, train_posts)
        model, processor = load_checkpoint_model(folder)
        return model, processor, state

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
                remove_stale_staging(self.output_dir, self.log)
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
            finish_run_folder(self.output_dir, self.config.train.keep_last, self.log)
        return result

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
        self.log(f"test ({data.test_file}): {format_prf(scores)}")
        return scores

    def _train_epoch(self, run: _Run, epoch: int, start_step: int) -> None:
        cfg = self.config.train
        run.module.train()
        order = training_order(cfg, run.train, run.processor, epoch)
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
                run.processor,
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
            with sync, autocast(self.device, cfg.mixed_precision):
                output = run.module(batch, labels=run.model.labels_of(batch))
                assert output.loss is not None
                loss = output.loss * (len(part) / len(indices))
            (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
            total += float(loss.detach())
        apply_gradients(run.model, run.optimizer, run.scheduler, run.scaler, cfg.grad_clip)
        return total

    def _evaluate_dev(self, run: _Run) -> Scores:
        """Dev scores over the whole dev set: each rank predicts its share, counts are merged."""
        cfg = self.config.train
        mine = self.context.shard(list(range(len(run.dev))))
        examples = [run.dev[i] for i in mine]
        images = SubsetImages(run.dev_images, mine)
        with autocast(self.device, cfg.mixed_precision):
            predictions = predict_examples(
                run.model,
                run.processor,
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
                    run.model.save_pretrained(
                        self.output_dir / "best", card_facts=facts, processor=run.processor
                    )
        else:
            state["bad_epochs"] += 1
        if self.context.is_main:
            with open(self.output_dir / LOG_FILE, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(record) + "\n")
        self.log(f"epoch {epoch + 1}: dev {format_prf(scores)}" + (" (best)" if improved else ""))
        stop = bool(cfg.patience) and state["bad_epochs"] >= cfg.patience
        state.update(step_in_epoch=0, epoch=epoch + 1, stopped=stop)
        self._save_last(run, epoch + 1, 0, stopped=stop)
        if stop:
            self.log(f"no dev improvement for {cfg.patience} epochs: stopping early")


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
