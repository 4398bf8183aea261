"""ONNX export: an hfpipe (or BERT) folder -> a serving folder for onnxruntime, checked against PyTorch.

    hfpipe export onnx FOLDER OUT                      # the bare encoder: last_hidden_state
    hfpipe export onnx FOLDER OUT --head auto          # the folder's own head (config.json architectures)

OUT gets model.onnx, the tokenizer and config.json (+ configuration_hfpipe.py), so
`AutoTokenizer.from_pretrained(OUT, trust_remote_code=True)` feeds `onnxruntime.InferenceSession(OUT/model.onnx)` directly:
the inputs are named as the tokenizer's outputs (input_ids, attention_mask, and token_type_ids where
both the tokenizer and the model use segments), with dynamic batch and sequence axes (and choices, for
multiple choice). (trust_remote_code: transformers 5's AutoTokenizer reads config.json first and would
otherwise stop at the custom-code prompt.) Outputs are named as the head's ModelOutput fields: last_hidden_state, logits, or
start_logits and end_logits.

The graph is captured by `torch.export` (batch and sequence axes are `torch.export.Dim`s) and
translated by the dynamo ONNX exporter. onnxruntime then runs batches whose shapes the export never saw,
one unpadded and one with padded rows, and must match PyTorch to `TOLERANCE`; the figure is printed.
"""

import contextlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .export_source import HEADS, ExportError, backbone, config_for, load_source

TOLERANCE = 1e-4  # max abs difference between onnxruntime and PyTorch outputs, fp32
EXPORT_SHAPE = (2, 16)  # (B, T) of the traced example; its row 1 is padded
CHECK_SHAPES = ((1, 7), (3, 33))  # (B, T) never traced: one batch unpadded, one with two padded rows
CHOICES = {EXPORT_SHAPE: 2, CHECK_SHAPES[0]: 3, CHECK_SHAPES[1]: 2}  # K per shape, for multiple choice
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
HEAD_CHOICES = ("auto", *HEADS)


@dataclass
class OnnxExport:
    path: Path  # OUT/model.onnx
    architecture: str  # the exported module's class
    head: str
    input_names: list[str]
    output_names: list[str]
    opset: int
    max_abs_diff: float  # onnxruntime vs PyTorch, over CHECK_SHAPES and every output

    def summary(self) -> str:
        shapes = ", ".join(str(s) for s in CHECK_SHAPES)
        return (
            f"wrote {self.path} ({self.architecture}, head {self.head}, opset {self.opset})\n"
            f"  inputs {', '.join(self.input_names)} -> outputs {', '.join(self.output_names)}\n"
            f"  onnxruntime vs PyTorch on unseen batch shapes {shapes}: max abs diff {self.max_abs_diff:.2e} "
            f"(tolerance {TOLERANCE:.0e})"
        )


class TensorOutputs(nn.Module):
    """The model as torch.export sees it: named token tensors in, a tuple of the head's outputs out."""

    def __init__(self, model: nn.Module, output_names: tuple[str, ...]):
        super().__init__()
        self.model = model
        self.output_names = output_names

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         return_dict=True)
        return tuple(out[name] for name in self.output_names)


def export_onnx(folder: str | Path, out: str | Path, *, head: str = "base",
                opset: int | None = None) -> OnnxExport:
    """Export FOLDER's bare encoder (`head="base"`) or its own head (`"auto"`, or the head's name) to
    OUT/model.onnx, write the tokenizer and config beside it, and check onnxruntime against PyTorch."""
    try:
        import onnxruntime
    except ImportError:
        raise ExportError("ONNX export needs onnx, onnxscript and onnxruntime: "
                          "pip install 'hfpipe[export]'") from None
    if head not in HEAD_CHOICES:
        raise ExportError(f"--head {head!r}: choose one of {', '.join(HEAD_CHOICES)}")
    source = load_source(folder)
    head = source.head if head == "auto" else head
    if head not in ("base", source.head):
        raise ExportError(f"{source.folder}: holds a {source.architecture} ({source.head} head), "
                          f"not a {head} head; use --head base or --head auto")
    model = backbone(source.model) if head == "base" else source.model
    module = TensorOutputs(model, HEADS[head][1]).eval()
    names = input_names(source.tokenizer, model.config)
    multiple_choice = head == "multiple-choice"

    example = example_inputs(model.config, names, EXPORT_SHAPE, multiple_choice)
    shapes = dynamic_shapes(model.config, example, multiple_choice)
    program = torch.export.export(module, (), kwargs=example, dynamic_shapes=shapes)
    with _quiet():
        onnx_program = torch.onnx.export(program, dynamo=True, input_names=names, opset_version=opset,
                                         output_names=list(module.output_names), verbose=False)
    axes = [dim.__name__ for dim in shapes[names[0]].values()]  # the exporter calls them s17, s43, ...
    onnx_program.rename_axes(dict(zip(onnx_program.model.graph.inputs[0].shape, axes)))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_program.save(out / "model.onnx")
    source.tokenizer.save_pretrained(out)
    config_for(model).save_pretrained(out)

    session = onnxruntime.InferenceSession(out / "model.onnx", providers=["CPUExecutionProvider"])
    checks = [example_inputs(model.config, names, shape, multiple_choice) for shape in CHECK_SHAPES]
    diff = max(max_abs_diff(session, module, inputs) for inputs in checks)
    if not diff <= TOLERANCE:
        raise ExportError(f"{out / 'model.onnx'} does not reproduce PyTorch: "
                          f"max abs diff {diff:.2e} > {TOLERANCE:.0e}")
    return OnnxExport(out / "model.onnx", type(model).__name__, head, names, list(module.output_names),
                      onnx_program.model.opset_imports[""], diff)


def input_names(tokenizer, config) -> list[str]:
    """The tokenizer's outputs the model takes: token_type_ids only where the model has segment embeddings."""
    names = [n for n in TOKEN_INPUTS if n in tokenizer.model_input_names or n == "input_ids"]
    return [n for n in names if n != "token_type_ids" or config.type_vocab_size > 0]


def example_inputs(config, names: list[str], shape: tuple[int, int], multiple_choice: bool) -> dict:
    """Token tensors of `shape` (B, T), or (B, K, T) for multiple choice: row r holds T // (r + 1) real
    tokens (row 0 unpadded, the others padded), random ids seeded by the shape, the second half segment 1."""
    B, T = shape
    T = min(T, config.max_position_embeddings)
    rows = B * CHOICES[shape] if multiple_choice else B
    generator = torch.Generator().manual_seed(B * 1000 + T)
    lengths = torch.tensor([T // (r + 1) for r in range(rows)])  # (rows,)
    positions = torch.arange(T)[None]  # (1, T)
    attention_mask = (positions < lengths[:, None]).long()  # (rows, T): 1 for real tokens
    first_id = min(5, config.vocab_size - 1)  # past the special tokens
    input_ids = torch.randint(first_id, config.vocab_size, (rows, T), generator=generator)
    input_ids = input_ids.masked_fill(attention_mask == 0, config.pad_token_id or 0)
    token_type_ids = ((positions >= lengths[:, None] // 2) & (attention_mask == 1)).long()  # (rows, T)
    if config.type_vocab_size < 2:
        token_type_ids.zero_()
    tensors = dict(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
    if multiple_choice:
        tensors = {k: v.view(B, -1, T) for k, v in tensors.items()}  # (B*K, T) -> (B, K, T)
    return {name: tensors[name] for name in names}


def dynamic_shapes(config, example: dict[str, torch.Tensor], multiple_choice: bool) -> dict[str, dict]:
    """Every input's batch and sequence axes (and choices axis) are dynamic, shared by all inputs. A row
    holds at most max_position_embeddings tokens (a learned position table has no more rows)."""
    batch = torch.export.Dim("batch_size")
    sequence = torch.export.Dim("sequence_length", max=config.max_position_embeddings)
    dims = {0: batch, 1: sequence}
    if multiple_choice:
        dims = {0: batch, 1: torch.export.Dim("num_choices"), 2: sequence}
    return {name: dims for name in example}


def max_abs_diff(session, module: nn.Module, inputs: dict[str, torch.Tensor]) -> float:
    """Largest |onnxruntime - PyTorch| over every output of one batch."""
    with torch.no_grad():
        expected = module(**inputs)
    got = session.run(list(module.output_names), {k: v.numpy() for k, v in inputs.items()})
    return max(float((torch.from_numpy(g) - e).abs().max()) for g, e in zip(got, expected))


@contextlib.contextmanager
def _quiet():
    """The ONNX exporter's notes on operators hfpipe never uses (torchvision's) and deprecation warnings
    from its internals: silenced, so the summary is what the command prints."""
    exporter_logger = logging.getLogger("torch.onnx")
    level = exporter_logger.level
    exporter_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        exporter_logger.setLevel(level)
