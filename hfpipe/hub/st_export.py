"""sentence-transformers export: an hfpipe (or BERT) folder -> a SentenceTransformer folder, checked.

    hfpipe export sentence-transformers FOLDER OUT                         # mean pooling
    hfpipe export sentence-transformers FOLDER OUT --pooling cls --normalize

OUT is written in the module format every sentence-transformers release since 2.x reads:

    modules.json                  0: Transformer (OUT itself), 1: Pooling, 2: Normalize (with --normalize)
    config.json  model.safetensors  modeling_hfpipe.py  configuration_hfpipe.py  tokenizer files
                                  the bare encoder (any head is dropped), as remote code
    sentence_bert_config.json     max_seq_length: the model's max_position_embeddings, or the tokenizer's
                                  model_max_length where that is smaller
    1_Pooling/config.json         mean over the attention mask (default), or the [CLS] token
    2_Normalize/                  L2-normalized embeddings (with --normalize; the module has no files)

`SentenceTransformer(OUT, trust_remote_code=True)` loads it without hfpipe installed. The command
loads it that way, encodes `SAMPLE_TEXTS` and compares with pooling `AutoModel.from_pretrained(OUT)`'s
last_hidden_state by hand; the figure is printed and must be within `TOLERANCE`.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn import functional as F

from .export_source import ExportError, backbone, config_for, load_source

TOLERANCE = 1e-5  # max abs difference between SentenceTransformer.encode and pooling AutoModel by hand
POOLING_MODES = ("mean", "cls")
SAMPLE_TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world.",
    "Masked language models learn by filling in the blanks of ordinary sentences.",
    "a",
]


@dataclass
class SentenceTransformersExport:
    folder: Path
    pooling: str
    normalize: bool
    max_seq_length: int
    dimension: int
    max_abs_diff: float  # SentenceTransformer.encode vs pooling AutoModel outputs, over SAMPLE_TEXTS

    def summary(self) -> str:
        steps = f"{self.pooling} pooling" + (", normalized" if self.normalize else "")
        return (
            f"wrote {self.folder} (sentence-transformers: {steps}, {self.dimension} dims, "
            f"max_seq_length {self.max_seq_length})\n"
            f"  SentenceTransformer.encode vs {self.pooling} pooling of AutoModel on {len(SAMPLE_TEXTS)} "
            f"texts: max abs diff {self.max_abs_diff:.2e} (tolerance {TOLERANCE:.0e})"
        )


def export_sentence_transformers(folder: str | Path, out: str | Path, *, pooling: str = "mean",
                                 normalize: bool = False) -> SentenceTransformersExport:
    """Write FOLDER's encoder as a sentence-transformers folder OUT and check it against AutoModel."""
    if pooling not in POOLING_MODES:
        raise ExportError(f"--pooling {pooling!r}: choose one of {', '.join(POOLING_MODES)}")
    source = load_source(folder)
    encoder = backbone(source.model)
    encoder.config = config_for(encoder)  # architectures: HfpipeModel; a pooler only if it has one
    max_seq_length = min(encoder.config.max_position_embeddings, source.tokenizer.model_max_length)

    out = Path(out)
    encoder.save_pretrained(out)  # weights, config and the remote-code files
    source.tokenizer.save_pretrained(out)
    write_modules(out, encoder.config.hidden_size, pooling, normalize, max_seq_length)
    diff = check_embeddings(out, pooling, normalize)
    if not diff <= TOLERANCE:
        raise ExportError(f"{out}: SentenceTransformer embeddings differ from {pooling} pooling of AutoModel "
                          f"by {diff:.2e} > {TOLERANCE:.0e}")
    dimension = encoder.config.hidden_size
    return SentenceTransformersExport(out, pooling, normalize, max_seq_length, dimension, diff)


def write_modules(out: Path, dimension: int, pooling: str, normalize: bool, max_seq_length: int) -> None:
    """modules.json and the module configs, in sentence-transformers' long-standing format."""
    modules = [
        dict(idx=0, name="0", path="", type="sentence_transformers.models.Transformer"),
        dict(idx=1, name="1", path="1_Pooling", type="sentence_transformers.models.Pooling"),
    ]
    if normalize:
        modules.append(dict(idx=2, name="2", path="2_Normalize",
                            type="sentence_transformers.models.Normalize"))
        (out / "2_Normalize").mkdir(exist_ok=True)
    pooling_config = {
        "word_embedding_dimension": dimension,
        "pooling_mode_cls_token": pooling == "cls",
        "pooling_mode_mean_tokens": pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (out / "1_Pooling").mkdir(exist_ok=True)
    _write_json(out / "1_Pooling" / "config.json", pooling_config)
    _write_json(out / "sentence_bert_config.json", {"max_seq_length": max_seq_length, "do_lower_case": False})
    _write_json(out / "modules.json", modules)


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str, normalize: bool) -> torch.Tensor:
    """Sentence embeddings from token states: the masked mean, or the first ([CLS]) token."""
    if pooling == "cls":
        embeddings = hidden[:, 0]  # (B, T, C) -> (B, C)
    else:
        weights = attention_mask[..., None].to(hidden.dtype)  # (B, T) -> (B, T, 1): 1 for real tokens
        embeddings = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)  # (B, T, C) -> (B, C)
    return F.normalize(embeddings, dim=-1) if normalize else embeddings


def check_embeddings(out: Path, pooling: str, normalize: bool) -> float:
    """Max |SentenceTransformer(OUT).encode - pool(AutoModel(OUT))| over SAMPLE_TEXTS."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise ExportError("checking the export needs sentence-transformers: "
                          "pip install 'hfpipe[export]'") from None
    from transformers import AutoModel, AutoTokenizer

    st_model = SentenceTransformer(str(out), trust_remote_code=True, device="cpu")
    got = st_model.encode(SAMPLE_TEXTS, convert_to_tensor=True)
    model = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    tokenizer = AutoTokenizer.from_pretrained(out, trust_remote_code=True)  # it reads config.json first
    batch = tokenizer(SAMPLE_TEXTS, padding=True, truncation=True, max_length=st_model.max_seq_length,
                      return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (B, T, C)
    return float((got.cpu() - pool(hidden, batch["attention_mask"], pooling, normalize)).abs().max())


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")
