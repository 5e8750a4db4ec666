"""Two CPU processes (gloo) under torchrun, and under ``accelerate launch``, give the same
model as one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.pipeline_fixture import write_corpus

pytestmark = pytest.mark.integration  # trains, under torch.distributed and accelerate

OVERRIDES = [
    "--set",
    "model.use_ib=false",  # in-batch negatives differ when a batch is split
    "--set",
    "train.epochs=2",
    "--set",
    "train.batch_size=4",
    # Some gradients are exactly zero in theory (an attention key bias) and float noise in
    # practice; Adam would scale that noise up to +-lr per step. A larger epsilon damps it.
    "--set",
    "train.adam_epsilon=1e-4",
]


def run(args: list[str], distributed: bool) -> subprocess.CompletedProcess[str]:
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
        if distributed
        else [sys.executable]
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [*launcher, "-m", "smner.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_two_process_training_matches_one_process(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path)
    single, multi = tmp_path / "single", tmp_path / "multi"
    common = ["train", "--config", str(corpus["config"]), *OVERRIDES]
    run([*common, "--output", str(single)], distributed=False)
    proc = run([*common, "--output", str(multi)], distributed=True)

    # rank 0 alone writes: one log line per epoch, one best/, one last/, nothing left over
    written = sorted(p.name for p in multi.iterdir())
    assert written == ["README.md", "best", "config.json", "last", "log.jsonl"]
    log = [json.loads(line) for line in (multi / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    assert proc.stderr.count("epoch 2: dev") == 1

    a = load_file(str(single / "last" / "model" / "model.safetensors"))
    b = load_file(str(multi / "last" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name

    # dev metrics gathered across ranks equal one process scoring the same weights
    best = max(log, key=lambda r: (r["dev_f1"], -r["epoch"]))
    evaluated = run(
        [
            "evaluate",
            "--model",
            str(multi / "best"),
            "--data",
            str(corpus["dev"]),
            "--images",
            str(corpus["images"]),
            "--json",
        ],
        distributed=False,
    )
    scores = json.loads(evaluated.stdout)
    assert scores["f1"] == pytest.approx(best["dev_f1"], abs=1e-9)
    assert scores["precision"] == pytest.approx(best["dev_precision"], abs=1e-9)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_accelerate_launch_of_two_cpu_processes_matches_one_process(tmp_path: Path) -> None:
    """``accelerate launch`` starts two processes through torch.distributed.run (its
    ``--multi_gpu`` launcher, which on a CPU machine runs gloo); ``--cpu`` alone would start
    one process, as accelerate launches several CPU processes only through MPI."""
    pytest.importorskip("accelerate", reason="accelerate is in the dev extra")
    corpus = write_corpus(tmp_path)
    single, multi = tmp_path / "single", tmp_path / "multi"
    common = ["train", "--config", str(corpus["config"]), *OVERRIDES]
    run([*common, "--output", str(single)], distributed=False)
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launcher += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launcher += ["--dynamo_backend", "no", "--main_process_port", str(free_port())]
    proc = subprocess.run(
        [*launcher, "-m", "smner.cli", *common, "--output", str(multi)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("epoch 2: dev") == 1  # rank 0 alone reports
    state = torch.load(multi / "last" / "trainer_state.pt", weights_only=False)
    assert state["world_size"] == 2
    a = load_file(str(single / "last" / "model" / "model.safetensors"))
    b = load_file(str(multi / "last" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_two_process_run_killed_mid_training_resumes_to_the_same_model(tmp_path: Path) -> None:
    """kill -9 of the launcher and both workers, then --resume under torchrun again."""
    corpus = write_corpus(tmp_path)
    common = [
        "train",
        "--config",
        str(corpus["config"]),
        *OVERRIDES,
        "--set",
        "train.epochs=4",
        "--set",
        "train.checkpoint_every=1",
    ]
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    run([*common, "--output", str(reference)], distributed=True)

    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    proc = subprocess.Popen(
        [*launcher, "--nproc_per_node", "2", "-m", "smner.cli", *common, "--output", str(killed)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    log = killed / "log.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and log.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "training ended before it could be killed"
    # torchrun starts each worker in a session of its own: kill them one by one, then it.
    workers = children(proc.pid)
    assert len(workers) == 2
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 60
    while any(Path(f"/proc/{pid}").exists() for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text().count("\n") < 4

    resumed = run([*common, "--output", str(killed), "--resume"], distributed=True)
    assert resumed.stderr.count("resuming from") == 1  # rank 0 alone says it
    epochs = [json.loads(line)["epoch"] for line in log.read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]
    a = load_file(str(reference / "last" / "model" / "model.safetensors"))
    b = load_file(str(killed / "last" / "model" / "model.safetensors"))
    for name in a:
        assert torch.allclose(a[name], b[name], atol=1e-5), name
