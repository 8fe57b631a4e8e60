"""A fingerprint of the numeric environment: the hashes of weights after a few training steps.

Two machines whose :func:`weights_fingerprint` agree train the chapters' models to the same bits;
``avpet env --fingerprint`` prints it and ``tests/test_fingerprint.py`` holds the book's.
"""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from avpet_core.backbones import MicroViTConfig, build_micro_vit
from avpet_core.models import build_dual_stream
from avpet_core.reproducibility import pin_runtime

FINGERPRINT_STEPS = 30
"""AdamW steps of each model of :func:`weights_fingerprint`."""


def weights_fingerprint(steps: int = FINGERPRINT_STEPS) -> dict[str, str]:
    """SHA-256 of the weights after ``steps`` AdamW steps of two small models, on fixed random inputs.

    ``micro_vit``: a micro-ViT classifier trained from scratch (patch convolution, attention, MLPs:
    ATen, MKL and oneDNN all take part). ``avpea``: AV-PEA adapters in both streams of a frozen,
    randomly initialised micro-ViT (the CLS cross-attention and gated exchange of chapters 3-6).
    The same environment gives the same hashes on every run; the committed ones
    (``tests/test_fingerprint.py``) are the book's, and a machine whose hashes differ will not
    reproduce the chapters' trained numbers either. ``avpet env --fingerprint`` prints them.
    """
    def digest(tensors) -> str:
        h = hashlib.sha256()
        for name, tensor in tensors:
            h.update(name.encode())
            h.update(tensor.detach().contiguous().numpy().tobytes())
        return h.hexdigest()

    pin_runtime()
    with torch.random.fork_rng(devices=[]):
        generator = torch.Generator().manual_seed(0)
        torch.manual_seed(0)
        vit = build_micro_vit(MicroViTConfig(), num_classes=16)
        images, labels = torch.rand(16, 3, 48, 48, generator=generator), torch.randint(16, (16,), generator=generator)
        optimiser = torch.optim.AdamW(vit.parameters(), lr=1e-3)
        for _ in range(steps):
            loss = F.cross_entropy(vit(images), labels)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        micro_vit = digest(sorted(vit.state_dict().items()))

        torch.manual_seed(1)
        model = build_dual_stream("micro_vit", "avpea", "both", pretrained=False)
        head = torch.nn.Linear(2 * model.embed_dim, 11)
        frames = torch.rand(2, 2, 3, 48, 48, generator=generator)
        audio = torch.randn(2, 2, 3, 64, 96, generator=generator)
        targets = torch.randint(11, (2, 2), generator=generator)
        optimiser = torch.optim.AdamW([*model.adapters.parameters(), *head.parameters()], lr=1e-2)
        for _ in range(steps):
            out = model(frames, audio)
            logits = head(torch.cat([out.visual_cls, out.audio_cls], -1))
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
        avpea = digest([*sorted(model.adapters.state_dict().items()), *sorted(head.state_dict().items())])
    return {"micro_vit": micro_vit, "avpea": avpea}

