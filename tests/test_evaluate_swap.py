"""Swapping the attention backend at evaluation keeps the mask the model was trained with."""

import pytest

from trackformers.inference.loader import swap_attention_kwargs

FLEX = {
    "_target_": "trackformers.attention.flex.FlexAttention",
    "mask": "cluster",
    "group_size": 64,
    "sector_size": 1024,
    "adjacency": 2,
    "block_size": 128,
    "impl": "auto",
    "dynamic": None,
}
WINDOWED = {
    "_target_": "trackformers.attention.flex.WindowedAttention",
    "window": 384,
    "block_size": 128,
    "impl": "auto",
}
FUSED_WINDOW = {
    "_target_": "trackformers.attention.fused.FusedAttention",
    "mask": "window",
    "window": 384,
    "group_size": 128,
    "sector_size": 4096,
    "adjacency": 1,
}


def test_cluster_settings_carry_over_to_fused():
    from trackformers.attention import build

    kw = swap_attention_kwargs(FLEX, "fused")
    assert kw == {"mask": "cluster", "group_size": 64, "sector_size": 1024, "adjacency": 2}
    backend = build("fused", **kw)
    assert (backend.mask, backend.adjacency) == ("cluster", 2)


def test_windowed_run_swapped_to_fused_keeps_its_window():
    assert swap_attention_kwargs(WINDOWED, "fused") == {"mask": "window", "window": 384}
    assert swap_attention_kwargs(FUSED_WINDOW, "windowed") == {"window": 384}


def test_dense_takes_nothing_and_unknown_backends_are_named():
    assert swap_attention_kwargs(FLEX, "dense") == {}
    with pytest.raises(KeyError, match="unknown attention backend 'flash'"):
        swap_attention_kwargs(FLEX, "flash")
