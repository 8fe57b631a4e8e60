"""The book's offline language encoder: a micro text Transformer, its word-level tokenizer, and
its masked-language-model pretraining with train-or-load caching.

The paper's language encoder is a Transformer pretrained on real text. Offline, the book pretrains a
micro one (:class:`MicroTextConfig`: 4 pre-norm blocks of width 96, 3 heads, FFN 192) by
masked-language modelling (BERT's recipe: 15% of the tokens chosen, 80% of those replaced by
``[MASK]``, 10% by a random word, 10% kept) on English about the synthetic world
(:mod:`avpet_core.data.synthetic.text`): every SynthAVQA template question, and descriptions of
SynthAVE videos and SynthAVQA scenes. Like the paper's encoder, it never sees a video.

The tokenizer (:class:`WordTokenizer`) is word-level over :func:`~avpet_core.data.synthetic.text.corpus_vocabulary`:
lower-cased words, punctuation dropped (as MUSIC-AVQA's question vocabulary does), ids ``[PAD]`` = 0,
``[UNK]`` = 1, ``[MASK]`` = 2, ``[CLS]`` = 3, then the words; ``[CLS]`` is prepended to every text.

:func:`pretrained_micro_text` trains once and caches the result, through the cache it shares with
the micro-ViT (:mod:`avpet_core.backbones.cached`): in ``$AVPET_CACHE_DIR`` (:mod:`avpet_core.files`),
under a name derived from the whole configuration, the vocabulary and the numeric environment
(:func:`avpet_core.reproducibility.environment_key`), written atomically, with a JSON record (held-out
masked-token accuracy beside the most-frequent-token baseline, history, seconds, numeric
environment). Training is deterministic on CPU for a given configuration and leaves the caller's
global RNG state alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from avpet_core.backbones.cached import cache_paths  # noqa: F401 (micro_text.cache_paths, for its callers)
from avpet_core.backbones.cached import pretraining_key, train_or_load
from avpet_core.backbones.micro_vit import deterministic_cpu
from avpet_core.backbones.text import MICRO_TEXT, TextEncoder, TextEncoderError, check_tokenizer_fits
from avpet_core.data.tokens import tokenise
from avpet_core.data.synthetic.text import TEXT_KINDS, TextCorpusConfig, corpus_vocabulary, text_corpus
from avpet_core.files import short_hash
from avpet_core.reproducibility import NUM_THREADS, numeric_environment
from avpet_core.schedules import warmup_cosine

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[MASK]", "[CLS]")
PAD_ID, UNK_ID, MASK_ID, CLS_ID = range(4)

# ---------------------------------------------------------------------------------------------
# The tokenizer.
# ---------------------------------------------------------------------------------------------


class WordTokenizer:
    """Word-level tokenizer: ``[CLS]`` + lower-cased words, unknown words -> ``[UNK]``.

    Args:
        words: the vocabulary after the four special tokens (default: every word of the corpus).
    """

    def __init__(self, words: Sequence[str] | None = None):
        words = tuple(corpus_vocabulary() if words is None else words)
        clash = sorted(set(words) & set(SPECIAL_TOKENS))
        if clash or len(set(words)) != len(words):
            raise TextEncoderError(f"vocabulary words must be unique and not special tokens: {clash or 'duplicates'}")
        self.tokens = SPECIAL_TOKENS + words
        self.ids = {token: i for i, token in enumerate(self.tokens)}
        self.vocab_size = len(self.tokens)
        self.pad_id, self.unk_id, self.mask_id, self.cls_id = PAD_ID, UNK_ID, MASK_ID, CLS_ID

    def __len__(self) -> int:
        return self.vocab_size

    def tokenize(self, text: str) -> list[str]:
        """``"Is the drum louder?"`` -> ``["is", "the", "drum", "louder"]``."""
        return tokenise(text)

    def ids_of(self, text: str) -> list[int]:
        """``[CLS]`` then each word's id (``[UNK]`` for words outside the vocabulary); not cut."""
        return [CLS_ID] + [self.ids.get(word, UNK_ID) for word in self.tokenize(text)]

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)``: int64 and bool ``(B, max_length)``; texts cut to ``max_length`` tokens,
        padded with ``[PAD]``."""
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        ids = torch.full((len(texts), max_length), PAD_ID, dtype=torch.int64)
        for row, text in enumerate(texts):
            tokens = self.ids_of(text)[:max_length]
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        return ids, ids != PAD_ID

    def decode(self, ids: torch.Tensor) -> list[str]:
        """Texts of ``ids`` ``(B, L)``: the words, special tokens other than ``[UNK]`` and ``[MASK]`` dropped."""
        keep = lambda i: i not in (PAD_ID, CLS_ID)  # noqa: E731
        return [" ".join(self.tokens[i] for i in row if keep(i)) for row in ids.tolist()]

    def __repr__(self) -> str:
        return f"WordTokenizer(vocab_size={self.vocab_size})"


def vocabulary_key(tokenizer: WordTokenizer) -> str:
    """A short hash of the tokenizer's tokens, in order (part of the pretraining's cache key)."""
    return short_hash("\n".join(tokenizer.tokens))


# ---------------------------------------------------------------------------------------------
# The network.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MicroTextConfig:
    """Architecture of the micro text encoder: small enough to pretrain in about 90 s on one CPU core."""

    width: int = 96
    depth: int = 4
    num_heads: int = 3
    ffn_dim: int = 192
    max_length: int = 32  # positions, [CLS] included
    layer_norm_eps: float = 1e-6

    def __post_init__(self):
        if self.width % self.num_heads:
            raise ValueError(f"width {self.width} is not a multiple of num_heads {self.num_heads}")


class TextBlock(nn.Module):
    """A pre-norm Transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``; padded keys are masked out."""

    def __init__(self, config: MicroTextConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.norm1 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.qkv = nn.Linear(config.width, 3 * config.width)
        self.proj = nn.Linear(config.width, config.width)
        self.norm2 = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        self.fc1 = nn.Linear(config.width, config.ffn_dim)
        self.fc2 = nn.Linear(config.ffn_dim, config.width)

    def attention(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5  # (B, H, L, L)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        out = scores.softmax(-1) @ v
        return self.proj(out.transpose(1, 2).reshape(batch, length, width))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x), mask)
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class MicroTextTransformer(nn.Module):
    """Token and position embeddings, :class:`TextBlock` s and a final LayerNorm (trainable)."""

    def __init__(self, config: MicroTextConfig = MicroTextConfig(), vocab_size: int | None = None):
        super().__init__()
        self.config = config
        vocab_size = len(WordTokenizer()) if vocab_size is None else vocab_size
        self.token_embedding = nn.Embedding(vocab_size, config.width)
        self.position_embedding = nn.Parameter(torch.zeros(1, config.max_length, config.width))
        self.blocks = nn.ModuleList(TextBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.width, eps=config.layer_norm_eps)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.02)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[-1]
        if length > self.config.max_length:
            raise TextEncoderError(f"{MICRO_TEXT}: {length} tokens, more than its {self.config.max_length} positions")
        return self.token_embedding(ids) + self.position_embedding[:, :length]

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class MaskedLMHead(nn.Module):
    """BERT's MLM head: dense, GELU, LayerNorm, then a linear map to the vocabulary."""

    def __init__(self, width: int, vocab_size: int, eps: float = 1e-6):
        super().__init__()
        self.dense = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width, eps=eps)
        self.decoder = nn.Linear(width, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(F.gelu(self.dense(x))))


class MicroTextMLM(nn.Module):
    """The micro text Transformer with its MLM head: what pretraining trains and the cache stores."""

    def __init__(self, config: MicroTextConfig = MicroTextConfig(), vocab_size: int | None = None):
        super().__init__()
        self.encoder = MicroTextTransformer(config, vocab_size)
        vocab_size = self.encoder.token_embedding.num_embeddings
        self.head = MaskedLMHead(config.width, vocab_size, config.layer_norm_eps)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, L, vocab)``."""
        return self.head(self.encoder(ids, mask))


class MicroTextEncoder(TextEncoder):
    """The micro text Transformer as a frozen :class:`~avpet_core.backbones.text.TextEncoder`.

    ``embed`` adds token and position embeddings, ``block(i)`` is the i-th pre-norm block, and
    ``final`` the final LayerNorm. ``pretraining`` holds the MLM record when it was pretrained.
    """

    def __init__(self, transformer: MicroTextTransformer, tokenizer: WordTokenizer | None = None):
        super().__init__()
        tokenizer = WordTokenizer() if tokenizer is None else tokenizer
        config = transformer.config
        rows = transformer.token_embedding.num_embeddings
        check_tokenizer_fits(len(tokenizer), rows, tokenizer=repr(tokenizer), model=f"{MICRO_TEXT} ({rows} rows)")
        self.model = transformer
        self.tokenizer = tokenizer
        self.name = self.architecture = MICRO_TEXT
        self.width, self.depth, self.num_heads = config.width, config.depth, config.num_heads
        self.vocab_size, self.max_length = rows, config.max_length
        self.pretraining: dict | None = None
        self.freeze()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.embed(ids)

    def block(self, index: int, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._check_index(index)
        return self.model.blocks[index](x, mask)

    def final(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.norm(x)

    def signature(self) -> dict:
        return {**super().signature(), "ffn_dim": self.model.config.ffn_dim}


def build_micro_text_encoder(config: MicroTextConfig = MicroTextConfig()) -> MicroTextEncoder:
    """A randomly initialised, frozen micro text encoder with the corpus tokenizer."""
    tokenizer = WordTokenizer()
    return MicroTextEncoder(MicroTextTransformer(config, len(tokenizer)), tokenizer)


# ---------------------------------------------------------------------------------------------
# Pretraining: masked-language modelling on the synthetic corpus.
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextPretrainConfig:
    """Everything that determines the pretrained micro text encoder (and so its cache key)."""

    cache_name: ClassVar[str] = MICRO_TEXT  # its cache files are micro_text-{key}.* (not a field: not in the key)

    model: MicroTextConfig = field(default_factory=MicroTextConfig)
    corpus: TextCorpusConfig = field(default_factory=TextCorpusConfig)
    steps: int = 1200
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 60
    mask_probability: float = 0.15
    seed: int = 0
    test_seed: int = 10_000  # the held-out text's masks are drawn from their own seed
    eval_every: int = 300
    num_threads: int = NUM_THREADS

    def key(self) -> str:
        """Hash of the configuration, the vocabulary and the numeric environment it is trained in."""
        return pretraining_key(self, vocabulary=vocabulary_key(WordTokenizer()))


def _encode_kinds(
    corpus: dict[str, Sequence[str]], tokenizer: WordTokenizer, max_length: int
) -> dict[str, torch.Tensor]:
    return {kind: tokenizer.encode(list(corpus[kind]), max_length)[0] for kind in TEXT_KINDS if corpus[kind]}


def mask_tokens(
    ids: torch.Tensor, probability: float, vocab_size: int, g: torch.Generator, replace: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking: ``(inputs, targets)``, targets ``-100`` where nothing is to be predicted.

    Each word (not ``[PAD]`` or ``[CLS]``) is chosen with ``probability``, and at least one per text;
    with ``replace``, a chosen word becomes ``[MASK]`` (80%), a random word (10%) or stays (10%);
    without, every chosen word becomes ``[MASK]`` (evaluation).
    """
    words = ids >= len(SPECIAL_TOKENS)
    draw = torch.rand(ids.shape, generator=g)
    chosen = words & (draw < probability)
    # at least one chosen word per text: the word with the smallest draw where none was chosen
    first = torch.where(words, draw, 2.0).argmin(-1, keepdim=True)
    none = ~chosen.any(-1, keepdim=True) & words.any(-1, keepdim=True)
    chosen |= none & torch.zeros_like(chosen).scatter(-1, first, True)
    targets = torch.where(chosen, ids, -100)
    inputs = ids.clone()
    if replace:
        kind = torch.rand(ids.shape, generator=g)
        random_words = torch.randint(len(SPECIAL_TOKENS), vocab_size, ids.shape, generator=g)
        inputs = torch.where(chosen & (kind < 0.8), MASK_ID, inputs)
        inputs = torch.where(chosen & (kind >= 0.8) & (kind < 0.9), random_words, inputs)
    else:
        inputs = torch.where(chosen, MASK_ID, inputs)
    return inputs, targets


def mask_each_word(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One copy of each text per word, that word alone replaced by ``[MASK]``: ``(inputs, targets)``."""
    rows, columns = (ids >= len(SPECIAL_TOKENS)).nonzero(as_tuple=True)
    inputs = ids[rows].clone()
    targets = torch.full_like(inputs, -100)
    index = torch.arange(len(rows))
    targets[index, columns] = inputs[index, columns]
    inputs[index, columns] = MASK_ID
    return inputs, targets


def held_out_set(
    config: TextPretrainConfig = TextPretrainConfig(), corpus: dict[str, Sequence[str]] | None = None
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The held-out text (the corpus's test split) by kind, masked for evaluation: ``(inputs, targets)``.

    Descriptions are masked once, as in training but every chosen word by ``[MASK]``, with the
    test seed; the few held-out questions once per word (every word of every question is predicted).
    """
    tokenizer = WordTokenizer()
    corpus = text_corpus(config.corpus, "test") if corpus is None else corpus
    encoded = _encode_kinds(corpus, tokenizer, config.model.max_length)
    g = torch.Generator().manual_seed(config.test_seed)
    return {
        kind: mask_each_word(ids)
        if kind == "question"
        else mask_tokens(ids, config.mask_probability, len(tokenizer), g, replace=False)
        for kind, ids in encoded.items()
    }


@torch.no_grad()
def evaluate_mlm(
    model: MicroTextMLM,
    config: TextPretrainConfig = TextPretrainConfig(),
    *,
    held_out: dict | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Masked-token accuracy on the held-out text (:func:`held_out_set`): per kind and over all
    masked tokens (``"all"``)."""
    held_out = held_out_set(config) if held_out is None else held_out
    was_training = model.training
    model.eval()
    correct, total = {}, {}
    for kind, (inputs, targets) in held_out.items():
        correct[kind] = total[kind] = 0
        for start in range(0, len(inputs), batch_size):
            x, y = inputs[start : start + batch_size], targets[start : start + batch_size]
            predicted = model(x, x != PAD_ID).argmax(-1)
            chosen = y != -100
            correct[kind] += (predicted[chosen] == y[chosen]).sum().item()
            total[kind] += chosen.sum().item()
    model.train(was_training)
    result = {kind: correct[kind] / total[kind] for kind in correct}
    result["all"] = sum(correct.values()) / sum(total.values())
    return result


def baseline_accuracy(
    config: TextPretrainConfig = TextPretrainConfig(), *, train_corpus: dict | None = None, held_out: dict | None = None
) -> dict:
    """The trivial baseline: always predict the training corpus's most frequent word (kinds weighed
    equally, as training samples them), scored on the held-out masked tokens like :func:`evaluate_mlm`."""
    tokenizer = WordTokenizer()
    train_corpus = text_corpus(config.corpus, "train") if train_corpus is None else train_corpus
    held_out = held_out_set(config) if held_out is None else held_out
    encoded = _encode_kinds(train_corpus, tokenizer, config.model.max_length)
    frequency = sum(
        torch.bincount(ids.flatten(), minlength=len(tokenizer)).double() / (ids >= len(SPECIAL_TOKENS)).sum()
        for ids in encoded.values()
    )
    frequency[: len(SPECIAL_TOKENS)] = 0
    word = int(frequency.argmax())
    result: dict = {"word": tokenizer.tokens[word]}
    correct = total = 0
    for kind, (_, targets) in held_out.items():
        chosen = targets[targets != -100]
        result[kind] = round((chosen == word).double().mean().item(), 4)
        correct, total = correct + int((chosen == word).sum()), total + len(chosen)
    result["all"] = round(correct / total, 4)
    return result


def corpus_sizes(corpora: dict[str, dict[str, Sequence[str]]], held_out: dict | None = None) -> dict:
    """Texts and words of each kind per split (and, given the held-out set, its masked tokens)."""
    sizes = {
        split: {
            kind: {"texts": len(texts), "words": sum(len(tokenise(t)) for t in texts)} for kind, texts in corpus.items()
        }
        for split, corpus in corpora.items()
    }
    if held_out is not None:
        sizes["held_out_masked_tokens"] = {kind: int((t != -100).sum()) for kind, (_, t) in held_out.items()}
    return sizes


def pretrain_micro_text(
    config: TextPretrainConfig = TextPretrainConfig(), *, progress: bool = True
) -> tuple[MicroTextMLM, dict]:
    """Pretrain the micro text encoder by masked-language modelling on the synthetic corpus.

    Every batch draws each text's kind uniformly (so the ~80 template questions weigh as much as
    the thousands of descriptions), then a text of that kind, then BERT's masks. Returns the MLM
    model (eval mode) and a record: held-out masked-token accuracy (per kind and overall), the
    most-frequent-word baseline, the history, wall time, corpus sizes, the configuration.
    """
    tokenizer = WordTokenizer()
    history = []
    start = time.perf_counter()
    with deterministic_cpu(config.num_threads):
        torch.manual_seed(config.seed)
        model = MicroTextMLM(config.model, len(tokenizer))
        corpora = {"train": text_corpus(config.corpus, "train"), "test": text_corpus(config.corpus, "test")}
        encoded = _encode_kinds(corpora["train"], tokenizer, config.model.max_length)
        held_out = held_out_set(config, corpora["test"])
        kinds = list(encoded)
        decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "position" not in n]
        no_decay = [p for n, p in model.named_parameters() if p.ndim < 2 or "position" in n]
        optimiser = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr,
        )
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimiser, lambda step: warmup_cosine(step, config.steps, config.warmup_steps, decay_during_warmup=True)
        )
        g = torch.Generator().manual_seed(config.seed + 1)
        model.train()
        bar = tqdm(range(config.steps), desc="pretraining micro text encoder", disable=not progress, mininterval=3.0)
        for step in bar:
            kind = torch.randint(len(kinds), (config.batch_size,), generator=g)
            rows = [
                encoded[kinds[k]][int(torch.randint(len(encoded[kinds[k]]), (), generator=g))] for k in kind.tolist()
            ]
            ids = torch.stack(rows)
            ids = ids[:, : int((ids != PAD_ID).sum(-1).max())]  # drop the columns that are padding in every text
            inputs, targets = mask_tokens(ids, config.mask_probability, len(tokenizer), g)
            logits = model(inputs, ids != PAD_ID)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            if (step + 1) % config.eval_every == 0 or step + 1 == config.steps:
                accuracy = evaluate_mlm(model, config, held_out=held_out)
                history.append(
                    {
                        "step": step + 1,
                        "train_loss": round(loss.item(), 4),
                        "held_out_accuracy": {k: round(v, 4) for k, v in accuracy.items()},
                    }
                )
                bar.set_postfix(loss=f"{loss.item():.3f}", held_out=f"{accuracy['all']:.3f}")
        model.eval()
        environment = numeric_environment()
    seconds = round(time.perf_counter() - start, 1)
    final = history[-1]["held_out_accuracy"]
    record = {
        "held_out_accuracy": final["all"],
        "held_out_accuracy_by_kind": {k: v for k, v in final.items() if k != "all"},
        "baseline_most_frequent_word": baseline_accuracy(config, train_corpus=corpora["train"], held_out=held_out),
        "history": history,
        "train_seconds": seconds,
        "corpus": corpus_sizes(corpora, held_out),
        "vocab_size": len(tokenizer),
        "num_threads": config.num_threads,
        "torch_version": torch.__version__,
        "numeric_environment": environment,
        "config": asdict(config),
    }
    return model, record


# ---------------------------------------------------------------------------------------------
# Train or load.
# ---------------------------------------------------------------------------------------------


def _untrained_mlm(config: TextPretrainConfig) -> MicroTextMLM:
    """An MLM of ``config``'s architecture for the cached weights to load into; its initialisation,
    which the load overwrites, leaves the global RNG alone."""
    with torch.random.fork_rng(devices=[]):
        return MicroTextMLM(config.model, len(WordTokenizer()))


def pretrained_micro_text_mlm(
    config: TextPretrainConfig = TextPretrainConfig(), *, retrain: bool = False, progress: bool = True
) -> MicroTextMLM:
    """The pretrained MLM (encoder and head): loaded from the cache, or trained and cached now
    (:func:`~avpet_core.backbones.cached.train_or_load`).

    ``model.pretraining`` holds the training record.
    """
    return train_or_load(
        config,
        train=lambda: pretrain_micro_text(config, progress=progress),
        build=lambda: _untrained_mlm(config),
        retrain=retrain,
    )


def pretrained_micro_text(
    config: TextPretrainConfig = TextPretrainConfig(), *, retrain: bool = False, progress: bool = True
) -> MicroTextEncoder:
    """The pretrained micro text encoder, frozen (its MLM head dropped); ``encoder.pretraining`` is the record."""
    mlm = pretrained_micro_text_mlm(config, retrain=retrain, progress=progress)
    encoder = MicroTextEncoder(mlm.encoder, WordTokenizer())
    encoder.pretraining = mlm.pretraining
    return encoder
