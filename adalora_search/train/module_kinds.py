"""What kind of matrix an adapted module is (query, value, ffn_in, ...), from its name, for any model family:
the report's heatmap columns, and matching target-module choices across models (a warm start).
"""

from __future__ import annotations

import re

# (pattern on the module name, type label), first match wins; ordered as in a transformer block
MODULE_TYPES: tuple[tuple[str, str], ...] = (
    (r"(^|\.)(c_attn|qkv_proj|query_key_value|Wqkv)$", "qkv"),  # fused query/key/value (GPT-2, Phi-3, ...)
    (r"(^|\.)(query|query_proj|q_proj|q)$", "query"),
    (r"(^|\.)(key|key_proj|k_proj|k)$", "key"),
    (r"(^|\.)(value|value_proj|v_proj|v)$", "value"),
    (r"attention\.output\.dense$|attn\.c_proj$|(^|\.)(o_proj|out_proj|o)$", "attn_out"),
    (r"(^|\.)(gate_proj|w1|wi_0)$", "ffn_gate"),  # gated MLPs (Llama, Qwen, SmolLM, T5 v1.1): gate, up, down
    (r"intermediate\.dense$|mlp\.c_fc$|(^|\.)(fc1|up_proj|wi|w3|wi_1)$", "ffn_in"),
    (r"(^|\.)output\.dense$|mlp\.c_proj$|(^|\.)(fc2|down_proj|wo|w2)$", "ffn_out"),
    (r"pooler\.dense$", "pooler"),
)
TYPE_ORDER = [label for _, label in MODULE_TYPES]


def module_type(name: str) -> str:
    """The module's kind (query, value, ffn_in, ...) for the heatmaps; the name's tail when unknown."""
    for pattern, label in MODULE_TYPES:
        if re.search(pattern, name):
            return label
    return ".".join(name.split(".")[-2:])
