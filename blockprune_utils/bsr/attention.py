"""``nn.MultiheadAttention`` with a BSR output projection.

``nn.MultiheadAttention`` hands ``out_proj.weight`` to torch's attention function
instead of calling ``out_proj``, so its output projection cannot simply be swapped
for a :class:`~.layers.BSRLinear`.  :class:`BSRMultiheadAttention` takes the place
of the whole attention module and computes what torch's own (non-fused) path
computes - the same input projection, masks, scaled dot-product attention and,
with ``need_weights``, the same attention weights - but calls ``out_proj`` as a
module, so that a BSR layer can run it.  It takes the common configuration (one
embedding size for query, key and value, no ``add_bias_kv``, no
``add_zero_attn``, :func:`attention_supported`) and serves inference (eval mode).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

_HELPERS = ("_canonical_mask", "_none_or_dtype", "_in_projection_packed")  # torch's own mask and projection helpers


def attention_supported(module: nn.Module) -> bool:
    """Whether :class:`BSRMultiheadAttention` can take the place of ``module``."""
    return (type(module) is nn.MultiheadAttention and module._qkv_same_embed_dim and module.bias_k is None
            and not module.add_zero_attn and all(hasattr(F, h) for h in _HELPERS))


class BSRMultiheadAttention(nn.Module):
    """Multi-head attention with the projections of ``mha`` and ``out_proj`` (a
    BSR layer) as its output projection; called like ``nn.MultiheadAttention``."""

    def __init__(self, mha: nn.MultiheadAttention, out_proj: nn.Module):
        super().__init__()
        if not attention_supported(mha):
            raise ValueError("BSRMultiheadAttention takes an nn.MultiheadAttention with one embedding size for query, "
                             "key and value and without add_bias_kv or add_zero_attn")
        self.embed_dim, self.num_heads, self.head_dim = mha.embed_dim, mha.num_heads, mha.head_dim
        self.batch_first, self.dropout, self._qkv_same_embed_dim = mha.batch_first, mha.dropout, True
        self.in_proj_weight = mha.in_proj_weight
        self.in_proj_bias = mha.in_proj_bias
        self.out_proj = out_proj
        self.train(mha.training)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, batch_first={self.batch_first}"

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if self.training and self.dropout > 0:
            raise RuntimeError("BSRMultiheadAttention serves inference: call .eval() first")
        batched = query.dim() == 3
        key_padding_mask = F._canonical_mask(mask=key_padding_mask, mask_name="key_padding_mask",
                                             other_type=F._none_or_dtype(attn_mask), other_name="attn_mask",
                                             target_type=query.dtype)
        attn_mask = F._canonical_mask(mask=attn_mask, mask_name="attn_mask", other_type=None, other_name="",
                                      target_type=query.dtype, check_other=False)
        if self.batch_first and batched:  # to (length, batch, embed), keeping "key is value" for the packed projection
            same_kv, same_qk = key is value, query is key
            query = query.transpose(1, 0)
            key = query if same_qk and same_kv else key.transpose(1, 0)
            value = key if same_kv else value.transpose(1, 0)
        if not batched:
            query, key, value = query.unsqueeze(1), key.unsqueeze(1), value.unsqueeze(1)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        out, weights = self._attend(query, key, value, key_padding_mask, need_weights, attn_mask, is_causal)
        if need_weights and average_attn_weights:
            weights = weights.mean(dim=1)
        if not batched:
            return out.squeeze(1), (weights.squeeze(0) if weights is not None else None)
        return (out.transpose(1, 0) if self.batch_first else out), weights

    def _attend(self, query, key, value, key_padding_mask, need_weights, attn_mask, is_causal):
        tgt_len, bsz, embed = query.shape
        heads, hd = self.num_heads, self.head_dim
        if is_causal and attn_mask is None:
            raise RuntimeError("is_causal needs attn_mask (as in nn.MultiheadAttention)")
        if is_causal and key_padding_mask is None and not need_weights:
            attn_mask = None
        elif key_padding_mask is not None:
            is_causal = False
        q, k, v = F._in_projection_packed(query, key, value, self.in_proj_weight, self.in_proj_bias)
        if attn_mask is not None and attn_mask.dim() == 2:
            attn_mask = attn_mask.unsqueeze(0)
        q = q.view(tgt_len, bsz * heads, hd).transpose(0, 1)
        k = k.view(k.shape[0], bsz * heads, hd).transpose(0, 1)
        v = v.view(v.shape[0], bsz * heads, hd).transpose(0, 1)
        src_len = k.size(1)
        if key_padding_mask is not None:
            kpm = key_padding_mask.view(bsz, 1, 1, src_len).expand(-1, heads, -1, -1).reshape(bsz * heads, 1, src_len)
            attn_mask = kpm if attn_mask is None else attn_mask + kpm
        if need_weights:
            scores = q * math.sqrt(1.0 / float(hd))
            scores = (torch.baddbmm(attn_mask, scores, k.transpose(-2, -1)) if attn_mask is not None
                      else torch.bmm(scores, k.transpose(-2, -1)))
            weights = torch.softmax(scores, dim=-1)
            out = torch.bmm(weights, v).transpose(0, 1).contiguous().view(tgt_len * bsz, embed)
            weights = weights.view(bsz, heads, tgt_len, src_len)
        else:
            if attn_mask is not None:
                attn_mask = (attn_mask.unsqueeze(0) if attn_mask.size(0) == 1 and attn_mask.dim() == 3
                             else attn_mask.view(bsz, heads, -1, src_len))
            out = F.scaled_dot_product_attention(q.view(bsz, heads, tgt_len, hd), k.view(bsz, heads, src_len, hd),
                                                 v.view(bsz, heads, src_len, hd), attn_mask, 0.0, is_causal)
            out = out.permute(2, 0, 1, 3).contiguous().view(bsz * tgt_len, embed)
            weights = None
        return self.out_proj(out).view(tgt_len, bsz, -1), weights
