"""A fingerprint of the numeric environment: the hashes of weights after a few training steps.

Two machines whose :func:`weights_fingerprint` agree train the chapters' models to the same bits;
``avpet env --fingerprint`` prints it. :data:`KNOWN_ENVIRONMENTS` lists the environments whose
hashes have been measured: an environment is named by what decides its last bits (CPU vendor, the
MKL branch MKL's verbose log says it runs, ATen's CPU capability, the torch version), so a
machine of a known environment whose hashes differ has changed something the pins do not cover,
while a machine of an unknown one simply has not been measured yet.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from avpet_core.backbones import MicroViTConfig, build_micro_vit
from avpet_core.models import build_dual_stream
from avpet_core.reproducibility import pin_runtime

FINGERPRINT_STEPS = 30
"""AdamW steps of each model of :func:`weights_fingerprint`."""


@dataclass(frozen=True)
class KnownEnvironment:
    """A numeric environment whose fingerprint has been measured (``avpet env --fingerprint``)."""

    name: str
    cpu_vendor: str
    mkl_branch: str
    """What MKL's verbose log prints after ``CNR:`` (:func:`avpet_core.reproducibility.mkl_branch`)."""
    cpu_capability: str
    torch: str
    fingerprint: dict[str, str]

    def matches(self, environment: dict) -> bool:
        """Whether ``environment`` (:func:`environment_identity`) is this one."""
        return (
            environment.get("cpu_vendor"),
            environment.get("mkl_branch"),
            environment.get("cpu_capability"),
            str(environment.get("torch")).split("+")[0],
        ) == (self.cpu_vendor, self.mkl_branch, self.cpu_capability, self.torch)


KNOWN_ENVIRONMENTS: tuple[KnownEnvironment, ...] = (
    # The pins (PINS) on an x86-64 AMD EPYC: MKL does not honour MKL_CBWR=AVX2 on AMD and runs AUTO.
    KnownEnvironment(
        "AMD, pinned (MKL AUTO)",
        "AuthenticAMD",
        "AUTO,STRICT",
        "AVX2",
        "2.11.0",
        {
            "micro_vit": "3fbce63fc3423411e01544a211b962edcb6af3bc4a9d6fd215121ddff691025b",
            "avpea": "16256444f9d2af1e9ba676e66a301d09f427215f3330595fd9fe4ad5be3d4730",
        },
    ),
    # The pins on an Intel Xeon (AVX-512 + AMX; two such machines gave the same hashes).
    KnownEnvironment(
        "Intel, pinned (MKL AVX2)",
        "GenuineIntel",
        "AVX2,STRICT",
        "AVX2",
        "2.11.0",
        {
            "micro_vit": "9f487537b96d2ac8e7c6de5fbd3252836310df1defd8bfaba4727fbd663ba0a3",
            "avpea": "bf3322973f2b2329888a1e794c85189d36f6cd9911c32ea83fe80e81972eb29b",
        },
    ),
)
"""Every environment whose hashes have been measured, with torch 2.11.0 (the pin)."""


def environment_identity(environ: dict[str, str] | None = None) -> dict:
    """This process's numeric environment (:func:`avpet_core.reproducibility.numeric_environment`) plus
    the MKL branch in use under ``environ`` (default: this process's variables)."""
    from avpet_core import reproducibility

    return {**reproducibility.numeric_environment(), "mkl_branch": reproducibility.mkl_branch(environ)}


def known_environment(environment: dict) -> KnownEnvironment | None:
    """The entry of :data:`KNOWN_ENVIRONMENTS` that ``environment`` is, or ``None``."""
    return next((known for known in KNOWN_ENVIRONMENTS if known.matches(environment)), None)


def weights_fingerprint(steps: int = FINGERPRINT_STEPS) -> dict[str, str]:
    """SHA-256 of the weights after ``steps`` AdamW steps of two small models, on fixed random inputs.

    ``micro_vit``: a micro-ViT classifier trained from scratch (patch convolution, attention, MLPs:
    ATen, MKL and oneDNN all take part). ``avpea``: AV-PEA adapters in both streams of a frozen,
    randomly initialised micro-ViT (the CLS cross-attention and gated exchange of chapters 3-6).
    The same environment gives the same hashes on every run; :data:`KNOWN_ENVIRONMENTS` holds the
    measured ones, and two processes whose hashes differ will not train the chapters' models to the
    same numbers either. ``avpet env --fingerprint`` prints them.
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
