"""Properties of the parts of the sequence cores: the encoding formula, sampling, packing, attention weights,
positions in the Transformer, the forecaster's start. What every core promises its task (shapes, causality,
padding, overfitting, checkpoints, generation, greedy decoding) is checked for all of them in test_contracts.py."""

from __future__ import annotations

import math

import pytest
import torch

from cores.positional import PositionalEncoding, sinusoidal_encoding
from cores.recurrent import RecurrentEncoder, RNNForecaster
from cores.sampling import sample_next
from cores.transformer import Attention, TransformerClassifier, TransformerLanguageModel


def test_sinusoidal_encoding_equals_the_formula() -> None:
    table = sinusoidal_encoding(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_positional_encoding_adds_one_vector_per_position(kind: str) -> None:
    encoding = PositionalEncoding(kind, max_length=10, dim=8)  # type: ignore[arg-type]
    x = torch.zeros(2, 5, 8)
    out = encoding(x)
    assert out.shape == (2, 5, 8)
    assert not torch.allclose(out[:, 0], out[:, 1])  # different positions, different vectors
    assert torch.equal(out[0], out[1])  # the same for every sequence
    with pytest.raises(ValueError, match="exceeds max_length 10"):
        encoding(torch.zeros(1, 11, 8))


def test_permuting_positions_changes_the_transformer_output() -> None:
    torch.manual_seed(0)
    model = TransformerClassifier(vocab_size=30, num_classes=3, dim=32, num_heads=4, pooling="mean").eval()
    tokens = torch.randint(1, 30, (2, 8))
    permuted = tokens[:, torch.randperm(8)]
    assert not torch.allclose(model(tokens), model(permuted), atol=1e-4)
    # Without position information the same encoder would be permutation-invariant under mean pooling:
    model.encoder.positions.table.zero_()
    assert torch.allclose(model(tokens), model(permuted), atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_batches_agree_with_sequences_run_alone(cell: str, bidirectional: bool) -> None:
    torch.manual_seed(0)
    encoder = RecurrentEncoder(5, 7, num_layers=2, cell=cell, bidirectional=bidirectional).eval()  # type: ignore[arg-type]
    lengths = torch.tensor([6, 2, 4])
    batch = torch.randn(3, 6, 5)
    for i, length in enumerate(lengths):
        batch[i, length:] = 99.0  # padding garbage that must never be read
    outputs, final, _ = encoder(batch, lengths)
    for i, length in enumerate(lengths.tolist()):
        alone_outputs, alone_final, _ = encoder(batch[i : i + 1, :length])
        assert torch.allclose(final[i], alone_final[0], atol=1e-6)
        assert torch.allclose(outputs[i, :length], alone_outputs[0], atol=1e-6)
        assert (outputs[i, length:] == 0).all()


def test_forecaster_starts_as_the_naive_forecast() -> None:
    model = RNNForecaster(num_features=2, horizon=3, hidden_dim=8)
    window = torch.randn(4, 10, 2)
    assert torch.equal(model(window), window[:, -1:, :].expand(4, 3, 2))


def test_sampling_respects_temperature_and_top_k() -> None:
    logits = torch.tensor([[0.0, 1.0, 3.0, 2.0]]).repeat(500, 1)
    assert (sample_next(logits, temperature=0) == 2).all()
    assert (sample_next(logits, temperature=1.0, top_k=1) == 2).all()
    generator = torch.Generator().manual_seed(0)
    top2 = sample_next(logits, temperature=1.0, top_k=2, generator=generator)
    assert set(top2.tolist()) == {2, 3}
    hot = sample_next(logits, temperature=100.0, generator=generator)
    assert set(hot.tolist()) == {0, 1, 2, 3}  # a high temperature flattens the distribution


def test_attention_weights_are_what_forward_applies() -> None:
    torch.manual_seed(0)
    attention = Attention(dim=16, num_heads=4, dropout=0.0).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)[:, None, None, :]
    weights = attention.weights(x, mask=mask, causal=True)  # (B, H, T, S)
    assert torch.allclose(weights.sum(-1), torch.ones(2, 4, 5))
    assert (weights[0, :, :, 3:] == 0).all() and (weights.triu(1) == 0).all()  # padding, future: no weight
    values = attention.key_value(x).view(2, 5, 2, 4, 4)[:, :, 1].transpose(1, 2)  # (B, H, S, hs)
    by_hand = attention.out((weights @ values).transpose(1, 2).reshape(2, 5, 16))
    assert torch.allclose(by_hand, attention(x, mask=mask, causal=True), atol=1e-5)


def test_cached_generation_refills_its_window_from_the_last_half_of_the_context() -> None:
    """Keys and values are cached; once `max_length` positions are cached, the context restarts from the
    last max_length // 2 tokens. Each greedy token is the argmax given exactly that context, recomputed."""
    torch.manual_seed(0)
    for positional in ("sinusoidal", "learned"):
        core = TransformerLanguageModel(
            vocab_size=20,
            dim=32,
            num_layers=2,
            num_heads=4,
            max_length=8,
            positional=positional,  # type: ignore[arg-type]
        ).eval()
        prompt = torch.randint(4, 20, (3, 5))
        greedy = core.generate(prompt, max_new_tokens=14, temperature=0)
        start = 0
        for t in range(5, 19):
            if t - start > 8:
                start = t - 4
            expected = core(greedy[:, start:t])[:, -1].argmax(-1)
            assert torch.equal(greedy[:, t], expected), (positional, t)


def test_word_dropout_hides_whole_tokens_in_training_only() -> None:
    from cores.dropout import WordDropout

    layer, embedded = WordDropout(0.25), torch.ones(40, 50, 8)
    assert torch.equal(layer.eval()(embedded), embedded)
    dropped = layer.train()(embedded)
    per_token = dropped[..., 0]
    assert torch.equal(dropped, per_token.unsqueeze(-1).expand_as(dropped))  # a token is kept or hidden whole
    hidden, kept = per_token.unique().tolist()
    assert hidden == 0.0 and kept == pytest.approx(1 / 0.75)
    assert 0.2 < (per_token == 0).float().mean() < 0.3


def test_pooling_reads_real_positions_only() -> None:
    from cores.pooling import pool

    outputs = torch.tensor([[[1.0], [5.0], [100.0]], [[2.0], [-100.0], [-100.0]]])  # (2, 3, 1)
    real = torch.tensor([[True, True, False], [True, False, False]])
    assert pool(outputs, real, "max").flatten().tolist() == [5.0, 2.0]
    assert pool(outputs, real, "mean").flatten().tolist() == [3.0, 2.0]
    assert pool(outputs, real, "first").flatten().tolist() == [1.0, 2.0]


def test_ngram_logits_average_the_texts_unigrams_and_bigrams_ignoring_padding() -> None:
    from cores.ngrams import NgramLogits

    ngrams = NgramLogits(vocab_size=10, num_classes=2, buckets=7, pad_id=0)
    assert torch.equal(ngrams(torch.tensor([[5, 6, 0]])), torch.zeros(1, 2))  # starts at zero
    torch.nn.init.normal_(ngrams.table.weight)
    text = torch.tensor([[5, 6, 7]])
    rows = [5, 6, 7, 10 + (5 * 1_000_003 + 6) % 7, 10 + (6 * 1_000_003 + 7) % 7]  # 3 words, 2 bigram buckets
    torch.testing.assert_close(ngrams(text), ngrams.table.weight[rows].mean(0, keepdim=True))
    padded = torch.tensor([[5, 6, 7, 0, 0], [5, 6, 0, 0, 0]])
    torch.testing.assert_close(ngrams(padded)[:1], ngrams(text))
    torch.testing.assert_close(ngrams(padded)[1:], ngrams(torch.tensor([[5, 6]])))
