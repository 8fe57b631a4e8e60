"""The event classes of SynthAVE (and the instruments of SynthAVQA): a look and a sound each.

A class's look is a shape, a fill texture and a palette (drawn by
:mod:`avpet_core.data.synthetic.drawing`); its sound a source at a pitch register (synthesised
by :mod:`avpet_core.data.synthetic.sound`). :func:`class_spec` gives every index below
:data:`MAX_CLASSES` a distinct pair.
"""

from __future__ import annotations

from dataclasses import dataclass

from avpet_core.data.synthetic.drawing import PALETTES, SHAPES, TEXTURES
from avpet_core.data.synthetic.sound import REGISTERS_HZ, SOUND_SOURCES

MAX_CLASSES = 28


@dataclass(frozen=True)
class ClassSpec:
    """What makes a class recognisable: its object's shape, texture and palette, its sound and pitch."""

    index: int
    shape: str
    texture: str
    palette: str
    sound: str
    pitch_hz: float

    @property
    def name(self) -> str:
        return f"{self.palette} {self.shape}/{self.texture} + {self.sound} {self.pitch_hz:.0f} Hz"


def class_spec(index: int) -> ClassSpec:
    """Class ``index``'s look and sound; unique for every index below :data:`MAX_CLASSES`.

    The look is ``(shape, texture, palette) = (i % 4, (i // 4) % 4, i // 16)`` and the sound
    ``(source, register) = (i % 4, i // 4)``, so no two classes share both, and none shares its look.
    """
    if not 0 <= index < MAX_CLASSES:
        raise ValueError(f"class index {index} outside [0, {MAX_CLASSES})")
    return ClassSpec(
        index=index,
        shape=SHAPES[index % 4],
        texture=TEXTURES[(index // 4) % 4],
        palette=PALETTES[index // 16],
        sound=SOUND_SOURCES[index % 4],
        pitch_hz=REGISTERS_HZ[index // 4],
    )
