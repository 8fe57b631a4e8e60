"""Adapters for a frozen ViT, one module per method, all with the same interface (:mod:`.base`).

=========  ==========================  ===========  =======================================
name       config                      sites        exchange between the streams
=========  ==========================  ===========  =======================================
houlsby    :class:`BottleneckConfig`   attn         none (the control)
avpea      :class:`AVPEAConfig`        attn         the CLS reads all tokens of the other stream
lavish     :class:`LavishConfig`       attn, mlp    T latent tokens summarise the other stream
lstta      :class:`LSTTAConfig`        between      frame filtering over the video, and local
                                       blocks       exchange across audio, video and question
=========  ==========================  ===========  =======================================

The first three sit beside a block's sublayers of one stream (``adapter(tokens, others)``); LSTTA
sits between the blocks of three encoders and adapts all of them at once
(:class:`~avpet_core.adapters.lstta.LSTTABlock`, used by :mod:`avpet_core.models.trimodal`).
"""

from __future__ import annotations

from avpet_core.adapters.avpea import AVPEAAdapter, AVPEAConfig, cls_cross_attention
from avpet_core.adapters.base import SITES, Adapter, AdapterConfig, AdapterConfigError, bottleneck_width, joined_others
from avpet_core.adapters.bottleneck import Bottleneck, BottleneckAdapter, BottleneckConfig
from avpet_core.adapters.lavish import LAVISH_AVE, LAVISH_AVQA, LavishAdapter, LavishConfig
from avpet_core.adapters.lstta import LSTTABlock, LSTTAConfig

ADAPTER_CONFIGS: dict[str, type[AdapterConfig]] = {
    BottleneckConfig.method: BottleneckConfig,
    AVPEAConfig.method: AVPEAConfig,
    LavishConfig.method: LavishConfig,
    LSTTAConfig.method: LSTTAConfig,
}
"""Adapter config classes by method name."""

METHODS = ("none", *ADAPTER_CONFIGS)
"""Names accepted wherever a method is chosen; ``"none"`` is the frozen backbone alone."""


def adapter_config(method: str, **options) -> AdapterConfig | None:
    """The config of ``method`` with its defaults, changed by ``options``; ``None`` for ``"none"``."""
    if method == "none":
        if options:
            raise AdapterConfigError(f"method 'none' takes no options, got {sorted(options)}")
        return None
    if method not in ADAPTER_CONFIGS:
        raise AdapterConfigError(f"unknown adapter method {method!r}; choose one of {list(METHODS)}")
    return ADAPTER_CONFIGS[method].from_dict(options)


def config_from_dict(values: dict | None) -> AdapterConfig | None:
    """Inverse of :meth:`AdapterConfig.as_dict` (``None`` stays ``None``)."""
    if values is None:
        return None
    values = dict(values)
    return adapter_config(values.pop("method", "none"), **values)


__all__ = [
    "ADAPTER_CONFIGS", "METHODS", "SITES", "Adapter", "AdapterConfig", "AdapterConfigError",
    "AVPEAAdapter", "AVPEAConfig", "Bottleneck", "BottleneckAdapter", "BottleneckConfig",
    "LAVISH_AVE", "LAVISH_AVQA", "LSTTABlock", "LSTTAConfig", "LavishAdapter", "LavishConfig", "adapter_config",
    "bottleneck_width", "cls_cross_attention", "config_from_dict", "joined_others",
]
