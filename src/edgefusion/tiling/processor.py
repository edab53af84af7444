"""``TiledAttnProcessor``: diffusers attention with the queries split into tiles.

Each tile computes its scores, an exact softmax over all keys and its output rows on its own:
softmax normalizes along keys, so splitting queries needs no running max or rescaling
(FlashAttention needs those only because it also splits keys). The result equals untiled
attention up to float rounding, and the tiles are separate matmul/softmax subgraphs when traced
to ONNX, which is what an NPU compiler maps onto SRAM-sized pieces.
"""

from __future__ import annotations

import math

import torch


class TiledAttnProcessor:
    """Attention processor for ``diffusers`` ``Attention`` modules with ``num_tiles`` query tiles.

    Mirrors diffusers' ``AttnProcessor2_0`` (norms, masks, residual, output rescale) with the
    scaled-dot-product call replaced by explicit per-tile matmul, softmax, matmul.
    """

    def __init__(self, num_tiles: int = 1):
        if num_tiles < 1:
            raise ValueError(f"num_tiles must be >= 1, got {num_tiles}")
        self.num_tiles = num_tiles

    def __repr__(self) -> str:
        return f"TiledAttnProcessor(num_tiles={self.num_tiles})"

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)
        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)
        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        hidden_states = tiled_attention(query, key, value, attention_mask, self.num_tiles)

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def tiled_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    num_tiles: int,
) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + mask) V over (batch, heads, length, dim) tensors, in query tiles
    of ``ceil(q_len / num_tiles)`` rows (the last tile may be shorter)."""
    scale = 1.0 / math.sqrt(query.shape[-1])
    key_t = key.transpose(-1, -2)
    rows = math.ceil(query.shape[-2] / num_tiles)
    outputs = []
    for start in range(0, query.shape[-2], rows):
        scores = torch.matmul(query[..., start : start + rows, :], key_t) * scale  # S_in tile
        if attention_mask is not None:
            mask = (
                attention_mask
                if attention_mask.shape[-2] == 1
                else attention_mask[..., start : start + rows, :]
            )
            scores = scores + mask
        probs = torch.softmax(scores.float(), dim=-1).to(value.dtype)  # S_out tile
        outputs.append(torch.matmul(probs, value))  # A tile
    return outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-2)
