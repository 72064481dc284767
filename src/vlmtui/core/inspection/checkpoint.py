"""What a published checkpoint holds beyond the model transformers builds from its config.

Qwen3.5/3.6 checkpoints carry a multi-token-prediction head (`mtp.*`, `mtp_num_hidden_layers`
layers) that transformers 5 does not build: it is in the published parameter count
(`safetensors.total`) but never loaded, so never trained.
"""

from __future__ import annotations

from typing import Any

from vlmtui.core.families import Family, llm_layer_kinds
from vlmtui.core.recipes.policy import unique_parameters


def mtp_head_params(model: Any, family: Family) -> int:
    """Size of the `mtp.*` tensors a Qwen3.5/3.6 checkpoint holds beside the model: per MTP
    layer one full-attention decoder layer of the model (with its MoE block), plus `mtp.fc`
    (h x 2h) and three norms of size h."""
    if not family.mtp_head:
        return 0
    text = model.config.text_config
    layers = int(getattr(text, "mtp_num_hidden_layers", 0) or 0)
    if not layers:
        return 0
    kinds = llm_layer_kinds(n for n, _ in model.named_modules())
    full = min(i for i, k in kinds.items() if k == "full-attention")
    prefix = f"model.language_model.layers.{full}."
    layer = sum(p.numel() for n, p in unique_parameters(model) if n.startswith(prefix))
    h = int(text.hidden_size)
    return layers * layer + 2 * h * h + 3 * h
