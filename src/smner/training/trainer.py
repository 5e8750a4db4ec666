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
from smner.predict.loop import batches, predict_examples, resolve_device
from smner.processing.batching import Batch
from smner.processing.processor import Processor
from smner.saved.card import LOG_FILE, TEST_SCORES_FILE
from smner.training.data import (
    box_targets,
    check_labels,
    new_model,
    read_training_data,
    run_card_facts,
    training_order,
)
from smner.training.distributed import DistributedContext
from smner.training.epoch_end import DEFAULT_EPOCH_END, EpochEnd, EpochReport
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
from smner.training.state import RunState
from smner.training.targets import BoxSupervision

__all__ = ["TrainResult", "Trainer", "TrainingRun", "train"]


@dataclass
class TrainResult:
    best_f1: float
    best_epoch: int
    epochs_run: int
    output_dir: Path
    #: scores of the best model on ``data.test_file``, when one is set
    test_scores: Scores | None = None


@dataclass
class TrainingRun:
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
    state: RunState


class Trainer:
    """Trains ``config`` into ``output_dir``; see the module docstring for the folder layout.

    Under ``torchrun``/``accelerate launch`` every process runs this same code: each takes its
    shard of every global batch (``train.batch_size`` is the global size), gradients are
    averaged by DDP, dev metrics are gathered from all ranks, and only rank 0 writes files.
    ``epoch_end`` lists what happens after each epoch's dev scoring, in order (the default:
    :data:`~smner.training.epoch_end.DEFAULT_EPOCH_END`).
    """

    def __init__(
        self,
        config: ExperimentConfig,
        output_dir: str | Path,
        resume: bool = False,
        epoch_end: Sequence[EpochEnd] = DEFAULT_EPOCH_END,
    ):
        self.config = config
        self.output_dir = Path(output_dir)
        self.resume = resume
        self.epoch_end = list(epoch_end)
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

    def _prepare(self) -> TrainingRun:
        train, dev = read_training_data(self.config)
        seed_everything(self.config.train.seed)
        model, processor, state, saved = self._start(train)
        check_labels(self.config, model.config.labels, train, dev)
        self._reset_run_files(state, resumed=saved is not None)
        model.to(self.device)
        if self.context.is_main:
            config = replace(self.config, model=model.config)
            atomic_write_text(
                self.output_dir / "config.json", json.dumps(to_dict(config), indent=2) + "\n"
            )
            self.facts = run_card_facts(config, train, dev, self.command, self.resume)
        optimizer, scheduler, scaler = self._optimizers(model, len(train), saved)
        return TrainingRun(
            model=model,
            module=self._distributed(model),
            processor=processor,
            train=train,
            dev=dev,
            train_images=self._images(model, processor, train, "train"),
            dev_images=self._images(model, processor, dev, "dev"),
            train_targets=box_targets(model, processor, train, self.config.data, self.log),
            optimizer=optimizer,
            scheduler=scheduler,
            scaler=scaler,
            state=state,
        )

    def _start(
        self, train: list[Example]
    ) -> tuple[NERModel, Processor, RunState, dict[str, Any] | None]:
        """The model to train and where the run stands: from ``last/`` when resuming (with
        the checkpoint's dict, which holds the optimizer's state), else a new model."""
        found = load_last(self.output_dir) if self.resume else None
        if found is None:
            if self.resume:
                self.log(f"no checkpoint in {self.output_dir / 'last'}; starting afresh")
            model, processor = new_model(self.config.model, train)
            return model, processor, RunState(), None
        folder, saved = found
        check_resumable(saved, folder, self.config.train, self.context.world_size, len(train))
        model, processor = load_checkpoint_model(folder)
        state = RunState.from_checkpoint(saved)
        self.log(
            f"resuming from {self.output_dir / 'last'} (epoch {state.epoch + 1}, "
            f"step {state.step_in_epoch} of that epoch)"
        )
        return model, processor, state, saved

    def _reset_run_files(self, state: RunState, resumed: bool) -> None:
        """The log keeps the epochs the checkpoint includes (none for a fresh run); scores of
        an earlier best model must not sit beside this run until it ends."""
        if not self.context.is_main:
            return
        if resumed:
            trim_log(self.output_dir, state.epoch)
        else:
            (self.output_dir / LOG_FILE).unlink(missing_ok=True)
        (self.output_dir / TEST_SCORES_FILE).unlink(missing_ok=True)

    def _optimizers(
        self, model: NERModel, train_posts: int, saved: dict[str, Any] | None
    ) -> tuple[torch.optim.Optimizer, Any, torch.amp.GradScaler | None]:
        """Optimizer, schedule and fp16 scaler, with their state and the RNG's when resuming."""
        cfg = self.config.train
        optimizer = build_optimizer(model, cfg)
        scheduler = build_scheduler(optimizer, cfg, train_posts)
        scaler = None
        if cfg.mixed_precision == "fp16" and self.device.type == "cuda":
            scaler = torch.amp.GradScaler("cuda")
        if saved is not None:
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            if scaler is not None and saved.get("scaler"):
                scaler.load_state_dict(saved["scaler"])
            set_rng_state(saved["rng"][self.context.rank])
        return optimizer, scheduler, scaler

    def _distributed(self, model: NERModel) -> torch.nn.Module:
        """The model wrapped for DDP under a process group, else the model itself."""
        if not self.context.enabled:
            return model
        # Some parameters sit out some batches (the IB critic without two images, the
        # no-image token when every post has one), hence find_unused_parameters.
        return DistributedDataParallel(
            model,
            device_ids=[self.device.index] if self.device.type == "cuda" else None,
            find_unused_parameters=True,
        )

    # --- checkpoints ------------------------------------------------------------------------

    def save_checkpoint(self, run: TrainingRun, epoch: int, step_in_epoch: int) -> None:
        """The full state into ``last/``: rank 0 writes; every rank takes part in gathering
        the RNG states."""
        state = {
            **run.state.to_dict(),
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
        if self.context.is_main:
            save_last(self.output_dir, run.model, run.processor, state)
        self.context.barrier()

    # --- the loop ---------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(self.output_dir) if self.context.is_main else None
        try:
            if lock is not None:
                lock.acquire()
                if lock.stale:
                    self.log(f"taking over the lock of a run that ended ({lock.stale})")
                remove_stale_staging(self.output_dir, self.log)
            run = self._prepare()
            self._epochs(run)
            state = run.state
            result = TrainResult(state.best_f1, state.best_epoch, state.epoch, self.output_dir)
        finally:
            self.context.close()
            if lock is not None:
                lock.release()
        # After the process group is gone: the other ranks do not wait on rank 0's test pass.
        if self.context.is_main:
            result.test_scores = self._test_best()
            finish_run_folder(self.output_dir, self.config.train.keep_last, self.log)
        return result

    def _epochs(self, run: TrainingRun) -> None:
        """Train, score on dev and run the epoch-end callables, epoch by epoch."""
        state = run.state
        if state.stopped:
            self.log("this run already stopped early; nothing to resume")
        for epoch in range(state.epoch, self.config.train.epochs):
            if state.stopped:
                break
            started = time.perf_counter()
            self._train_epoch(run, epoch, state.step_in_epoch)
            scores = self._evaluate_dev(run)
            state.epoch, state.step_in_epoch = epoch + 1, 0
            report = EpochReport(epoch + 1, scores, time.perf_counter() - started)
            for callback in self.epoch_end:
                callback(self, run, report)

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

    def _train_epoch(self, run: TrainingRun, epoch: int, start_step: int) -> None:
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
            run.state.global_step += 1
            seen += len(chunks[step])
            rate = seen / max(time.perf_counter() - started, 1e-9)
            bar.set_postfix(loss=f"{loss:.4f}", posts_per_s=f"{rate:.1f}")
            bar.update(1)
            if cfg.checkpoint_every and run.state.global_step % cfg.checkpoint_every == 0:
                self.save_checkpoint(run, epoch, step + 1)
        bar.close()

    def _training_batch(self, run: TrainingRun, indices: Sequence[int]) -> Batch:
        """The posts ``indices`` of the training set with their labels and box targets."""
        chosen = [run.train[i] for i in indices]
        targets = run.train_targets
        return run.processor(
            [ex.tokens for ex in chosen],
            [ex.entities for ex in chosen],
            run.train_images(indices),
            [targets.attention[i] for i in indices] if targets.attention is not None else None,
            [targets.grounding[i] for i in indices] if targets.grounding is not None else None,
        ).to(self.device)

    def _step(self, run: TrainingRun, indices: Sequence[int]) -> float:
        """One optimizer step over this rank's share, in micro-batches of accumulation."""
        cfg = self.config.train
        run.optimizer.zero_grad(set_to_none=True)
        parts = list(batches(indices, max(1, math.ceil(len(indices) / cfg.accumulate))))
        total = 0.0
        for n, part in enumerate(parts):
            batch = self._training_batch(run, part)
            sync = contextlib.nullcontext()
            if self.context.enabled and n < len(parts) - 1:
                sync = run.module.no_sync()  # type: ignore[operator]
            with sync, autocast(self.device, cfg.mixed_precision):
                output = run.module(batch, labels=run.model.labels_of(batch))
                assert output.loss is not None
                loss = output.loss * (len(part) / len(indices))
            (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
            total += float(loss.detach())
        apply_gradients(run.model, run.optimizer, run.scheduler, run.scaler, cfg.grad_clip)
        return total

    def _evaluate_dev(self, run: TrainingRun) -> Scores:
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
