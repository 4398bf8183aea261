"""The pretraining recipe: `PretrainRecipe` and the sections only it has (tokenizer, data, masking).

    hfpipe pretrain recipes/pretrain/tiny.yaml train.max_steps=20

    from hfpipe.config import PretrainRecipe, load_recipe
    recipe = load_recipe("recipes/pretrain/tiny.yaml", PretrainRecipe, ["train.lr=1e-4"])

The code that uses these sections: `hfpipe.data.tokenizer` (tokenizer), `hfpipe.data.sources` and
`hfpipe.data.packing` (data), `hfpipe.data.masking` (masking), `hfpipe.train.pretrain` (the loop).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .recipe import RecipeError, check
from .sections import EvalArgs, HubArgs, ModelArgs, TrackingArgs, TrainArgs


@dataclass
class TokenizerArgs:
    """The tokenizer: trained on the corpus, or loaded."""

    name_or_path: str | None = None
    """An existing tokenizer: a folder saved by `save_pretrained` or a Hub id. When set, nothing is
    trained and the other keys are ignored. It must be a fast tokenizer with a mask token."""
    type: Literal["wordpiece", "bpe", "unigram"] = "wordpiece"
    """Model to train: `wordpiece` (BERT), `bpe` (byte-level, RoBERTa style) or `unigram`
    (SentencePiece style). All get the special tokens [PAD] [UNK] [CLS] [SEP] [MASK] at ids 0-4."""
    vocab_size: int = 8192
    """Target vocabulary size, special tokens included (a small corpus may yield fewer)."""
    lowercase: bool = True
    """Lower-case the text before tokenizing (and strip accents, for wordpiece)."""
    min_frequency: int = 2
    """Minimum count for a merge / word piece to enter the vocabulary (wordpiece and bpe only)."""
    max_training_documents: int | None = None
    """Train on at most this many documents from the start of the training split; null uses all."""

    def validate(self) -> None:
        if self.name_or_path is not None:
            check(
                bool(self.name_or_path.strip()), "name_or_path", "must not be empty (use null to train one)"
            )
            return
        minimum = 300 if self.type == "bpe" else 32
        why = " (byte-level BPE starts from 256 byte symbols)" if self.type == "bpe" else ""
        check(self.vocab_size >= minimum, "vocab_size", f"must be >= {minimum}{why}, got {self.vocab_size}")
        check(self.min_frequency >= 1, "min_frequency", f"must be >= 1, got {self.min_frequency}")
        n = self.max_training_documents
        check(n is None or n >= 1, "max_training_documents", f"must be >= 1 or null, got {n}")


@dataclass
class CleanArgs:
    """Cleaning of compressed book files (`.bz2`, `.gz`, `.xz`, `.zst` sources), applied per file."""

    strip_markers: bool = False
    """Keep only the text between a start-marker line and the next end-marker line (Project
    Gutenberg's header and license footer are outside them)."""
    start_markers: list[str] = field(default_factory=lambda: ["*** START OF", "***START OF",
                                                               "*END*THE SMALL PRINT"])
    """Line prefixes that end the header; the body starts on the line after."""
    end_markers: list[str] = field(default_factory=lambda: ["*** END OF", "***END OF"])
    """Line prefixes that start the footer; the body ends before that line."""
    missing_markers: Literal["error", "skip", "keep"] = "error"
    """A file with no start or end marker line: stop the run naming it (`error`), leave the file out
    with a warning (`skip`), or keep all its text (`keep`)."""
    join_lines: bool = False
    """Join the hard-wrapped lines of each paragraph (paragraphs are separated by blank lines), one
    document per paragraph; false: one document per non-blank line."""
    min_chars: int = 0
    """Drop documents (paragraphs or lines) shorter than this many characters (headings, page numbers)."""

    def validate(self) -> None:
        check(self.min_chars >= 0, "min_chars", f"must be >= 0, got {self.min_chars}")
        for key in ("start_markers", "end_markers"):
            markers = getattr(self, key)
            check(bool(markers) and all(m.strip() for m in markers), key,
                  "must list at least one non-empty line prefix (or set strip_markers: false)")


@dataclass
class SourceArgs:
    """One more corpus mixed into the training data."""

    source: str
    """A Hub dataset name, `builtin:python-docs`, or a local file path / glob (.txt, .csv, .tsv,
    .json, .jsonl, .parquet, or compressed text .bz2/.gz/.xz/.zst cleaned by data.clean)."""
    config_name: str | None = None
    """Hub dataset configuration (e.g. `wikitext-103-raw-v1`); null for the default."""
    split: str = "train"
    """Split to read (Hub datasets; local files and builtins always use their training part)."""
    text_column: str = "text"
    """Column holding the text (csv, tsv, json, jsonl, parquet, Hub datasets)."""
    weight: float = 1.0
    """Relative sampling weight of this source in the mix (normalized over all sources)."""

    def validate(self) -> None:
        check(bool(self.source.strip()), "source", "must not be empty")
        check(self.weight > 0, "weight", f"must be > 0, got {self.weight}")


@dataclass
class DataArgs:
    """The pretraining corpus: sources, validation split, tokenization and packing."""

    source: str = "builtin:python-docs"
    """A Hub dataset name, `builtin:python-docs` (the Python documentation, offline), or a local
    file path / glob (.txt one document per line, .csv, .tsv, .json, .jsonl, .parquet), or a glob
    of compressed text files (.bz2, .gz, .xz, .zst: one book per file, cleaned by `clean`, validation
    chosen by file)."""
    config_name: str | None = None
    """Hub dataset configuration (e.g. `wikitext-103-raw-v1`); null for the default."""
    split: str = "train"
    """Split of a Hub dataset to train on (local files and builtins use their training part)."""
    text_column: str = "text"
    """Column holding the text (csv, tsv, json, jsonl, parquet, Hub datasets)."""
    weight: float = 1.0
    """Sampling weight of `source` when mixed with `extra_sources`."""
    validation_source: str | None = None
    """A separate source for validation (same kinds as `source`); null to use validation_split
    or carve validation off the training sources."""
    validation_split: str | None = None
    """Split to validate on: of `validation_source` if set, else of `source` (e.g. `validation`
    for a Hub dataset). Null: the builtin corpus' own split, or carved off by hash."""
    validation_fraction: float = 0.05
    """Fraction of documents carved off (by hash of the text, deterministic) for validation when
    no validation source or split is given."""
    manifest: str | None = None
    """Compressed-file sources: a TSV with `file` and `split` (train / valid) columns choosing the
    validation files by name (e.g. gutenberg/MANIFEST.tsv); null picks files by a hash of their name
    below validation_fraction."""
    clean: CleanArgs = field(default_factory=CleanArgs)
    """How compressed book files are cleaned: markers, line joining, short paragraphs."""
    on_corrupt: Literal["error", "skip"] = "error"
    """A compressed file that cannot be decompressed or decoded as UTF-8: stop naming it (`error`) or
    leave it out with a warning naming it (`skip`)."""
    extra_sources: list[SourceArgs] = field(default_factory=list)
    """More corpora mixed in with `datasets.interleave_datasets`, each with its own weight. Each
    one's validation part is carved off by hash (validation_fraction) and added to validation."""
    streaming: bool = False
    """Read sources lazily as `IterableDataset`s (corpora larger than disk or memory); no cache."""
    block_size: int = 128
    """Tokens per training row (the sequence length)."""
    mode: Literal["pack", "pad"] = "pack"
    """`pack`: documents joined and cut into rows of block_size tokens (positions restart at each
    document); `pad`: one document per row (long ones split), padded per batch by the collator."""
    num_proc: int | None = None
    """Processes for `datasets.map` tokenization; null tokenizes in this process (the Rust
    tokenizer already uses all cores on each batch)."""
    num_workers: int = 0
    """DataLoader worker processes that build the training batches (read, collate, mask) ahead of the
    loop; 0 builds them in the training process. Batches are the same for any value (a function of
    seed and step). 2-4 keep a GPU fed; with `streaming` at most 1 is used (the stream has one reader)."""
    max_documents: int | None = None
    """Use at most this many training documents (smoke tests); null uses all."""
    max_validation_documents: int | None = 2000
    """Use at most this many validation documents (keeps evaluation fast); null uses all."""
    cache_dir: str | None = None
    """`datasets` cache folder (and the builtin corpus' folder); null uses the defaults
    (~/.cache/huggingface/datasets and ~/.cache/hfpipe)."""

    def validate(self) -> None:
        check(bool(self.source.strip()), "source", "must not be empty")
        check(self.weight > 0, "weight", f"must be > 0, got {self.weight}")
        check(self.block_size >= 8, "block_size", f"must be >= 8, got {self.block_size}")
        fraction = self.validation_fraction
        check(0 < fraction < 1, "validation_fraction", f"must be in (0, 1), got {fraction}")
        check(
            self.num_proc is None or self.num_proc >= 1,
            "num_proc",
            f"must be >= 1 or null, got {self.num_proc}",
        )
        check(self.num_workers >= 0, "num_workers", f"must be >= 0, got {self.num_workers}")
        for key in ("max_documents", "max_validation_documents"):
            value = getattr(self, key)
            check(value is None or value >= 1, key, f"must be >= 1 or null, got {value}")
        try:
            self.clean.validate()
        except RecipeError as e:
            raise RecipeError(e.reason, key=f"clean.{e.key}") from None
        for i, extra in enumerate(self.extra_sources):
            try:
                extra.validate()
            except RecipeError as e:
                raise RecipeError(e.reason, key=f"extra_sources[{i}].{e.key}") from None


@dataclass
class MaskingArgs:
    """How tokens are masked for the masked-language-model objective."""

    mlm_probability: float | None = None
    """Fraction of (non-special) tokens to predict. null takes the model preset's default:
    0.30 for `modern-*` presets (ModernBERT), 0.15 for `bert-*` presets (BERT)."""
    mask_replace_prob: float = 0.8
    """Of the chosen tokens, the fraction replaced by [MASK]."""
    random_replace_prob: float = 0.1
    """Of the chosen tokens, the fraction replaced by a random non-special token (the rest,
    1 - mask_replace_prob - random_replace_prob, keep their original token)."""
    whole_word: bool = False
    """Choose whole words (from the fast tokenizer's word ids, any tokenizer type): every token of
    a chosen word is masked together."""
    span: bool = False
    """Mask contiguous spans (SpanBERT) of geometric length instead of independent tokens/words."""
    mean_span_length: float = 3.0
    """Mean span length with `span: true`, in words when whole_word, else in tokens."""

    def validate(self) -> None:
        p = self.mlm_probability
        check(p is None or 0 < p < 1, "mlm_probability", f"must be in (0, 1) or null, got {p}")
        for key in ("mask_replace_prob", "random_replace_prob"):
            value = getattr(self, key)
            check(0 <= value <= 1, key, f"must be in [0, 1], got {value}")
        total = self.mask_replace_prob + self.random_replace_prob
        check(
            total <= 1 + 1e-9,
            "random_replace_prob",
            f"mask_replace_prob + random_replace_prob must be <= 1, got {total}",
        )
        check(self.mean_span_length >= 1, "mean_span_length", f"must be >= 1, got {self.mean_span_length}")


@dataclass(kw_only=True)
class PretrainRecipe:
    """Masked-language-model pretraining (`hfpipe pretrain RECIPE.yaml [section.key=value ...]`)."""

    output_dir: str = "runs/pretrain"
    """Folder for checkpoints, logs, the resolved recipe and the final model."""
    seed: int = 42
    """Seed for weight init, data order and masking (the run is reproducible from it)."""
    model: ModelArgs = field(default_factory=ModelArgs)
    """The model: a fresh HfpipeConfig preset, or existing weights to continue from."""
    tokenizer: TokenizerArgs = field(default_factory=TokenizerArgs)
    """The tokenizer: trained on the corpus or loaded."""
    data: DataArgs = field(default_factory=DataArgs)
    """The pretraining corpus: sources, tokenization and packing."""
    masking: MaskingArgs = field(default_factory=MaskingArgs)
    """How tokens are masked for the MLM objective."""
    train: TrainArgs = field(default_factory=TrainArgs)
    """Optimization, schedule, budget, precision and checkpointing."""
    eval: EvalArgs = field(default_factory=EvalArgs)
    """Evaluation during and after training."""
    hub: HubArgs = field(default_factory=HubArgs)
    """Pushing the result to the Hugging Face Hub."""
    tracking: TrackingArgs = field(default_factory=TrackingArgs)
    """Experiment tracking and plots."""

    def validate(self) -> None:
        check(bool(self.output_dir.strip()), "output_dir", "must not be empty")
        check(self.seed >= 0, "seed", f"must be >= 0, got {self.seed}")
        if self.model.name_or_path is None:  # a fresh model: its position table is the preset's (+ overrides)
            from ..model.configuration_hfpipe import HfpipeConfig

            positions = HfpipeConfig.from_preset(self.model.preset, **self.model.config_overrides).max_position_embeddings
            check(self.data.block_size <= positions, "data.block_size",
                  f"{self.data.block_size} is above the {self.model.preset} preset's {positions} positions: set "
                  f"data.block_size<={positions}, or model.config_overrides.max_position_embeddings={self.data.block_size}")
