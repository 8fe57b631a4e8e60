"""avpet_core: parameter-efficient transfer learning for audio-visual(-language) models.

The library behind the book: frozen timm ViT backbones, the audio front end that turns sound into
spectrogram "images", and (in later chapters) the adapters, models, data, training and the tables
the book reproduces.
"""

__version__ = "0.1.0"
