"""Looking inside a timm ViT: the tokens entering block 0, attention probabilities block by block.

timm's attention uses ``F.scaled_dot_product_attention`` when it can (``attn.fused_attn``), which
never materialises the attention matrix. To draw attention maps we recompute the softmax from the
block's own ``qkv`` projection, exactly as the unfused path does (Dosovitskiy et al., 2021, eq. 5 of
the Transformer it builds on: ``softmax(q k^T / sqrt(d_head))``), and check elsewhere that the
result reproduces timm's forward.
"""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block, VisionTransformer

from avpet_core.backbones.vit import patch_grid


def attention_probs(block: Block, x: torch.Tensor) -> torch.Tensor:
    """Attention probabilities of ``block`` for its input tokens ``x`` ``(B, N, D)`` -> ``(B, heads, N, N)``."""
    attn = block.attn
    batch, tokens, dim = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim)
    q, k, _ = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def embed_tokens(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """Patch embedding, CLS token and (resampled) position embeddings: ``(B, 3, H, W) -> (B, 1+N, D)``,
    the input of block 0 — the same operations as timm's ``forward_features`` before its blocks.

    The one place this step is written: the dual-stream and trimodal models embed their streams here.
    Sizes that are not whole patches fail with a clear error (:func:`~avpet_core.backbones.patch_grid`).
    """
    patch_grid(model, *images.shape[-2:])
    return model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(images))))


@torch.no_grad()
def cls_attention_maps(model: VisionTransformer, images: torch.Tensor) -> torch.Tensor:
    """How much the CLS token attends to each patch, per block and head.

    Returns ``(B, blocks, heads, rows, cols)``, each map summing to ``1 - attention on prefix tokens``.
    """
    rows, cols = patch_grid(model, *images.shape[-2:])
    prefix = model.num_prefix_tokens
    x = embed_tokens(model, images)
    maps = []
    for block in model.blocks:
        probs = attention_probs(block, x)
        maps.append(probs[:, :, 0, prefix:].reshape(x.shape[0], -1, rows, cols))
        x = block(x)
    return torch.stack(maps, dim=1)
