"""Low-level tensor operations behind the SUM (paper Eq. 1–2) and the attention loss (Eq. 4), and the one
nearest-pixel-centre resize of label / depth / mask maps (:func:`resize_map`).

Everything the model and the losses need from the N x N attention map goes through the functions of this
package, so that the naive path (materialises the map) and the memory-efficient paths (tiles, Triton) are
interchangeable and checked against each other.
"""

from cinet.ops.autocast import float32_region, to_autocast_dtype, upcast_half
from cinet.ops.resize import resize_map
from cinet.ops.sigmoid_attention import (
    ATTENTION_IMPLS,
    attention_bce,
    check_attention_impl,
    ideal_attention_apply,
    resolve_impl,
    sigmoid_attention,
    use_attention_impl,
)

__all__ = [
    "ATTENTION_IMPLS",
    "attention_bce",
    "check_attention_impl",
    "float32_region",
    "ideal_attention_apply",
    "resize_map",
    "resolve_impl",
    "sigmoid_attention",
    "to_autocast_dtype",
    "upcast_half",
    "use_attention_impl",
]
