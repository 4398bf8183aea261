"""MLM masking: rates, the 80/10/10 split, specials, whole words for three tokenizer types, spans,
determinism -- each for both sources of randomness (per-row keys, a torch.Generator); keyed masks
independent of the batch. Run: .venv/bin/pytest tests/data/test_masking.py"""

from __future__ import annotations

import math
import pydoc_data.topics

import pytest
import torch

from hfpipe.config import DataArgs, MaskingArgs, RecipeError, TokenizerArgs
from hfpipe.data.masking import KeyedDraws, default_mlm_probability, make_generator, mask_tokens, row_keys
from hfpipe.data.packing import tokenize_dataset
from hfpipe.data.sources import collate
from hfpipe.data.tokenizer import train_tokenizer

VOCAB, MASK, SPECIALS = 1000, 4, [0, 1, 2, 3, 4]  # [PAD] [UNK] [CLS] [SEP] [MASK], as hfpipe tokenizers


SOURCES = ["keys", "generator"]  # every statistical property must hold for both sources of randomness


def _randomness(source, seed, step, rank, rows):
    """keys: row i is global position rank * rows + i (as a process's slice of a global batch)."""
    if source == "keys":
        return {"keys": row_keys(seed, step, range(rank * rows, (rank + 1) * rows))}
    return {"generator": make_generator(seed, step, rank)}


def _mask(ids, special, args, p, seed=0, step=0, rank=0, word_starts=None, source="keys"):
    return mask_tokens(
        ids, special_tokens_mask=special, mask_token_id=MASK, vocab_size=VOCAB, args=args,
        mlm_probability=p, word_starts=word_starts, special_token_ids=SPECIALS,
        **_randomness(source, seed, step, rank, len(ids)),
    )  # fmt: skip


def _random_batch(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (B, T), generator=g)
    special = torch.zeros(B, T, dtype=torch.long)
    ids[:, 0], special[:, 0] = 2, 1  # [CLS]
    ids[:, -1], special[:, -1] = 3, 1  # [SEP]
    return ids, special


def _tolerance(p, n, sigmas=5.0, inflation=1.0):
    """`sigmas` binomial standard deviations of a proportion p over n trials (x variance inflation)."""
    return sigmas * math.sqrt(inflation * p * (1 - p) / n)


@pytest.mark.parametrize("source", SOURCES)
def test_80_10_10_split_is_statistically_right(source):
    ids, special = _random_batch(128, 512)
    inputs, labels = _mask(ids, special, MaskingArgs(), 0.15, source=source)
    chosen = labels != -100
    n = int(chosen.sum())
    assert n > 9000  # ~0.15 x 65,280 maskable tokens
    masked = (inputs == MASK) & chosen
    changed = (inputs != ids) & ~masked & chosen
    kept = (inputs == ids) & chosen
    # A random replacement equals the original with probability 1/995, so it shows up as "kept".
    p_random = 0.1 * (1 - 1 / (VOCAB - len(SPECIALS)))
    for observed, expected in ((masked, 0.8), (changed, p_random), (kept, 1 - 0.8 - p_random)):
        fraction = float(observed.sum()) / n
        assert abs(fraction - expected) < _tolerance(expected, n), (fraction, expected)
    assert torch.equal(labels[chosen], ids[chosen])  # labels hold the original ids


@pytest.mark.parametrize("source", SOURCES)
def test_custom_replacement_split(source):
    ids, special = _random_batch(64, 512)
    inputs, labels = _mask(ids, special, MaskingArgs(mask_replace_prob=0.5, random_replace_prob=0.5), 0.2,
                           source=source)  # fmt: skip
    chosen = labels != -100
    n = int(chosen.sum())
    fraction_masked = float(((inputs == MASK) & chosen).sum()) / n
    assert abs(fraction_masked - 0.5) < _tolerance(0.5, n)
    assert int(((inputs == ids) & chosen).sum()) < 0.01 * n  # nothing kept on purpose


@pytest.mark.parametrize("source", SOURCES)
@pytest.mark.parametrize("p", [0.15, 0.3])
def test_masked_fraction_matches_mlm_probability(p, source):
    ids, special = _random_batch(128, 512)
    _, labels = _mask(ids, special, MaskingArgs(), p, source=source)
    n = int((special == 0).sum())
    fraction = float((labels != -100).sum()) / n
    assert abs(fraction - p) < _tolerance(p, n)


@pytest.mark.parametrize("source", SOURCES)
def test_special_and_padding_tokens_are_never_masked_or_inserted(source):
    ids, special = _random_batch(64, 256)
    ids[:, 100:] = 0  # padding
    special[:, 100:] = 1
    ids[:, 50], special[:, 50] = 3, 1  # a [SEP] in the middle (document boundary)
    inputs, labels = _mask(ids, special, MaskingArgs(random_replace_prob=0.2), 0.5, source=source)
    assert bool((labels[special.bool()] == -100).all())
    assert torch.equal(inputs[special.bool()], ids[special.bool()])
    replaced = (inputs != ids) & (inputs != MASK)
    assert int(replaced.sum()) > 500
    assert not bool(torch.isin(inputs[replaced], torch.tensor(SPECIALS)).any())


@pytest.mark.parametrize("source", SOURCES)
def test_special_ids_seen_in_the_batch_are_never_inserted_by_default(source):
    ids, special = _random_batch(64, 256)
    inputs, _ = mask_tokens(
        ids,
        special_tokens_mask=special,
        mask_token_id=MASK,
        vocab_size=8,
        args=MaskingArgs(random_replace_prob=1.0, mask_replace_prob=0.0),
        mlm_probability=0.5,
        **_randomness(source, 0, 0, 0, len(ids)),
    )  # fmt: skip  (no special_token_ids: [CLS]=2 and [SEP]=3 are known only from the batch)
    replaced = inputs[(inputs != ids) & (special == 0)]
    assert replaced.numel() > 1000 and set(replaced.unique().tolist()) <= {0, 1, 5, 6, 7}


@pytest.mark.parametrize("source", SOURCES)
def test_mask_tokens_is_pure_and_reproducible(source):
    ids, special = _random_batch(8, 64)
    words = (torch.rand(8, 64, generator=torch.Generator().manual_seed(1)) < 0.5).long()
    before = (ids.clone(), special.clone(), words.clone())
    args = MaskingArgs(whole_word=True, span=True)
    first = _mask(ids, special, args, 0.3, seed=7, step=3, rank=1, word_starts=words, source=source)
    again = _mask(ids, special, args, 0.3, seed=7, step=3, rank=1, word_starts=words, source=source)
    assert all(torch.equal(a, b) for a, b in zip((ids, special, words), before))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    for other in ({"rank": 0}, {"step": 4}, {"seed": 8}):
        kwargs = {"seed": 7, "step": 3, "rank": 1, **other}
        _, labels = _mask(ids, special, args, 0.3, word_starts=words, source=source, **kwargs)
        assert not torch.equal(labels, first[1]), other


def test_make_generator_does_not_collide_like_a_sum():
    a = torch.rand(4, generator=make_generator(0, 1, 0))
    b = torch.rand(4, generator=make_generator(0, 0, 1))
    c = torch.rand(4, generator=make_generator(0, 1, 0))
    assert not torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("source", SOURCES)
def test_span_masking_rate_and_contiguity(source):
    ids, special = _random_batch(256, 512)
    n = int((special == 0).sum())

    def runs(labels):  # mean length of runs of consecutive predicted tokens
        chosen = (labels != -100).long()
        starts = chosen[:, 1:] & (1 - chosen[:, :-1])
        return float(chosen.sum()) / float(starts.sum() + chosen[:, 0].sum())

    _, span_labels = _mask(ids, special, MaskingArgs(span=True, mean_span_length=3.0), 0.3, source=source)
    _, token_labels = _mask(ids, special, MaskingArgs(), 0.3, source=source)
    fraction = float((span_labels != -100).sum()) / n
    # Spans of mean 3 correlate neighbours: allow 3x the binomial variance per token x span length.
    assert abs(fraction - 0.3) < _tolerance(0.3, n, inflation=9.0), fraction
    assert runs(span_labels) > 3.0 > 1.6 > runs(token_labels)


def test_missing_mask_token_and_bad_arguments_fail_clearly():
    ids, special = _random_batch(2, 16)
    with pytest.raises(ValueError, match="no mask token"):
        mask_tokens(ids, special_tokens_mask=special, mask_token_id=None, vocab_size=VOCAB, args=MaskingArgs(),
                    mlm_probability=0.15, generator=make_generator(0, 0, 0))  # fmt: skip
    with pytest.raises(ValueError, match="whole_word needs word_starts"):
        _mask(ids, special, MaskingArgs(whole_word=True), 0.15)
    with pytest.raises(ValueError, match="exactly one source of randomness"):
        mask_tokens(ids, special_tokens_mask=special, mask_token_id=MASK, vocab_size=VOCAB, args=MaskingArgs(),
                    mlm_probability=0.15)  # fmt: skip
    with pytest.raises(ValueError, match=r"keys must be \(B, 2\) = \(2, 2\)"):
        mask_tokens(ids, special_tokens_mask=special, mask_token_id=MASK, vocab_size=VOCAB, args=MaskingArgs(),
                    mlm_probability=0.15, keys=row_keys(0, 0, [0, 1, 2]))  # fmt: skip
    with pytest.raises(RecipeError, match="mlm_probability: must be in"):
        MaskingArgs(mlm_probability=1.5).validate()
    with pytest.raises(RecipeError, match="must be <= 1"):
        MaskingArgs(mask_replace_prob=0.9, random_replace_prob=0.2).validate()


def test_default_mlm_probability_follows_the_preset_family():
    assert default_mlm_probability("modern-small") == 0.30
    assert default_mlm_probability("bert-base") == 0.15
    with pytest.raises(RecipeError, match="masking.mlm_probability"):
        default_mlm_probability("gpt2")


# --- keyed randomness: a row's mask is its own ---------------------------------------------------------


@pytest.mark.parametrize("args", [MaskingArgs(), MaskingArgs(whole_word=True), MaskingArgs(whole_word=True, span=True),
                                  MaskingArgs(span=True, mean_span_length=2.0)], ids=["token", "word", "word-span", "span"])
def test_a_keyed_rows_mask_does_not_depend_on_its_batch(args):
    """Masked alone, in another batch order, or padded wider (a longer row elsewhere in the batch), each row
    gets the same inputs and labels: so any split into micro-batches and processes masks alike."""
    ids, special = _random_batch(12, 96, seed=3)
    words = (torch.rand(12, 96, generator=torch.Generator().manual_seed(4)) < 0.6).long()
    keys = row_keys(5, 11, range(100, 112))  # (B, 2): global positions 100..111 at step 11
    run = dict(mask_token_id=MASK, vocab_size=VOCAB, args=args, mlm_probability=0.3, special_token_ids=SPECIALS)
    inputs, labels = mask_tokens(ids, special_tokens_mask=special, keys=keys, word_starts=words, **run)
    assert 0.2 < float((labels != -100).sum()) / float((special == 0).sum()) < 0.4
    order = torch.tensor([7, 2, 11, 0])
    wide = torch.cat([ids[order], torch.zeros(4, 40, dtype=torch.long)], dim=1)  # (4, 136): padded
    wide_special = torch.cat([special[order], torch.ones(4, 40, dtype=torch.long)], dim=1)
    wide_words = torch.cat([words[order], torch.ones(4, 40, dtype=torch.long)], dim=1)
    sub_inputs, sub_labels = mask_tokens(wide, special_tokens_mask=wide_special, keys=keys[order],
                                         word_starts=wide_words, **run)  # fmt: skip
    assert torch.equal(sub_inputs[:, :96], inputs[order]) and torch.equal(sub_labels[:, :96], labels[order])
    assert bool((sub_labels[:, 96:] == -100).all())
    for row in (5, 9):
        alone = mask_tokens(ids[row : row + 1], special_tokens_mask=special[row : row + 1], keys=keys[row : row + 1],
                            word_starts=words[row : row + 1], **run)  # fmt: skip
        assert torch.equal(alone[0][0], inputs[row]) and torch.equal(alone[1][0], labels[row])


def test_row_keys_depend_on_seed_step_and_position_without_collisions():
    keys = row_keys(0, 0, range(1000))
    assert keys.shape == (1000, 2) and keys.dtype == torch.int64 and len({tuple(k) for k in keys.tolist()}) == 1000
    assert bool((keys >= 0).all()) and bool((keys < 2**32).all())
    a, b, c = row_keys(0, 1, [0]), row_keys(0, 0, [1]), row_keys(1, 0, [0])  # would collide as sums
    assert not torch.equal(a, b) and not torch.equal(a, c) and torch.equal(a, row_keys(0, 1, [0]))


def test_keyed_draws_are_uniform_and_independent_across_rows_streams_and_positions():
    draws = KeyedDraws(row_keys(0, 0, range(256)))
    index = torch.arange(1024)
    u = draws.uniform(0, index)  # (256, 1024)
    n = u.numel()
    counts = torch.histc(u, bins=16, min=0, max=1)
    chi2 = float(((counts - n / 16) ** 2 / (n / 16)).sum())
    assert chi2 < 50, chi2  # 15 degrees of freedom: P(chi2 > 50) < 1e-5
    assert float(u.min()) >= 0 and float(u.max()) < 1
    pairs = {"next position": (u[:, :-1], u[:, 1:]), "next row": (u[:-1], u[1:]),
             "other stream": (u, draws.uniform(1, index))}  # fmt: skip
    for name, (x, y) in pairs.items():
        correlation = float(torch.corrcoef(torch.stack([x.flatten(), y.flatten()]))[0, 1])
        assert abs(correlation) < 5 / x.numel() ** 0.5, (name, correlation)  # 5 standard errors
    assert torch.equal(draws.uniform(2, index[None, 100:110].expand(256, -1)), draws.uniform(2, index)[:, 100:110])
    ints = draws.integers(3, index, 7)
    assert int(ints.min()) == 0 and int(ints.max()) == 6
    share = torch.bincount(ints.flatten(), minlength=7).double() / ints.numel()
    assert float((share - 1 / 7).abs().max()) < _tolerance(1 / 7, ints.numel())


# --- whole-word masking on real text, for each tokenizer type -------------------------------------


@pytest.fixture(scope="module")
def docs() -> list[str]:
    topics = pydoc_data.topics.topics
    return [topics[name] for name in sorted(topics)]


@pytest.fixture(scope="module")
def word_data() -> dict:
    return {}  # kind -> (tokenizer, collated batch, each text's words as token positions), shared by the cases


def _word_data(kind: str, docs: list[str]) -> tuple:
    """Tokenizer trained on `docs`, 300 paragraphs tokenized one per row, and the words of each row straight
    from the fast tokenizer's word ids (not from word_starts)."""
    from datasets import Dataset

    tokenizer = train_tokenizer(docs, TokenizerArgs(type=kind, vocab_size=400))
    paragraphs = [p for doc in docs for p in doc.split("\n\n") if len(p.split()) > 5]
    texts = [t for t in paragraphs if len(tokenizer(t)["input_ids"]) <= 256][:300]  # one row per text
    rows = tokenize_dataset(Dataset.from_dict({"text": texts}), tokenizer, DataArgs(block_size=256, mode="pad"),
                            whole_word=True)  # fmt: skip
    assert len(rows) == len(texts)
    words = []
    for i, text in enumerate(texts):
        encoding = tokenizer(text)
        assert encoding["input_ids"] == list(rows[i]["input_ids"])
        groups: dict[int, list[int]] = {}
        for t, w in enumerate(encoding.word_ids()):
            if w is not None:
                groups.setdefault(w, []).append(t)
        words.append(list(groups.values()))
    return tokenizer, collate(list(rows), tokenizer.pad_token_id), words


@pytest.mark.parametrize("kind", ["wordpiece", "bpe", "unigram"])
@pytest.mark.parametrize(("span", "source"), [(False, "keys"), (True, "keys"), (False, "generator"), (True, "generator")])
def test_whole_word_masking_never_splits_a_word(kind, span, source, docs, word_data):
    if kind not in word_data:
        word_data[kind] = _word_data(kind, docs)
    tokenizer, batch, words = word_data[kind]
    inputs, labels = mask_tokens(
        batch["input_ids"], special_tokens_mask=batch["special_tokens_mask"],
        mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer), args=MaskingArgs(whole_word=True, span=span),
        mlm_probability=0.3, word_starts=batch["word_starts"], special_token_ids=tokenizer.all_special_ids,
        **_randomness(source, 0, 0, 0, len(words)),
    )  # fmt: skip
    chosen, masked = (labels != -100).tolist(), (inputs == tokenizer.mask_token_id).tolist()
    multi_token_words = 0
    for i, row_words in enumerate(words):
        for positions in row_words:
            assert len({chosen[i][t] for t in positions}) == 1, f"{kind}: word at tokens {positions} partly chosen"
            assert len({masked[i][t] for t in positions}) == 1, f"{kind}: word at tokens {positions} partly [MASK]ed"
            multi_token_words += len(positions) > 1
    assert multi_token_words > 200  # the property was exercised on many split words
    maskable = int((batch["special_tokens_mask"] == 0).sum())
    fraction = float((labels != -100).sum()) / maskable
    assert abs(fraction - 0.3) < 0.05, fraction  # words are chosen at rate p, so tokens are too on average
