"""``--quantize int8|bf16``: linear layers in int8 or a bfloat16 forward, the same predictions,
refused where it cannot run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from smner.errors import SmnerError
from smner.model import quantize as quantize_module
from smner.model.quantize import quantize_model
from smner.predict.predictor import Predictor

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "saved-0.1.0"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def entities(predictions: list) -> list:
    return [[(e.start, e.end, e.type) for e in p.entities] for p in predictions]


@pytest.mark.parametrize("kind", ["smner", "bio-tagger"])
def test_int8_swaps_the_encoders_layers_but_down_projections_and_keeps_entities(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(FIXTURE)
    posts = EXPECTED[kind]["posts"]
    plain = Predictor.from_pretrained(FIXTURE / kind)
    quantized = Predictor.from_pretrained(FIXTURE / kind, quantize="int8")
    from torch.ao.nn.quantized.dynamic import Linear as Int8Linear

    layers = dict(quantized.model.text.named_modules())
    down = [n for n in layers if n.endswith("output.dense") and "attention" not in n]
    assert down and all(type(layers[n]) is nn.Linear for n in down)  # they stay float
    rest = [n for n, m in plain.model.text.named_modules() if type(m) is nn.Linear]
    assert set(rest) - set(down) and all(
        isinstance(layers[n], Int8Linear) for n in set(rest) - set(down)
    )
    assert all(type(m) is not Int8Linear for m in plain.model.modules())  # float by default
    want, got = plain.predict_many(posts), quantized.predict_many(posts)
    assert entities(got) == entities(want)
    scores = [(g.score, w.score) for gp, wp in zip(got, want, strict=True)
              for g, w in zip(gp.entities, wp.entities, strict=True)]  # fmt: skip
    assert all(abs(g - w) < 0.05 for g, w in scores)


def test_quantize_refuses_other_modes_and_gpus() -> None:
    model = Predictor.from_pretrained(FIXTURE / "smner").model
    with pytest.raises(SmnerError, match="expected one of int8"):
        quantize_model(model, "int4", torch.device("cpu"))
    with pytest.raises(SmnerError, match="CPU only"):
        quantize_model(model, "int8", torch.device("cuda"))


def test_a_quantized_predictor_is_not_saved(tmp_path: Path) -> None:
    quantized = Predictor.from_pretrained(FIXTURE / "smner", quantize="int8")
    with pytest.raises(SmnerError, match="int8 predictor is not saved"):
        quantized.save_pretrained(tmp_path / "model")
    assert not (tmp_path / "model").exists()


@pytest.mark.integration  # two smner processes
def test_evaluate_and_predict_take_quantize(tmp_path: Path) -> None:
    data = tmp_path / "dev.txt"
    lines = []
    for post in EXPECTED["smner"]["predictions"]:
        tags = ["O"] * len(post["tokens"])
        for e in post["entities"]:
            tags[e["start"]] = f"B-{e['type']}"
            tags[e["start"] + 1 : e["end"]] = [f"I-{e['type']}"] * (e["end"] - e["start"] - 1)
        lines += [f"IMGID:{post['id']}"] + [
            f"{t}\t{g}" for t, g in zip(post["tokens"], tags, strict=True)
        ]
        lines.append("")
    data.write_text("\n".join(lines) + "\n")
    model = str(FIXTURE / "smner")
    run = [sys.executable, "-m", "smner"]
    scored = subprocess.run(
        [*run, "evaluate", "--model", model, "--data", str(data), "--quantize", "int8", "--json"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert json.loads(scored.stdout)["f1"] == pytest.approx(1.0)  # its own float predictions
    predicted = subprocess.run(
        [*run, "predict", "--model", model, "--text", "George visited Paris", "--quantize", "int8"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    assert json.loads(predicted.stdout)["tokens"] == ["George", "visited", "Paris"]


@pytest.mark.parametrize("kind", ["smner", "bio-tagger"])
def test_bf16_runs_the_forward_in_bfloat16_and_keeps_entities(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(FIXTURE)
    monkeypatch.setattr(quantize_module, "native_bfloat16", lambda: True)
    posts = EXPECTED[kind]["posts"]
    plain = Predictor.from_pretrained(FIXTURE / kind)
    fast = Predictor.from_pretrained(FIXTURE / kind, quantize="bf16")
    assert fast.quantized == "bf16" and plain.model.autocast_dtype is None
    seen: list[torch.dtype] = []
    fast.model.register_forward_hook(lambda m, args, out: seen.append(out.logits.dtype))
    want, got = plain.predict_many(posts), fast.predict_many(posts)
    assert seen and set(seen) == {torch.bfloat16}  # the forward ran in bfloat16
    assert all(p.dtype == torch.float32 for p in fast.model.parameters())  # weights kept
    assert entities(got) == entities(want)
    scores = [(g.score, w.score) for gp, wp in zip(got, want, strict=True)
              for g, w in zip(gp.entities, wp.entities, strict=True)]  # fmt: skip
    assert all(abs(g - w) < 0.05 for g, w in scores)


def test_bf16_says_when_the_cpu_emulates_it(monkeypatch: pytest.MonkeyPatch) -> None:
    model = Predictor.from_pretrained(FIXTURE / "smner").model
    monkeypatch.setattr(quantize_module, "native_bfloat16", lambda: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        quantize_model(model, "bf16", torch.device("cpu"))
    assert model.autocast_dtype == torch.bfloat16


def test_a_bf16_predictor_saves_its_float_weights(tmp_path: Path) -> None:
    fast = Predictor.from_pretrained(FIXTURE / "smner", quantize="bf16")
    fast.save_pretrained(tmp_path / "model")
    loaded = Predictor.from_pretrained(tmp_path / "model")
    assert loaded.model.autocast_dtype is None  # a loading choice, not the folder's


def test_native_bfloat16_reads_the_cpu_flags(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import builtins

    real_open = builtins.open
    cpuinfo = tmp_path / "cpuinfo"

    def fake_open(path: object, *args: object, **kwargs: object) -> object:
        return real_open(cpuinfo if path == "/proc/cpuinfo" else path, *args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(builtins, "open", fake_open)
    cpuinfo.write_text("processor: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert quantize_module.native_bfloat16() is True
    cpuinfo.write_text("processor: 0\nflags\t\t: fpu avx2 avx512f\n")
    assert quantize_module.native_bfloat16() is False
    cpuinfo.write_text("processor: 0\nFeatures\t: fp asimd\n")  # ARM: not known here
    assert quantize_module.native_bfloat16() is None
