"""Frozen streams computed once: the tokens of every stream of a dual-stream ViT that carries no adapter.

In a :class:`~avpet_core.models.DualStreamViT` a stream without adapters is the frozen ViT run on its
own input: nothing it computes depends on what trains, on the seed or on the epoch. Table 4's rows
make this the common case: the frozen row has two such streams, the audio-only and visual-only rows
one each. So their tokens are computed once per split and read from memory after:

* :func:`stream_tokens` runs one unadapted stream over a whole dataset (eval mode, no gradients)
  and keeps, per segment, what the rest of the model reads of it, stacked as ``(K, N, D)``: for every
  block, the stream's input at each site where the *other* stream's adapters sit (AV-PEA reads the
  other stream's block input ``X_l`` at its attention site, eqs. 7-8), then the stream's final,
  layer-normed tokens (what the head reads). With no adapter anywhere, ``K = 1``: the final tokens.
* :func:`with_frozen_tokens` wraps a dataset so that every item carries ``frozen_<stream>`` (its
  ``(T, K, N, D)`` tokens) instead of that stream's media; :meth:`DualStreamViT.forward` reads them
  in place of running the stream. The tokens are memoised per dataset, stream, sites and backbone
  weights (:func:`backbone_key`), so the rows and seeds of a study that share their splits compute
  each frozen stream once.

The arithmetic is the model's own: the cached tokens are the tensors the uncached forward computes
(``tests/test_frozen_tokens.py`` trains a row both ways and compares every number).
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Mapping

import torch
from torch import nn
from torch.utils.data import Dataset

from avpet_core.evaluation import batches_of
from avpet_core.models.base import STREAMS
from avpet_core.models.dual_stream import MEDIA_NAMES

_MEMO: "weakref.WeakKeyDictionary[Dataset, dict]" = weakref.WeakKeyDictionary()


def frozen_key(stream: str) -> str:
    """The batch key of a stream's cached tokens: ``"frozen_visual"``, ``"frozen_audio"``."""
    return f"frozen_{stream}"


FROZEN_KEYS = tuple(frozen_key(stream) for stream in STREAMS)
"""Every batch key a frozen stream's tokens may come under."""


def run_streams(model, batch: Mapping):
    """``model(frames, audio)`` on a batch, with the tokens of its frozen streams where the batch carries them."""
    frozen = {stream: batch[frozen_key(stream)] for stream in STREAMS if frozen_key(stream) in batch}
    if not frozen:
        return model(batch["frames"], batch["audio"])
    return model(batch.get("frames"), batch.get("audio"), frozen=frozen)


def backbone_key(backbone: nn.Module) -> str:
    """A short hash of a backbone's weights (name, shape and bytes of every tensor of its state)."""
    digest = hashlib.sha1()
    for name, tensor in backbone.state_dict().items():
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()  # not inference mode: the tokens are read by the adapters' autograd graph later
def stream_tokens(model, dataset: Dataset, stream: str, *, batch_size: int = 64) -> torch.Tensor:
    """``(videos, T, K, N, D)``: the frozen ``stream`` of ``model`` over every item of ``dataset``, in order
    (see the module docstring for ``K``). ``model`` must carry no adapter in ``stream``."""
    if stream in model.config.adapted_streams:
        raise ValueError(f"the {stream} stream carries adapters; only a frozen stream can be computed once")
    key = MEDIA_NAMES[stream]
    was_training = model.training
    model.eval()
    try:
        parts = []
        for batch in batches_of(dataset, range(len(dataset)), batch_size):
            media = batch[key]
            lead = media.shape[:-3]
            kept = model.frozen_stream(stream, media.reshape(-1, *media.shape[-3:]))
            parts.append(kept.reshape(*lead, *kept.shape[1:]))
    finally:
        model.train(was_training)
    return torch.cat(parts)


class FrozenTokens(Dataset):
    """``dataset`` whose items carry ``frozen_<stream>`` (their rows of ``tokens[stream]``) in place of
    that stream's media. Attributes the datasets of the book expose (``num_classes`` ...) pass through."""

    def __init__(self, dataset: Dataset, tokens: Mapping[str, torch.Tensor]):
        for stream, values in tokens.items():
            if len(values) != len(dataset):
                raise ValueError(f"{len(values)} rows of {stream} tokens for a dataset of {len(dataset)} items")
        self.dataset, self.tokens = dataset, dict(tokens)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name in ("dataset", "tokens"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __getitem__(self, index: int) -> dict:
        item = dict(self.dataset[index])
        for stream, values in self.tokens.items():
            item.pop(MEDIA_NAMES[stream], None)
            item[frozen_key(stream)] = values[index]
        return item


def with_frozen_tokens(model, dataset: Dataset | None, *, batch_size: int = 64):
    """``dataset`` with the tokens of every frozen stream of ``model`` (:class:`FrozenTokens`), computed
    once per dataset, stream, sites and backbone weights; ``dataset`` itself if ``model`` has no frozen
    stream, is not a dual-stream model, or ``dataset`` is ``None``."""
    streams = getattr(model, "frozen_stream_names", lambda: ())()
    if dataset is None or not streams:
        return dataset
    memo = _MEMO.setdefault(dataset, {})
    weights = backbone_key(model.backbone)
    tokens = {}
    for stream in streams:
        key = (stream, model.read_sites(), weights)
        if key not in memo:
            memo[key] = stream_tokens(model, dataset, stream, batch_size=batch_size)
        tokens[stream] = memo[key]
    return FrozenTokens(dataset, tokens)
