"""Text model tests, parametrised over every model registered with `input="text"`: shapes,
gradients, no NaN, padding invariance, batch independence and a safetensors round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from neuralab.models import MODELS, TextSpec, build_model, model_input
from neuralab.models.ngram import NgramBag
from neuralab.models.recurrent import RecurrentClassifier

SPEC = TextSpec(vocab_size=50, num_classes=3, max_length=24)
# Small sizes so every case runs in milliseconds.
MODEL_KWARGS: dict[str, dict] = {
    "textcnn": {"embed_dim": 8, "filters": [2, 3, 4], "pooling": "max+mean"},
    "rnn": {"embed_dim": 8, "hidden": 6},
    "lstm": {"embed_dim": 8, "hidden": 6, "layers": 2, "pooling": "last"},
    "gru": {"embed_dim": 8, "hidden": 6, "pooling": "mean"},
    "transformer": {"embed_dim": 8, "heads": 2, "ff_dim": 16},
    "ngram": {"embed_dim": 8, "ngrams": 3, "buckets": 101, "binary": True, "nb": True},
}
TEXT_MODELS = [name for name in MODELS.names() if model_input(name) == "text"]


def token_ids(seed: int = 0) -> torch.Tensor:
    """A padded batch (4, 12): lengths 12, 7, 1 and 0 (an empty text)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, SPEC.vocab_size, (4, 12), generator=generator)
    for row, length in enumerate((12, 7, 1, 0)):
        ids[row, length:] = 0
    return ids


def built(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(name, SPEC, **MODEL_KWARGS.get(name, {}))


def test_every_text_model_has_small_test_arguments() -> None:
    assert set(TEXT_MODELS) == set(MODEL_KWARGS)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_forward_backward_gives_finite_logits_and_gradients(name: str) -> None:
    model = built(name).train()
    logits = model(token_ids())
    assert logits.shape == (4, SPEC.num_classes) and logits.dtype == torch.float32
    assert torch.isfinite(logits).all()
    F.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None, f"{name}: {parameter_name} got no gradient"
        assert torch.isfinite(parameter.grad).all(), f"{name}: {parameter_name} grad not finite"


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_appending_padding_does_not_change_outputs(name: str) -> None:
    model = built(name).eval()
    ids = token_ids()
    with torch.no_grad():
        expected = model(ids)
        longer = model(F.pad(ids, (0, SPEC.max_length - ids.shape[1])))
        trimmed = model(ids[:, :7])[1:]  # rows 1..3 fit in 7 tokens
    torch.testing.assert_close(longer, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(trimmed, expected[1:], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_eval_outputs_do_not_depend_on_the_rest_of_the_batch(name: str) -> None:
    model = built(name).eval()
    ids = token_ids()
    with torch.no_grad():
        together = model(ids)
        alone = torch.cat([model(ids[row : row + 1]) for row in range(len(ids))])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_padding_embedding_stays_zero_and_padding_gets_no_gradient(name: str) -> None:
    model = built(name).train()
    model(token_ids()).sum().backward()
    for module in model.modules():
        if isinstance(module, nn.Embedding | nn.EmbeddingBag) and module.padding_idx == 0:
            assert (module.weight[0] == 0).all()
            assert module.weight.grad is None or (module.weight.grad[0] == 0).all()


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_safetensors_round_trip_restores_outputs(name: str, tmp_path: Path) -> None:
    model = built(name, seed=0).eval()
    path = tmp_path / f"{name}.safetensors"
    save_file(model.state_dict(), str(path))
    fresh = built(name, seed=1).eval()
    with torch.no_grad():
        expected = model(token_ids(seed=2))
        assert not torch.equal(fresh(token_ids(seed=2)), expected)
        fresh.load_state_dict(load_file(str(path)))
        torch.testing.assert_close(fresh(token_ids(seed=2)), expected, rtol=0, atol=0)


def test_textcnn_classic_has_the_expected_parameter_count() -> None:
    model = build_model(
        "textcnn", TextSpec(1000, 2, 100), embed_dim=16, filters=[32, 64, 128], dropout=0.5
    )
    convs = (16 * 3 + 1) * 32 + (16 * 4 + 1) * 64 + (16 * 5 + 1) * 128
    assert sum(p.numel() for p in model.parameters()) == 1000 * 16 + convs + 224 * 2 + 2


def test_transformer_refuses_texts_longer_than_its_positions() -> None:
    model = built("transformer").eval()
    with pytest.raises(ValueError, match="longer than max_length=24"):
        model(torch.ones(1, 30, dtype=torch.long))


def test_ngram_hash_spreads_bigrams_over_the_buckets() -> None:
    """Every bigram of 300 word ids (90,000 pairs) into 1M buckets: collisions stay near what
    a uniform hash gives (a multiplier folding pairs onto few rows once cost 3 points on IMDB)."""
    bag = NgramBag(
        TextSpec(301, 2, 2), 4, ngrams=2, buckets=1_000_000, dropout=0.0, sparse=False, binary=False
    )
    first, second = torch.meshgrid(torch.arange(1, 301), torch.arange(1, 301), indexing="ij")
    pairs = torch.stack([first.flatten(), second.flatten()], dim=1)  # (90000, 2)
    rows = bag.features(pairs)[:, 2]  # the bigram's row
    assert rows.unique().numel() > 0.95 * len(pairs)


def test_ngram_binary_counts_each_feature_once() -> None:
    model = build_model("ngram", SPEC, embed_dim=4, ngrams=2, buckets=97, binary=True).eval()
    with torch.no_grad():
        once, repeated = (
            model(torch.tensor([[5, 6, 0, 0, 0, 0]])),
            model(torch.tensor([[5, 6, 5, 6, 5, 6]])),
        )
    # 5 6 5 6 adds the bigram (6, 5) but repeats nothing else.
    assert not torch.equal(once, repeated)
    features = model.features(torch.tensor([[5, 6, 5, 6]]))
    assert (features[features != 0].unique(return_counts=True)[1] == 1).all()


def test_image_models_refuse_text_specs() -> None:
    with pytest.raises(ValueError, match="takes image input but the data is text"):
        build_model("lenet", SPEC)


def test_nb_ratios_match_naive_bayes_counts_by_hand() -> None:
    """Unigram NB ratios against the NBSVM formula computed directly: r = log((p/|p|)/(q/|q|))
    with p = 1 + texts of the class holding the word, q = 1 + other texts holding it (0 for
    words no text holds)."""
    spec = TextSpec(vocab_size=6, num_classes=2, max_length=5)
    model = build_model("ngram", spec, embed_dim=2, ngrams=1, binary=True, nb=True, compact=False)
    ids = torch.tensor([[2, 3, 3, 0], [2, 4, 0, 0], [5, 4, 4, 4], [3, 0, 0, 0]])
    labels = torch.tensor([0, 0, 1, 1])
    model.initialize_from_texts([(ids[:2], labels[:2]), (ids[2:], labels[2:])])
    holds = torch.zeros(4, 6)
    for row, text in enumerate(ids):
        holds[row, text[text != 0]] = 1.0  # binary: a word counts once per text
    for c in (0, 1):
        p = 1 + holds[labels == c].sum(0)
        q = 1 + holds[labels != c].sum(0)
        expected = ((p / p.sum()) / (q / q.sum())).log()
        expected[holds.sum(0) == 0] = 0.0  # padding and unseen words carry no evidence
        # Sums above run over all 6 rows incl. padding: the model's do the same (add-one there).
        torch.testing.assert_close(model.nb_ratio[:, c], expected)


def test_nb_term_is_scaled_ratio_times_weight_and_ignores_rare_features() -> None:
    """logits = fastText part + nb_scale * sum over features of r * w; features seen in fewer
    than nb_min_count texts get r = 0."""
    spec = TextSpec(vocab_size=6, num_classes=2, max_length=5)
    model = build_model(
        "ngram", spec, embed_dim=2, ngrams=1, binary=True, nb=True, nb_scale=0.5, nb_min_count=2,
        compact=False,
    )  # fmt: skip
    ids = torch.tensor([[2, 3, 0], [4, 3, 5]])  # 3 is in both texts; 2, 4 and 5 in one
    model.initialize_from_texts([(ids, torch.tensor([0, 1]))])
    assert model.nb_ratio[[0, 2, 4, 5]].abs().sum() == 0 and model.nb_ratio[3].abs().sum() > 0
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        assert model.eval()(ids).abs().sum() == 0  # w starts at 0
        model.nb_weight.weight.copy_(torch.arange(12.0).view(6, 2))
        logits = model(ids)
    expected = 0.5 * model.nb_ratio[3] * model.nb_weight.weight[3]
    torch.testing.assert_close(logits, torch.stack([expected, expected]))


def test_nb_alone_learns_and_embed_dim_zero_needs_nb() -> None:
    """embed_dim=0 with nb=True is NB-weighted logistic regression alone; it fits a toy task."""
    spec = TextSpec(vocab_size=8, num_classes=2, max_length=4)
    with pytest.raises(ValueError, match="embed_dim must be >= 1"):
        build_model("ngram", spec, embed_dim=0)
    model = build_model("ngram", spec, embed_dim=0, ngrams=2, buckets=31, binary=True, nb=True)
    ids = torch.tensor([[2, 3, 4, 0], [2, 3, 0, 0], [5, 6, 7, 0], [6, 7, 5, 0]])
    labels = torch.tensor([0, 0, 1, 1])
    model.initialize_from_texts([(ids, labels)])
    optimizer = torch.optim.Adagrad(model.parameters(), lr=0.5)
    for _ in range(20):
        optimizer.zero_grad()
        F.cross_entropy(model(ids), labels).backward()
        optimizer.step()
    assert model(ids).argmax(1).tolist() == labels.tolist()
    assert [name for name, _ in model.named_parameters()] == ["bias", "nb_weight.weight"]


@pytest.mark.parametrize("pooling", ["max", "last"])
@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_recurrent_layers_match_packed_bidirectional_pytorch(cell: str, pooling: str) -> None:
    """Reference: our padded forward + in-place-reversed backward passes give the outputs of
    PyTorch's own bidirectional RNN over packed sequences with the same weights."""
    torch.manual_seed(0)
    model = build_model(cell, SPEC, embed_dim=8, hidden=6, layers=2, pooling=pooling).eval()
    reference = RecurrentClassifier.CELLS[cell](
        8, 6, num_layers=2, bidirectional=True, batch_first=True
    )
    with torch.no_grad():
        for layer in range(2):
            for suffix, source in (("", model.forward_layers), ("_reverse", model.backward_layers)):
                for name, value in source[layer].named_parameters():
                    getattr(reference, name.replace("_l0", f"_l{layer}") + suffix).copy_(value)
    ids = token_ids()[:3]  # lengths 12, 7, 1
    lengths = (ids != 0).sum(1)
    embedded = model.embedding(ids)
    packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    outputs, state = reference(packed)
    expected, _ = pad_packed_sequence(outputs, batch_first=True)  # (B, T, 12)
    if pooling == "max":
        pooled_expected = expected.masked_fill(~(ids != 0).unsqueeze(2), float("-inf")).amax(1)
    else:  # the last layer's final states, forward then backward: (B, 12)
        final = state[0] if cell == "lstm" else state
        pooled_expected = torch.cat([final[-2], final[-1]], dim=1)
    ours = []
    model.classifier.register_forward_hook(lambda m, inputs, out: ours.append(inputs[0]))
    model(ids)
    torch.testing.assert_close(ours[0], pooled_expected, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------- tables sized to the training data


def ngram_pair(embed_dim: int) -> tuple[NgramBag, NgramBag, torch.Tensor, torch.Tensor]:
    """A full-table model and a compact one with the same weights, both initialised from the
    same 40 texts (ids (40, 12) with padding, labels of 3 classes)."""
    torch.manual_seed(0)
    spec = TextSpec(vocab_size=50, num_classes=3, max_length=12)
    args = {"embed_dim": embed_dim, "ngrams": 3, "buckets": 97, "binary": True, "nb": True,
            "nb_min_count": 2}  # fmt: skip
    full = build_model("ngram", spec, compact=False, **args)
    compact = build_model("ngram", spec, **args)
    compact.load_state_dict(full.state_dict())
    ids = torch.randint(1, 50, (40, 12))
    ids[::3, 8:] = 0
    labels = torch.randint(0, 3, (40,))
    full.initialize_from_texts([(ids[:25], labels[:25]), (ids[25:], labels[25:])])
    compact.initialize_from_texts([(ids[:25], labels[:25]), (ids[25:], labels[25:])])
    with torch.no_grad():  # trained-looking NB weights, the same for the kept rows
        full.nb_weight.weight.normal_()
        kept = torch.cat([torch.zeros(1, dtype=torch.long), compact.kept_rows.long()])
        compact.nb_weight.weight.copy_(full.nb_weight.weight[kept])
    return full.eval(), compact.eval(), ids, labels


def test_compact_tables_keep_exactly_the_rows_the_training_texts_hold() -> None:
    """The kept rows are the features in >= nb_min_count texts (NB alone) and the compact
    model's logits equal the full table's on any text: the rows it drops carry r = 0."""
    full, compact, ids, _ = ngram_pair(embed_dim=0)
    counts = torch.zeros(full.hashed_rows)
    for text in full.features(ids):
        counts[text[text != 0].unique()] += 1
    expected = (counts >= 2).nonzero().squeeze(1)
    assert torch.equal(compact.kept_rows.long(), expected)
    assert compact.nb_ratio.shape == (len(expected) + 1, 3) < full.nb_ratio.shape
    unseen = torch.randint(1, 50, (9, 12), generator=torch.Generator().manual_seed(5))
    for texts in (ids, unseen):
        torch.testing.assert_close(compact(texts), full(texts), rtol=0, atol=1e-6)


def test_compact_tables_with_embeddings_drop_only_never_seen_features() -> None:
    """With embeddings, every feature seen once is kept: the logits on the training texts
    equal the full table's (a test text's unseen n-grams would read untrained rows there)."""
    full, compact, ids, _ = ngram_pair(embed_dim=4)
    torch.testing.assert_close(compact(ids), full(ids), rtol=0, atol=1e-6)
    assert (compact.table_rows(ids) > 0).sum() == (full.table_rows(ids) > 0).sum()


def test_compact_checkpoint_loads_into_a_fresh_model_and_old_full_ones_still_load(
    tmp_path: Path,
) -> None:
    full, compact, ids, _ = ngram_pair(embed_dim=4)
    save_file(compact.state_dict(), str(tmp_path / "compact.safetensors"))
    fresh = build_model("ngram", TextSpec(50, 3, 12), embed_dim=4, ngrams=3, buckets=97,
                        binary=True, nb=True, nb_min_count=2)  # fmt: skip
    fresh.load_state_dict(load_file(str(tmp_path / "compact.safetensors")))
    torch.testing.assert_close(fresh.eval()(ids), compact(ids), rtol=0, atol=0)
    old = {k: v for k, v in full.state_dict().items() if k != "kept_rows"}  # before compaction
    again = build_model("ngram", TextSpec(50, 3, 12), embed_dim=4, ngrams=3, buckets=97,
                        binary=True, nb=True, nb_min_count=2)  # fmt: skip
    again.load_state_dict(old)
    torch.testing.assert_close(again.eval()(ids), full(ids), rtol=0, atol=0)


def test_traced_binary_search_equals_searchsorted() -> None:
    from neuralab.models.kept_rows import traced_count_at_most

    generator = torch.Generator().manual_seed(1)
    for size in (1, 2, 7, 8, 500):
        kept = torch.randperm(10_000, generator=generator)[:size].sort().values + 1
        kept = kept.to(torch.int32)
        query = torch.randint(0, 10_100, (5, 600), generator=generator, dtype=torch.int32)
        query[0, :size] = kept  # every kept id is asked for too
        expected = torch.searchsorted(kept, query, right=True)
        assert torch.equal(traced_count_at_most(kept, query), expected)


def test_compaction_that_keeps_nothing_names_nb_min_count() -> None:
    model = build_model("ngram", TextSpec(10, 2, 4), embed_dim=0, ngrams=1, nb=True,
                        nb_min_count=5)  # fmt: skip
    with pytest.raises(ValueError, match="lower nb_min_count"):
        model.initialize_from_texts([(torch.tensor([[2, 3, 0, 0]]), torch.tensor([1]))])
