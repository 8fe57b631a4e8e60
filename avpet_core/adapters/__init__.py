"""Adapters for frozen encoders, one module per method, in two roles with one interface each (:mod:`.base`).

=========  ==========================  ===========  =======================================
name       config                      sites        exchange between the streams
=========  ==========================  ===========  =======================================
houlsby    :class:`BottleneckConfig`   attn         none (the control)
avpea      :class:`AVPEAConfig`        attn         the CLS reads all tokens of the other stream
lavish     :class:`LavishConfig`       attn, mlp    T latent tokens summarise the other stream
lstta      :class:`LSTTAConfig`        between      frame filtering over the video, and local
                                       blocks       exchange across audio, video and question
=========  ==========================  ===========  =======================================

The first three are **sublayer adapters** (:data:`SUBLAYER_ADAPTERS`, configs
:class:`SublayerAdapterConfig`): they sit beside a block's sublayers of one stream
(``build(dim)``, ``adapter(tokens, others)``). LSTTA is a **stage adapter**
(:data:`STAGE_ADAPTERS`, configs :class:`StageAdapterConfig`): it sits between the stages of three
encoders and adapts all of them at once (``build(dims)``, ``block(tokens, text_mask)``;
:class:`~avpet_core.adapters.lstta.LSTTABlock`, used by :mod:`avpet_core.models.trimodal`). Code
that must tell the two apart asks the base class (``isinstance(config, StageAdapterConfig)``);
:func:`adapter_config` resolves a method name of either role.
"""

from __future__ import annotations

from avpet_core.adapters.avpea import AVPEAAdapter, AVPEAConfig, cls_cross_attention
from avpet_core.adapters.base import (
    SITES,
    Adapter,
    AdapterConfig,
    AdapterConfigError,
    StageAdapter,
    StageAdapterConfig,
    StageOutput,
    SublayerAdapter,
    SublayerAdapterConfig,
    bottleneck_width,
    joined_others,
)
from avpet_core.adapters.bottleneck import Bottleneck, BottleneckAdapter, BottleneckConfig
from avpet_core.adapters.lavish import LAVISH_AVE, LAVISH_AVQA, LavishAdapter, LavishConfig
from avpet_core.adapters.lstta import LSTTABlock, LSTTAConfig

SUBLAYER_ADAPTERS: dict[str, type[SublayerAdapterConfig]] = {
    BottleneckConfig.method: BottleneckConfig,
    AVPEAConfig.method: AVPEAConfig,
    LavishConfig.method: LavishConfig,
}
"""Sublayer adapter config classes by method name (beside the sublayers of one stream)."""

STAGE_ADAPTERS: dict[str, type[StageAdapterConfig]] = {
    LSTTAConfig.method: LSTTAConfig,
}
"""Stage adapter config classes by method name (between the stages of several encoders)."""

ADAPTER_CONFIGS: dict[str, type[AdapterConfig]] = {**SUBLAYER_ADAPTERS, **STAGE_ADAPTERS}
"""Adapter config classes of both roles by method name: the lookup every method name goes through."""

METHODS = ("none", *ADAPTER_CONFIGS)
"""Names accepted wherever a method is chosen; ``"none"`` is the frozen backbone alone."""


def adapter_config(method: str, **options) -> AdapterConfig | None:
    """The config of ``method`` (either role) with its defaults, changed by ``options``; ``None`` for ``"none"``."""
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
    "ADAPTER_CONFIGS",
    "METHODS",
    "SITES",
    "STAGE_ADAPTERS",
    "SUBLAYER_ADAPTERS",
    "Adapter",
    "AdapterConfig",
    "AdapterConfigError",
    "AVPEAAdapter",
    "AVPEAConfig",
    "Bottleneck",
    "BottleneckAdapter",
    "BottleneckConfig",
    "LAVISH_AVE",
    "LAVISH_AVQA",
    "LSTTABlock",
    "LSTTAConfig",
    "LavishAdapter",
    "LavishConfig",
    "StageAdapter",
    "StageAdapterConfig",
    "StageOutput",
    "SublayerAdapter",
    "SublayerAdapterConfig",
    "adapter_config",
    "bottleneck_width",
    "cls_cross_attention",
    "config_from_dict",
    "joined_others",
]
