"""Frozen language encoders that can be advanced block by block: the offline micro text encoder or
a Hugging Face BERT, RoBERTa or CLIP text tower.

LSTTA (Liu et al., 2023) keeps a pretrained language encoder frozen and inserts its adapters
*between the encoder's blocks*, beside those of the audio and visual encoders. So a language
encoder here is not a black box ``text -> features`` but a :class:`TextEncoder` with the four steps
of its forward pass exposed::

    ids, mask = encoder.tokenizer.encode(["is the drum louder than the bell?"], max_length=16)
    x = encoder.embed(ids)                        # (B, L, width): tokens + positions (+ what precedes block 0)
    for i in range(encoder.depth):
        x = encoder.block(i, x, mask)             # one frozen Transformer block, padding masked out
        ...                                       # an adapter may change x here
    x = encoder.final(x)                          # the final norm (identity where the model has none)

and ``encoder(ids, mask)`` is exactly that loop without adapters. Every parameter is frozen
(``requires_grad=False``) and the encoder stays in eval mode whatever ``train()`` is called with;
gradients still flow *through* the blocks to whatever feeds them (the adapters).

:func:`create_text_encoder` creates one by name, with weights chosen explicitly (nothing is
downloaded unless asked):

* ``"micro_text"`` — the book's offline encoder (:mod:`avpet_core.backbones.micro_text`);
  ``pretrained=True`` means "pretrain it by masked-language modelling on text about the synthetic
  world, or load that pretraining from the cache" (no network).
* a Hugging Face name (``bert-base-uncased``, ``roberta-base``, ``openai/clip-vit-base-patch32``,
  ...) through the optional ``transformers`` package (``pip install "avpet_core[text]"``):
  ``pretrained=True`` downloads weights and tokenizer; ``local_dir=DIR`` loads both from a local
  directory (what ``save_pretrained`` writes); neither builds a randomly initialised model from
  :data:`KNOWN_CONFIGS` (for parameter counts and shape tests; it has no tokenizer), on any
  device — ``device="meta"`` allocates nothing.

BERT and RoBERTa (post-norm, no final norm) step through ``model.embeddings`` and
``model.encoder.layer[i]`` with an additive padding mask; CLIP's text tower through its
``embeddings``, ``encoder.layers[i]`` with the causal + padding mask, and ``final_layer_norm``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from avpet_core.files import first_line

MICRO_TEXT = "micro_text"
"""Name of the book's offline language encoder."""

TEXT_EXTRA = "text"
"""The pip extra that brings ``transformers``: ``pip install "avpet_core[text]"``."""


class TextEncoderError(ValueError):
    """A language encoder cannot be created: unknown name, missing package, files or a tokenizer
    that does not fit the model."""


# ---------------------------------------------------------------------------------------------
# The interface.
# ---------------------------------------------------------------------------------------------


class TextEncoder(nn.Module):
    """A frozen language encoder, advanced block by block (see the module docstring).

    Subclasses set :attr:`name`, :attr:`architecture`, :attr:`width`, :attr:`depth`,
    :attr:`num_heads`, :attr:`vocab_size`, :attr:`max_length` and :attr:`tokenizer`, and implement
    :meth:`embed`, :meth:`block` and :meth:`final`; they call :meth:`freeze` at the end of
    ``__init__``.

    Attributes:
        tokenizer: ``tokenizer.encode(texts, max_length) -> (ids, mask)``: int64 ``(B, L)`` and
            bool ``(B, L)`` (True on real tokens), each text cut or padded to ``L = max_length``.
        max_length: the most tokens the encoder takes (its position table).
    """

    name: str
    architecture: str
    width: int
    depth: int
    num_heads: int
    vocab_size: int
    max_length: int
    tokenizer: object

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` token ids -> ``(B, L, width)``: what enters block 0."""
        raise NotImplementedError

    def block(self, index: int, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Block ``index`` on ``x`` ``(B, L, width)``; ``mask`` ``(B, L)`` bool, True on real tokens."""
        raise NotImplementedError

    def final(self, x: torch.Tensor) -> torch.Tensor:
        """What follows the last block: the final norm, or the identity."""
        return x

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``final(block(depth - 1, ... block(0, embed(ids), mask) ..., mask))``: ``(B, L, width)``."""
        if mask is None:
            mask = torch.ones(ids.shape, dtype=torch.bool, device=ids.device)
        x = self.embed(ids)
        for index in range(self.depth):
            x = self.block(index, x, mask)
        return self.final(x)

    def encode(self, texts: Sequence[str], max_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise ``texts`` (to ``max_length``, default :attr:`max_length`) onto this encoder's device."""
        max_length = self.max_length if max_length is None else max_length
        if not 1 <= max_length <= self.max_length:
            raise TextEncoderError(f"{self.name}: max_length must be in [1, {self.max_length}], got {max_length}")
        ids, mask = self.tokenizer.encode(list(texts), max_length)
        device = next(self.parameters()).device
        return ids.to(device), mask.to(device)

    def signature(self) -> dict:
        """The architecture and its shape, JSON-ready (what an adapter checkpoint must match)."""
        return {
            "architecture": self.architecture,
            "width": int(self.width),
            "depth": int(self.depth),
            "num_heads": int(self.num_heads),
            "vocab_size": int(self.vocab_size),
            "max_length": int(self.max_length),
        }

    def freeze(self) -> "TextEncoder":
        """``requires_grad=False`` on every parameter, and eval mode."""
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        return self.eval()

    def train(self, mode: bool = True) -> "TextEncoder":
        """The encoder is frozen: it stays in eval mode (no dropout) whatever ``mode`` is."""
        return super().train(False)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, width={self.width}, depth={self.depth}, vocab_size={self.vocab_size}"

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.depth:
            raise IndexError(f"{self.name} has blocks 0..{self.depth - 1}, got block {index}")


def additive_mask(mask: torch.Tensor, dtype: torch.dtype, causal: bool = False) -> torch.Tensor:
    """``(B, L)`` bool (True = real) -> an additive attention mask: ``(B, 1, 1, L)``, or
    ``(B, 1, L, L)`` with the causal mask on top; 0 where attention is allowed, the dtype's minimum
    elsewhere (what Hugging Face's eager and SDPA attention both take)."""
    allowed = mask[:, None, None, :].to(torch.bool)
    if causal:
        length = mask.shape[-1]
        allowed = allowed & torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


# ---------------------------------------------------------------------------------------------
# Hugging Face models.
# ---------------------------------------------------------------------------------------------

FAMILIES = {
    # model_type -> (family, model class name): how its layers are stepped through
    "bert": ("bert", "BertModel"),
    "roberta": ("bert", "RobertaModel"),
    "xlm-roberta": ("bert", "XLMRobertaModel"),
    "clip": ("clip", "CLIPTextModel"),
    "clip_text_model": ("clip", "CLIPTextModel"),
}
"""The Hugging Face ``model_type``s :class:`HFTextEncoder` can step through, block by block."""

_BERT_BASE = {}
_BERT_LARGE = {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16, "intermediate_size": 4096}
_ROBERTA = {
    "vocab_size": 50265,
    "max_position_embeddings": 514,
    "type_vocab_size": 1,
    "layer_norm_eps": 1e-5,
    "pad_token_id": 1,
    "bos_token_id": 0,
    "eos_token_id": 2,
}
_CLIP_B = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "pad_token_id": 1,
    "bos_token_id": 49406,
    "eos_token_id": 49407,
}
_CLIP_L = {**_CLIP_B, "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12}

KNOWN_CONFIGS: dict[str, tuple[str, dict]] = {
    "bert-base-uncased": ("bert", _BERT_BASE),  # BertConfig()'s defaults are BERT-base uncased
    "bert-base-cased": ("bert", {"vocab_size": 28996}),
    "bert-large-uncased": ("bert", _BERT_LARGE),
    "bert-large-cased": ("bert", {**_BERT_LARGE, "vocab_size": 28996}),
    "roberta-base": ("roberta", _ROBERTA),
    "roberta-large": ("roberta", {**_ROBERTA, **{k: v for k, v in _BERT_LARGE.items()}}),
    "openai/clip-vit-base-patch32": ("clip_text_model", _CLIP_B),
    "openai/clip-vit-base-patch16": ("clip_text_model", _CLIP_B),
    "openai/clip-vit-large-patch14": ("clip_text_model", _CLIP_L),
}
"""Architectures known without a download: ``name -> (model_type, config overrides)``.

What their ``config.json`` on the Hugging Face hub says; a random model built from one has the
pretrained model's exact shape (BERT-base: 109.48M parameters, its unused pooler included)."""

for _name in list(KNOWN_CONFIGS):  # the hub's namespaced names of the same checkpoints
    if "/" not in _name:
        KNOWN_CONFIGS[("google-bert/" if _name.startswith("bert") else "FacebookAI/") + _name] = KNOWN_CONFIGS[_name]
del _name


def import_transformers():
    """Import ``transformers``, or say that it is missing and which extra brings it."""
    try:
        return importlib.import_module("transformers")
    except ModuleNotFoundError as err:
        if err.name != "transformers":  # the package is there but something it needs is not
            raise TextEncoderError(
                f"transformers is installed but cannot be imported ({err}); reinstall it: "
                f'pip install --force-reinstall "avpet_core[{TEXT_EXTRA}]"'
            ) from err
        raise TextEncoderError(
            "Hugging Face language encoders need the 'transformers' package, which is not installed in this "
            f'environment: pip install "avpet_core[{TEXT_EXTRA}]" (or pip install transformers)'
        ) from err


class HFTokenizer:
    """A Hugging Face tokenizer behind the book's ``encode(texts, max_length) -> (ids, mask)``."""

    def __init__(self, tokenizer):
        self.hf = tokenizer
        self.vocab_size = len(tokenizer)
        self.pad_id = tokenizer.pad_token_id

    def encode(self, texts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        if isinstance(texts, str):
            raise TypeError("encode takes a list of texts, not one string")
        batch = self.hf(list(texts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
        return batch["input_ids"].to(torch.int64), batch["attention_mask"].to(torch.bool)

    def decode(self, ids: torch.Tensor) -> list[str]:
        return self.hf.batch_decode(ids.tolist(), skip_special_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"HFTokenizer({type(self.hf).__name__}, vocab_size={self.vocab_size})"


class MissingTokenizer:
    """The tokenizer of a randomly initialised Hugging Face model: there is none to read."""

    def __init__(self, name: str):
        self.name = name

    def encode(self, texts, max_length):
        raise TextEncoderError(
            f"{self.name}: this randomly initialised encoder has no tokenizer (it was built from a known config "
            "for counting or shape tests); pass pretrained=True (downloads) or local_dir=DIR for one"
        )

    def __repr__(self) -> str:
        return f"MissingTokenizer({self.name!r})"


def check_tokenizer_fits(tokenizer_size: int, table_rows: int, *, tokenizer: str, model: str) -> None:
    """Raise :class:`TextEncoderError` unless a tokenizer of ``tokenizer_size`` tokens fits an
    embedding table of ``table_rows`` rows exactly, naming both sides."""
    if tokenizer_size > table_rows:
        raise TextEncoderError(
            f"tokenizer {tokenizer} has {tokenizer_size} tokens, but the embedding table of {model} has "
            f"{table_rows} rows: ids {table_rows}..{tokenizer_size - 1} would index past it. "
            "Use the tokenizer the model was trained with"
        )
    if tokenizer_size != table_rows:
        raise TextEncoderError(
            f"vocabulary size mismatch: tokenizer {tokenizer} has {tokenizer_size} tokens, the embedding table of "
            f"{model} {table_rows} rows; a tokenizer from another model would map words to the wrong embeddings. "
            "Use the tokenizer the model was trained with"
        )


class HFTextEncoder(TextEncoder):
    """A Hugging Face BERT, RoBERTa or CLIP text model, stepped through block by block (frozen).

    Args:
        model: a ``BertModel``, ``RobertaModel``, ``XLMRobertaModel`` or ``CLIPTextModel``.
        tokenizer: its tokenizer (a Hugging Face tokenizer, or ``None`` for a model without one);
            its size must equal the model's embedding table.
        name: what to call it in messages (the hub name or the directory).
    """

    def __init__(self, model: nn.Module, tokenizer=None, *, name: str | None = None):
        super().__init__()
        config = model.config
        model_type = getattr(config, "model_type", None)
        if model_type not in FAMILIES:
            raise TextEncoderError(
                f"{name or type(model).__name__}: model type {model_type!r} is not supported; "
                f"supported: {', '.join(sorted(FAMILIES))}"
            )
        self.family = FAMILIES[model_type][0]
        if self.family == "bert" and getattr(config, "is_decoder", False):
            raise TextEncoderError(f"{name}: a decoder (is_decoder=True) is not a bidirectional text encoder")
        implementation = getattr(config, "_attn_implementation", None)
        if implementation not in (None, "eager", "sdpa"):
            raise TextEncoderError(
                f"{name}: attention implementation {implementation!r} takes no 4-D mask; "
                "load the model with attn_implementation='sdpa' or 'eager'"
            )
        self.model = model
        self.name = name or getattr(config, "name_or_path", None) or model_type
        self.architecture = "clip_text" if self.family == "clip" else model_type
        self.width = int(config.hidden_size)
        self.depth = int(config.num_hidden_layers)
        self.num_heads = int(config.num_attention_heads)
        self.vocab_size = int(model.get_input_embeddings().num_embeddings)
        positions = int(config.max_position_embeddings)
        if model_type in ("roberta", "xlm-roberta"):  # positions start after the padding index
            positions -= int(config.pad_token_id) + 1
        self.max_length = positions
        inner = getattr(model, "text_model", model)  # transformers 4.x wraps CLIP's text tower once more
        layers = inner.encoder.layers if self.family == "clip" else inner.encoder.layer
        self._causal_argument = "causal_attention_mask" in inspect.signature(layers[0].forward).parameters  # 4.x CLIP
        if tokenizer is None:
            self.tokenizer = MissingTokenizer(self.name)
        else:
            check_tokenizer_fits(
                len(tokenizer),
                self.vocab_size,
                tokenizer=f"{type(tokenizer).__name__} ({getattr(tokenizer, 'name_or_path', '') or 'unnamed'})",
                model=self.name,
            )
            self.tokenizer = HFTokenizer(tokenizer)
        self.freeze()

    @property
    def _inner(self) -> nn.Module:
        return getattr(self.model, "text_model", self.model)

    @property
    def layers(self) -> nn.ModuleList:
        """The model's own Transformer layers (``encoder.layer`` or, for CLIP, ``encoder.layers``)."""
        return self._inner.encoder.layers if self.family == "clip" else self._inner.encoder.layer

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        return self._inner.embeddings(input_ids=ids)

    def block(self, index: int, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self._check_index(index)
        attention_mask = additive_mask(mask, x.dtype, causal=self.family == "clip")
        if self._causal_argument:  # the causal part is already in attention_mask
            out = self.layers[index](x, attention_mask, None)
        else:
            out = self.layers[index](x, attention_mask=attention_mask)
        return out[0] if isinstance(out, tuple) else out  # transformers 4.x layers return tuples

    def final(self, x: torch.Tensor) -> torch.Tensor:
        return self._inner.final_layer_norm(x) if self.family == "clip" else x


def _model_class(transformers, model_type: str):
    return getattr(transformers, FAMILIES[model_type][1])


def close_matches(name: str) -> str:
    names = [MICRO_TEXT, *KNOWN_CONFIGS]
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def known_text_encoders() -> tuple[str, ...]:
    """Every name :func:`create_text_encoder` builds without a download or a directory."""
    return (MICRO_TEXT, *KNOWN_CONFIGS)


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def load_local(transformers, directory: Path):
    if not directory.is_dir():
        raise TextEncoderError(f"{directory}: local model directory not found")
    if not (directory / "config.json").is_file():
        raise TextEncoderError(
            f"{directory}: no model here (config.json missing); save one with "
            "model.save_pretrained(DIR) and tokenizer.save_pretrained(DIR)"
        )
    if not any((directory / f).is_file() for f in WEIGHT_FILES):
        raise TextEncoderError(f"{directory}: no model weights here (none of {', '.join(WEIGHT_FILES)})")
    try:
        config = transformers.AutoConfig.from_pretrained(str(directory))
    except Exception as err:
        raise TextEncoderError(f"{directory}: unreadable config.json ({first_line(err)})") from err
    model_type = _supported_type(config.model_type, str(directory))
    try:
        model = _model_class(transformers, model_type).from_pretrained(str(directory))
    except Exception as err:
        raise TextEncoderError(f"{directory}: the model cannot be loaded ({first_line(err)})") from err
    advice = "save the model's tokenizer there too (tokenizer.save_pretrained(DIR))"
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        raise TextEncoderError(f"{directory}: no tokenizer here (none of {', '.join(TOKENIZER_FILES)}); {advice}")
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(directory))
    except Exception as err:
        raise TextEncoderError(f"{directory}: no readable tokenizer here ({first_line(err)}); {advice}") from err
    return model, tokenizer


def _supported_type(model_type: str, where: str) -> str:
    if model_type not in FAMILIES:
        raise TextEncoderError(
            f"{where}: model type {model_type!r} cannot be stepped through block by block; "
            f"supported: {', '.join(sorted(FAMILIES))}"
        )
    return model_type


def download(transformers, name: str):
    try:
        config = transformers.AutoConfig.from_pretrained(name)
        model_type = _supported_type(config.model_type, name)
        model = _model_class(transformers, model_type).from_pretrained(name)
        tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    except TextEncoderError:
        raise
    except Exception as err:
        raise TextEncoderError(
            f"{name}: could not download the model or its tokenizer ({first_line(err)}); "
            "without network access, pass local_dir=DIR with a saved copy"
        ) from err
    return model, tokenizer


def from_known_config(transformers, name: str, device):
    model_type, overrides = KNOWN_CONFIGS[name]
    if FAMILIES[model_type][0] == "clip":
        config = transformers.CLIPTextConfig(**overrides)
    else:
        config = transformers.AutoConfig.for_model(model_type, **overrides)
    with torch.device(device or "cpu"):
        return _model_class(transformers, model_type)(config)
