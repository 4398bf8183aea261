"""Train or load the tokenizer: WordPiece, BPE or Unigram, saved as a transformers fast tokenizer.

    hfpipe tokenizer recipes/pretrain/tiny.yaml tokenizer.type=bpe tokenizer.vocab_size=16000

    from hfpipe.config import TokenizerArgs
    from hfpipe.data.tokenizer import get_tokenizer, train_tokenizer, load_tokenizer
    tok = train_tokenizer(texts, TokenizerArgs(type="unigram", vocab_size=8000), output_dir="runs/tok")
    tok = load_tokenizer("runs/tok")                   # == AutoTokenizer.from_pretrained("runs/tok")

Every trained tokenizer has the same five special tokens at ids 0-4 -- [PAD] [UNK] [CLS] [SEP]
[MASK] -- and the BERT post-processor (`[CLS] A [SEP]`, pairs `[CLS] A [SEP] B [SEP]`), whatever
the model type, so the data pipeline, the MLM collator and the model see one uniform set:

- `wordpiece`: BERT's recipe: BertNormalizer (clean text, optional lowercase + accent stripping),
  BertPreTokenizer (whitespace and punctuation), `##` continuation pieces.
- `bpe`: byte-level BPE (GPT-2/RoBERTa style): never an unknown token; NFKC (+ lowercase).
- `unigram`: SentencePiece-style Unigram LM over Metaspace (`▁` marks a word start); NFKC
  (+ lowercase), runs of whitespace collapsed to one space.

Training streams: `texts` is any iterable of strings (a generator over a dataset, see
`hfpipe.data.sources.iter_texts`), fed to `tokenizers`' `train_from_iterator` in batches, so the corpus
is never materialized in memory.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from itertools import islice
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ..config import RecipeError, TokenizerArgs

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = {
    "pad_token": "[PAD]",
    "unk_token": "[UNK]",
    "cls_token": "[CLS]",
    "sep_token": "[SEP]",
    "mask_token": "[MASK]",
}
ARGS_FILE = "hfpipe_tokenizer_args.json"  # beside tokenizer.json: how the tokenizer was trained
TRAIN_BATCH_SIZE = 1000  # documents per batch handed to the Rust trainer


class MissingMaskTokenError(ValueError):
    """The tokenizer has no mask token, so it cannot be used for masked-language modelling."""


def _build(args: TokenizerArgs) -> tuple[Tokenizer, trainers.Trainer]:
    """An untrained `tokenizers.Tokenizer` and its trainer, for `args.type`."""
    specials = list(SPECIAL_TOKENS.values())
    lower = [normalizers.Lowercase()] if args.lowercase else []
    if args.type == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]", continuing_subword_prefix="##"))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=args.lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece(prefix="##")
        trainer = trainers.WordPieceTrainer(
            vocab_size=args.vocab_size,
            min_frequency=args.min_frequency,
            special_tokens=specials,
            show_progress=False,
        )
    elif args.type == "bpe":
        tok = Tokenizer(models.BPE(unk_token=None))  # byte-level: every string is representable
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), *lower])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=args.vocab_size,
            min_frequency=args.min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
    elif args.type == "unigram":
        tok = Tokenizer(models.Unigram())
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), *lower, normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
        )
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
        trainer = trainers.UnigramTrainer(
            vocab_size=args.vocab_size, special_tokens=specials, unk_token="[UNK]", show_progress=False
        )
    else:
        raise RecipeError(f"must be one of wordpiece, bpe, unigram; got {args.type!r}", key="tokenizer.type")
    return tok, trainer


def _make_deterministic(tok: Tokenizer, args: TokenizerArgs) -> None:
    """Renumber / round the trained model so that retraining on the same corpus reproduces it.

    The `tokenizers` trainers are not reproducible, even within one process: WordPiece hands out
    the ids of its `##` alphabet in hash-map order, and Unigram's scores vary with summation
    order (rare pieces with equal counts even swap scores ~1e-4 apart). Neither changes what the
    tokenizer means, so WordPiece ids are reassigned in a fixed order (special tokens, then by
    piece length, then alphabetically) and Unigram log-probabilities are rounded to 1e-3 (far
    below a difference that matters to segmentation), ties sorted by piece. BPE is already
    deterministic. One source remains for WordPiece: merges whose counts tie at the vocabulary
    cut-off are picked in hash order, so a retrained vocabulary can differ by a piece or two
    (1 of 8192 pieces on WikiText-2). That is why `get_tokenizer` saves the tokenizer and reuses it.
    """
    model = json.loads(tok.to_str())["model"]
    specials = list(SPECIAL_TOKENS.values())
    if args.type == "wordpiece":
        pieces = sorted(set(model["vocab"]) - set(specials), key=lambda p: (len(p.removeprefix("##")), p))
        vocab = {piece: i for i, piece in enumerate(specials + pieces)}
        tok.model = models.WordPiece(
            vocab, unk_token="[UNK]", continuing_subword_prefix="##",
            max_input_chars_per_word=model["max_input_chars_per_word"],
        )  # fmt: skip
    elif args.type == "unigram":
        scores = [(piece, round(score, 3)) for piece, score in model["vocab"] if piece not in specials]
        vocab = [(piece, 0.0) for piece in specials] + sorted(scores, key=lambda ps: (-ps[1], ps[0]))
        tok.model = models.Unigram(vocab, unk_id=vocab.index(("[UNK]", 0.0)), byte_fallback=False)


def _batches(texts: Iterable[str], size: int, counter: list[int]) -> Iterator[list[str]]:
    """Group `texts` into lists of `size`, counting documents in counter[0] as they stream past."""
    it = iter(texts)
    while batch := list(islice(it, size)):
        counter[0] += len(batch)
        yield batch


def train_tokenizer(
    texts: Iterable[str], args: TokenizerArgs, *, output_dir: str | Path | None = None
) -> PreTrainedTokenizerFast:
    """Train a tokenizer on `texts` (streamed, in batches) and wrap it as a transformers fast tokenizer.

    With `output_dir`, the folder is written with `save_pretrained` (tokenizer.json +
    tokenizer_config.json, loadable by `AutoTokenizer.from_pretrained`) plus `ARGS_FILE`.
    """
    tok, trainer = _build(args)
    if args.max_training_documents is not None:
        texts = islice(texts, args.max_training_documents)
    counter = [0]
    tok.train_from_iterator(_batches(texts, TRAIN_BATCH_SIZE, counter), trainer=trainer)
    if counter[0] == 0:
        raise ValueError("no text to train the tokenizer on: the training corpus is empty")
    _make_deterministic(tok, args)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL_TOKENS)
    size = tok.get_vocab_size()
    logger.info("trained a %s tokenizer on %d documents: vocab %d", args.type, counter[0], size)
    if size < 0.9 * args.vocab_size:
        logger.warning(
            "tokenizer vocab is %d, below tokenizer.vocab_size=%d: the corpus is too small for that size",
            size,
            args.vocab_size,
        )
    if output_dir is not None:
        tokenizer.save_pretrained(str(output_dir))
        (Path(output_dir) / ARGS_FILE).write_text(json.dumps(asdict(args), indent=2) + "\n")
    return tokenizer


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, folder: str | Path, model_config) -> None:
    """`tokenizer.save_pretrained(folder)` beside a model, with `model_max_length` set to the model's
    position limit (`max_position_embeddings`): a trained tokenizer otherwise says 1e30, so
    `tokenizer(text, truncation=True)` in a user's code would not truncate and a long text would
    overrun the position table (run_glue clamps its max length to this value too)."""
    limit = getattr(model_config, "max_position_embeddings", None)
    if limit and (tokenizer.model_max_length or 0) > limit:
        tokenizer.model_max_length = int(limit)
    tokenizer.save_pretrained(str(folder))


def require_mask_token(tokenizer: PreTrainedTokenizerFast, name: str) -> None:
    """Raise `MissingMaskTokenError` naming the tokenizer unless it has a mask token."""
    if tokenizer.mask_token is None or tokenizer.mask_token_id is None:
        raise MissingMaskTokenError(
            f"tokenizer {name!r} has no mask token, so it cannot be used for masked-language "
            "modelling: train one (leave tokenizer.name_or_path unset) or use a BERT-style "
            "tokenizer that defines mask_token (e.g. '[MASK]')"
        )


def load_tokenizer(name_or_path: str | Path) -> PreTrainedTokenizerFast:
    """Load a fast tokenizer from a folder or the Hub, and check it has a mask token."""
    name = str(name_or_path)
    local = Path(name).expanduser()
    if not local.exists() and (
        name.startswith((".", "/", "~")) or name.count("/") > 1
    ):  # a path, not a Hub id
        raise FileNotFoundError(f"tokenizer folder {name!r} does not exist")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(local) if local.exists() else name)
    except (OSError, ValueError) as e:
        raise OSError(
            f"could not load tokenizer {name!r}: not a tokenizer folder, and not reachable on the "
            f"Hugging Face Hub (offline?): {e}"
        ) from e
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"tokenizer {name!r} is not a fast (Rust `tokenizers`) tokenizer; hfpipe needs one for "
            "batched encoding and word ids (whole-word masking)"
        )
    require_mask_token(tokenizer, name)
    return tokenizer


def get_tokenizer(
    args: TokenizerArgs,
    texts_factory: Callable[[], Iterable[str]],
    output_dir: str | Path,
    *,
    retrain: bool = False,
) -> PreTrainedTokenizerFast:
    """The recipe's tokenizer: loaded when `args.name_or_path` is set, else trained and saved.

    The trained tokenizer goes to `output_dir/tokenizer/`. If that folder already holds a
    tokenizer trained with the same `args` (and `retrain` is False) it is reused, so a pretraining
    run after `hfpipe tokenizer` does not train again. `texts_factory()` is called only when
    training, and must return an iterable of training documents.
    """
    if args.name_or_path is not None:
        return load_tokenizer(args.name_or_path)
    folder = Path(output_dir) / "tokenizer"
    recorded = folder / ARGS_FILE
    if not retrain and recorded.exists() and json.loads(recorded.read_text()) == asdict(args):
        logger.info("reusing the tokenizer in %s (trained with the same tokenizer args)", folder)
        return load_tokenizer(folder)
    return train_tokenizer(texts_factory(), args, output_dir=folder)
