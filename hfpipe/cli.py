"""The `hfpipe` command line (also `python -m hfpipe`, so `accelerate launch -m hfpipe ...` works).

    hfpipe pretrain RECIPE [section.key=value ...]     RECIPE: a shipped name (tiny) or a YAML file
    hfpipe finetune RECIPE [section.key=value ...]     e.g. hfpipe finetune glue/sst2 model.name_or_path=...
    hfpipe recipes                        list the shipped recipes
    hfpipe validate RECIPE [...]          check a recipe without running it
    hfpipe tokenizer RECIPE [...]         train the recipe's tokenizer alone
    hfpipe convert bert SRC OUT           import a transformers BERT checkpoint
    hfpipe shapes [--preset NAME]         every tensor shape of one forward pass, dimensions named
    hfpipe attention MODEL TEXT --out F   plot attention maps
    hfpipe lessons [qkv|positions|norms|shapes]   the tutorial's four questions, answered by running code
    hfpipe ablate positions|norms|norm-position|mixer   train variants x seeds: mean ± std table + curves
    hfpipe export onnx FOLDER OUT [--head base|auto|...]   an onnxruntime serving folder, checked
    hfpipe export sentence-transformers FOLDER OUT [--pooling mean|cls] [--normalize]
    hfpipe push DIR --repo-id ID          upload a model folder to the Hub
    hfpipe glue MODEL --tasks ... --seeds ... [--lr-grid ...]   fine-tuning suite -> markdown table
    hfpipe demo                           the main job, end to end, offline, on CPU
    hfpipe plan --minutes N [--out F]     size model, batch and schedule to a time budget here; write the recipe
    hfpipe decay RUN_DIR --minutes M      finish a WSD run from a stable-phase checkpoint (decay phase only)

`hfpipe pretrain --help` (and finetune) lists every recipe key with its type, default and help.
Imports are lazy: `--help` loads neither torch nor transformers, and each command imports only what it runs.
"""

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

TEACH_COMMANDS = {
    "shapes": ("hfpipe.teach.shapes", "print every tensor shape of one forward pass, with named dimensions"),
    "attention": ("hfpipe.teach.attention_viz", "plot a model's attention probabilities as PNG heatmaps"),
    "lessons": ("hfpipe.teach.lessons", "the tutorial's four questions answered with measurements"),
    "ablate": ("hfpipe.teach.ablate.command", "train variants x seeds and report mean ± std (the tutorial's questions)"),
}
"""Commands whose module (torch, the model) builds its own parser: imported only when that command runs."""


def _load(name_or_path: str, overrides: list[str], kind: str | None = None):
    from .config import RECIPE_CLASSES, load_recipe
    from .config.recipes_index import recipe_kind, resolve_recipe

    path = resolve_recipe(name_or_path, kind)
    return load_recipe(path, RECIPE_CLASSES[kind or recipe_kind(path)], overrides)


def cmd_pretrain(args) -> int:
    recipe = _load(args.recipe, args.overrides, "pretrain")  # recipe mistakes in well under a second:
    check_output_dir(recipe.output_dir)  # before torch and the model code are imported
    from .model.load import check_model_path, check_positions

    check_model_path(recipe.model.name_or_path)
    check_positions(recipe.model.name_or_path, recipe.data.block_size, "data.block_size")
    claim_run(recipe.output_dir)
    from .train.pretrain import pretrain

    pretrain(recipe)
    return 0


def cmd_finetune(args) -> int:
    recipe = _load(args.recipe, args.overrides, "finetune")
    check_output_dir(recipe.output_dir)
    from .model.load import check_model_path, check_positions

    check_model_path(recipe.model.name_or_path)
    check_positions(recipe.model.name_or_path, recipe.data.max_length)  # before any text is tokenized
    claim_run(recipe.output_dir)
    from .train.finetune import finetune

    finetune(recipe)
    return 0


def claim_run(output_dir: str) -> None:
    """One run per output_dir: the job's first process (global rank 0) locks it until it exits. Not every
    machine's rank 0: nodes of one job share output_dir on a shared filesystem, and would refuse each other."""
    if os.environ.get("RANK", "0") == "0":
        from .train.lock import claim_output_dir

        claim_output_dir(output_dir)


def check_output_dir(output_dir: str) -> None:
    """A run's output_dir must be a folder (or not exist yet): a file there is refused before any import."""
    from .config.recipe import RecipeError

    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise RecipeError(f"output_dir={output_dir!r} is a file, not a folder: set output_dir to a folder")


def cmd_validate(args) -> int:
    from .config import FinetuneRecipe, PretrainRecipe, format_help, to_yaml

    if args.help_keys:
        print(format_help(FinetuneRecipe if args.help_keys == "finetune" else PretrainRecipe))
        return 0
    if not args.recipe:
        print("hfpipe validate: give a RECIPE (or --help-keys pretrain|finetune)", file=sys.stderr)
        return 2
    recipe = _load(args.recipe, args.overrides)
    if args.print:
        print(to_yaml(recipe))
    print(f"{args.recipe}: OK ({type(recipe).__name__})")
    return 0


def cmd_recipes(args) -> int:
    from .config.recipes_index import format_recipes

    print(format_recipes(), end="")
    return 0


def cmd_tokenizer(args) -> int:
    from .data.sources import iter_texts, load_text_datasets
    from .data.tokenizer import get_tokenizer

    recipe = _load(args.recipe, args.overrides, "pretrain")
    train_texts, _ = load_text_datasets(recipe.data, seed=recipe.seed)
    tokenizer = get_tokenizer(recipe.tokenizer, lambda: iter_texts(train_texts), Path(recipe.output_dir))
    print(f"tokenizer with {len(tokenizer)} tokens in {Path(recipe.output_dir) / 'tokenizer'}")
    return 0


def cmd_convert(args) -> int:
    from .model.convert import convert_bert

    out = convert_bert(args.src, args.out, architecture=args.architecture)
    print(f"converted {args.src} -> {out}")
    return 0


def cmd_export(args) -> int:
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not args.overwrite:
        from .hub.export_source import ExportError

        raise ExportError(f"{out} already holds files: choose an empty or new OUT folder, or add --overwrite")
    if args.format == "onnx":
        from .hub.onnx_export import export_onnx

        result = export_onnx(args.folder, args.out, head=args.head, opset=args.opset)
    else:
        from .hub.st_export import export_sentence_transformers

        result = export_sentence_transformers(args.folder, args.out, pooling=args.pooling,
                                              normalize=args.normalize)
    print(result.summary())
    return 0


def cmd_push(args) -> int:
    from .hub.push import push_folder

    result = push_folder(args.dir, args.repo_id, private=args.private, revision=args.revision,
                         commit_message=args.commit_message)
    print(f"pushed {len(result.uploaded)} file(s): {result.commit_url}" if result.changed
          else f"no changes: {args.repo_id} already holds this folder")
    return 0


def cmd_glue(args) -> int:
    from .train.suite import run_suite

    return run_suite(args)


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args)


def cmd_plan(args) -> int:
    from .train.plan import run_plan

    return run_plan(args)


def cmd_decay(args) -> int:
    from .train.decay import run_decay

    return run_decay(args)


def _keys_help(kind: str) -> str:
    from .config import RECIPE_CLASSES, format_help

    return format_help(RECIPE_CLASSES[kind])


def _add_export_parser(sub) -> None:
    """`hfpipe export onnx | sentence-transformers FOLDER OUT`."""
    p = sub.add_parser("export", help="export a model folder for serving: ONNX or sentence-transformers")
    formats = p.add_subparsers(dest="format", required=True)
    q = formats.add_parser("onnx", help="OUT/model.onnx + tokenizer + config, checked with onnxruntime")
    q.add_argument("folder", help="an hfpipe or BERT model folder (BERT is converted to hfpipe first)")
    q.add_argument("out", help="output folder")
    q.add_argument("--head", default="base", metavar="HEAD",
                   help="what to export: base (default: the bare encoder, output last_hidden_state), "
                   "auto (the folder's own head, from config.json architectures), or that head named: "
                   "masked-lm, sequence-classification, token-classification, question-answering, "
                   "multiple-choice")
    q.add_argument("--overwrite", action="store_true", help="write into OUT even when it already holds files (files of the same name are replaced)")
    q.add_argument("--opset", type=int, help="ONNX opset version (default: the torch exporter's)")
    q.set_defaults(fn=cmd_export)
    q = formats.add_parser("sentence-transformers",
                           help="a SentenceTransformer folder, checked against AutoModel")
    q.add_argument("folder", help="an hfpipe or BERT model folder (BERT is converted to hfpipe first)")
    q.add_argument("out", help="output folder")
    q.add_argument("--pooling", choices=["mean", "cls"], default="mean",
                   help="mean over the attention mask (default) or the first ([CLS]) token")
    q.add_argument("--normalize", action="store_true", help="add a Normalize module (unit-length embeddings)")
    q.add_argument("--overwrite", action="store_true", help="write into OUT even when it already holds files (files of the same name are replaced)")
    q.set_defaults(fn=cmd_export)


def _add_budget_parsers(sub) -> None:
    """`hfpipe plan` and `hfpipe decay`: pretraining sized to a time budget, and finished early."""
    p = sub.add_parser("plan", help="measure the presets here and write a recipe sized to a time budget")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="keys of the base recipe (data, tokenizer)")
    p.add_argument("--minutes", type=float, required=True, help="the pretraining budget (wall clock)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--out", help="write the planned recipe to this YAML file")
    p.add_argument("--base", default="tiny", help="recipe whose data and tokenizer the plan keeps (default: tiny)")
    p.add_argument("--presets", nargs="+", help="candidate presets (default: all)")
    p.add_argument("--tokens-per-param", type=float, default=20.0, help="the sizing rule (Chinchilla: 20)")
    p.add_argument("--seconds", type=float, default=5.0, help="measurement time per preset")
    p.add_argument("--micro-batch", type=int, help="rows per micro-batch (default 32 on cpu, 128 on cuda)")
    p.add_argument("--precision", default=None,
                   help="train.mixed_precision of the written recipe (default null: the launcher's choice)")
    p.add_argument("--estimate-tflops", type=float,
                   help="do not measure: estimate tokens/s from this device peak (TFLOP/s) x --mfu")
    p.add_argument("--mfu", type=float, default=0.35, help="model-FLOPs utilization for --estimate-tflops")
    p.set_defaults(fn=cmd_plan, argv=None)
    p = sub.add_parser("decay", help="finish a WSD run from a stable-phase checkpoint: the decay phase only")
    p.add_argument("run_dir", help="the pretraining run's output_dir")
    budget = p.add_mutually_exclusive_group(required=True)
    budget.add_argument("--minutes", type=float, help="decay budget in minutes")
    budget.add_argument("--steps", type=int, help="decay budget in optimizer steps")
    p.add_argument("--checkpoint", help="a checkpoint folder or step number (default: the newest)")
    p.add_argument("--out", help="output folder (default: RUN_DIR/decay-STEP)")
    p.set_defaults(fn=cmd_decay)


def _add_glue_parser(sub) -> None:
    """`hfpipe glue`: tasks x seeds, and the lr-selection protocol for comparing pretrained models."""
    p = sub.add_parser("glue", help="run GLUE tasks x seeds and print a markdown table")
    p.add_argument("model", help="model folder, Hub id or BERT checkpoint")
    p.add_argument("overrides", nargs="*", help="key=value for every task, or task:key=value for one task "
                   "(e.g. sst2:data.train_file=...); put them right after MODEL")
    p.add_argument("--tasks", nargs="+",
                   default=["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--output-dir", default="runs/glue")
    p.add_argument("--from-mnli", action="store_true",
                   help="start RTE, MRPC and STS-B from the MNLI checkpoint")
    p.add_argument("--lr-grid", nargs="+", type=float, metavar="LR",
                   help="choose each task's lr from these on a held-out part of the training data, "
                   "then run --seeds with it (default: the recipe's lr, no selection)")
    p.add_argument("--select-on", type=float, default=0.1, metavar="FRACTION",
                   help="fraction of the training data held out to choose the lr (default 0.1)")
    p.add_argument("--select-seed", type=int, default=0, help="seed of the selection split and runs")
    p.set_defaults(fn=cmd_glue)



def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The `hfpipe` parser. With `only` (the command about to run; "" for none), the other commands get
    their one-line help but not their costly parts (the recipe key listings, the teach modules)."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="hfpipe", description=__doc__, formatter_class=raw)
    sub = parser.add_subparsers(dest="command", required=True)
    wanted = (lambda name: True) if only is None else (lambda name: name == only)

    for name, fn, help_text, example in (
        ("pretrain", cmd_pretrain, "masked-language-model pretraining from a recipe",
         "hfpipe pretrain tiny train.max_steps=50 output_dir=runs/try"),
        ("finetune", cmd_finetune, "fine-tune on a task from a recipe",
         "hfpipe finetune glue/sst2 model.name_or_path=runs/pretrain-tiny/final"),
        ("tokenizer", cmd_tokenizer, "train the recipe's tokenizer alone (saved to output_dir/tokenizer)",
         "hfpipe tokenizer tiny tokenizer.vocab_size=4000"),
    ):
        list_keys = name != "tokenizer" and wanted(name)  # (tokenizer takes a pretraining recipe)
        p = sub.add_parser(name, help=help_text, description=f"{help_text}, e.g.\n\n    {example}",
                           epilog=_keys_help(name) if list_keys else None, formatter_class=raw)
        p.add_argument("recipe", help="a shipped recipe's name (`hfpipe recipes` lists them) or a YAML file")
        p.add_argument("overrides", nargs="*", metavar="key=value",
                       help="recipe keys to override" + (" (every key is listed below)" if list_keys else ""))
        p.set_defaults(fn=fn)

    p = sub.add_parser("recipes", help="list the shipped recipes (usable by name) and accelerate configs")
    p.set_defaults(fn=cmd_recipes)

    p = sub.add_parser("validate", help="check a recipe without running it")
    p.add_argument("recipe", nargs="?", help="a shipped recipe's name or a YAML file")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--print", action="store_true", help="print the fully resolved recipe")
    p.add_argument("--help-keys", choices=["pretrain", "finetune"],
                   help="list every recipe key with its help text")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("convert", help="import a checkpoint into hfpipe")
    p.add_argument("kind", choices=["bert"])
    p.add_argument("src", help="BERT checkpoint folder or Hub id")
    p.add_argument("out", help="output folder")
    p.add_argument("--architecture", help="override config.json's architecture, e.g. BertForMaskedLM")
    p.set_defaults(fn=cmd_convert)

    _add_export_parser(sub)
    _add_budget_parsers(sub)

    p = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub")
    p.add_argument("dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to (created if missing)")
    p.add_argument("--commit-message")
    p.set_defaults(fn=cmd_push)

    _add_glue_parser(sub)

    p = sub.add_parser("demo",
                       help="the main job end to end: tokenizer -> pretrain -> fine-tune -> export -> reload")
    p.add_argument("--output-dir", default="runs/demo")
    p.add_argument("--quick", action="store_true", help="a few steps per stage (about a minute): checks the pipeline")
    p.set_defaults(fn=cmd_demo)

    for name, (module, help_text) in TEACH_COMMANDS.items():
        if wanted(name):
            importlib.import_module(module).add_parser(sub)  # sets func=module.run
        else:
            sub.add_parser(name, help=help_text)
    return parser


def configure_logging() -> None:
    """INFO and up from hfpipe's modules (packing statistics, data sizes, ...) to stderr with time and level.

    hfpipe's modules log with `logging.getLogger(__name__)` (or accelerate's `get_logger`, which logs through
    the same loggers). Other libraries stay at WARNING; in a multi-process run only the main process
    (RANK 0) logs INFO. The level can be set with accelerate's own variable, ACCELERATE_LOG_LEVEL."""
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.WARNING, stream=sys.stderr)
    main_process = os.environ.get("RANK", "0") == "0"
    level = os.environ.get("ACCELERATE_LOG_LEVEL", "INFO").upper() if main_process else "WARNING"
    logging.getLogger("hfpipe").setLevel(level)


def _command(argv: list[str]) -> str:
    """The subcommand in ARGV ("" when there is none yet): the first word that is not an option."""
    return next((word for word in argv if not word.startswith("-")), "")


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(only=_command(argv)).parse_args(argv)
    configure_logging()
    run = getattr(args, "fn", None) or args.func
    try:
        return run(args)
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        # a message that says what to fix, on one line, not a traceback
        from .config.recipe import RecipeError  # (its own format: one line per problem of the recipe)

        text = str(err) if isinstance(err, RecipeError) else " ".join(str(err).split())
        print(f"hfpipe {args.command}: error: {text}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the loops save a checkpoint first and say so
        print(f"hfpipe {args.command}: interrupted", file=sys.stderr)
        return 130


USER_ERRORS = {
    "hfpipe.config.recipe": ["RecipeError"],
    "hfpipe.data.sources": ["DataSourceError"],
    "hfpipe.data.tokenizer": ["MissingMaskTokenError"],
    "hfpipe.hub.export_source": ["ExportError"],
    "hfpipe.hub.push": ["HubError", "ModelFolderError"],
    "hfpipe.model.convert": ["ConversionError"],
    "hfpipe.model.load": ["ModelPathError"],
    "hfpipe.tasks.files": ["TaskDataError"],
    "hfpipe.train.step": ["TrainingError"],
    "hfpipe.train.lock": ["RunLockError"],
}
"""Errors caused by input the user can fix (recipes, files, data, checkpoints, the Hub), by module."""


def _user_errors() -> tuple[type[BaseException], ...]:
    """The classes of USER_ERRORS whose module is imported (an error of a module never imported cannot have
    been raised), so that reporting a recipe mistake does not import torch first."""
    found = [getattr(sys.modules[module], name) for module, names in USER_ERRORS.items()
             if module in sys.modules for name in names]
    return (FileNotFoundError, NotADirectoryError, *found)


if __name__ == "__main__":
    sys.exit(main())
