"""rnnreg.bench.timing: the FLOP formula against hand counts."""

from __future__ import annotations

from rnnreg import bench


def test_step_flops_matches_a_hand_count_for_a_tiny_bilstm() -> None:
    # lengths 3 and 1 -> 4 real tokens; E=2, H=3, C=2, one bidirectional LSTM layer.
    # Forward, per token and direction: 4 gates x 3 units x (2 inputs + 3 recurrent) x 2 FLOPs = 120.
    # 4 tokens x 2 directions x 120 = 960; head: 2 sequences x (6 features x 2 classes x 2 FLOPs = 24) = 48.
    # Forward 1008; backward twice that; step 3 x 1008 = 3024.
    assert bench.step_flops([3, 1], embed_dim=2, hidden_dim=3, num_classes=2) == 3024


def test_step_flops_matches_a_hand_count_for_a_two_layer_gru() -> None:
    # lengths [2], E=4, H=2, C=3, unidirectional GRU, two layers.
    # Layer 0: 3 gates x 2 units x (4 + 2) x 2 = 72 per token, x 2 tokens = 144.
    # Layer 1 (input = H = 2): 3 x 2 x (2 + 2) x 2 = 48 per token, x 2 = 96. Head: 2 x 2 x 3 = 12.
    # Forward 252; step 3 x 252 = 756.
    got = bench.step_flops([2], embed_dim=4, hidden_dim=2, num_classes=3, rnn="gru", num_layers=2, bidirectional=False)
    assert got == 756


def test_step_flops_counts_real_tokens_not_padding() -> None:
    batch = bench.make_batch(8, 10, 50)
    lengths = batch.lengths.tolist()
    assert sum(lengths) < 8 * 10  # the batch has padding
    # E=3, H=5: per real token 2 directions x 4 gates x 5 x (3 + 5) x 2 = 640; per sequence 2 x 10 x 2 = 40.
    assert bench.step_flops(lengths, 3, 5) == 3 * (sum(lengths) * 640 + 8 * 40)
