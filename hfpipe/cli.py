"""The `hfpipe` command line (also `python -m hfpipe`, so `accelerate launch -m hfpipe ...` works).

    hfpipe pretrain RECIPE [section.key=value ...]
    hfpipe finetune RECIPE [section.key=value ...]
    hfpipe validate RECIPE [...]          check a recipe without running it
    hfpipe tokenizer RECIPE [...]         train the recipe's tokenizer alone
    hfpipe convert bert SRC OUT           import a transformers BERT checkpoint
    hfpipe shapes [--preset NAME]         every tensor shape of one forward pass, dimensions named
    hfpipe attention MODEL TEXT --out F   plot attention maps
    hfpipe lessons [qkv|positions|norms|shapes]   the tutorial's four questions, answered by running code
    hfpipe push DIR --repo-id ID          upload a model folder to the Hub
    hfpipe glue MODEL --tasks ... --seeds ...   fine-tuning suite -> markdown table
    hfpipe demo                           the main job, end to end, offline, on CPU
"""

import argparse
import os
import sys
from pathlib import Path


def _recipe_kind(path: str) -> str:
    text = Path(path).read_text() if Path(path).is_file() else ""
    return "finetune" if "\ntask:" in "\n" + text else "pretrain"


def _load(path: str, overrides: list[str], kind: str | None = None):
    from .config import FinetuneRecipe, PretrainRecipe, load_recipe

    kind = kind or _recipe_kind(path)
    return load_recipe(path, FinetuneRecipe if kind == "finetune" else PretrainRecipe, overrides)


def cmd_pretrain(args) -> int:
    from .train.pretrain import pretrain

    pretrain(_load(args.recipe, args.overrides, "pretrain"))
    return 0


def cmd_finetune(args) -> int:
    from .train.finetune import finetune

    finetune(_load(args.recipe, args.overrides, "finetune"))
    return 0


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hfpipe", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    for name, fn, help_text in (
        ("pretrain", cmd_pretrain, "masked-language-model pretraining from a recipe"),
        ("finetune", cmd_finetune, "fine-tune on a task from a recipe"),
        ("tokenizer", cmd_tokenizer, "train the recipe's tokenizer alone (saved to output_dir/tokenizer)"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("recipe", help="YAML recipe file")
        p.add_argument("overrides", nargs="*", help="section.key=value overrides")
        p.set_defaults(fn=fn)

    p = sub.add_parser("validate", help="check a recipe without running it")
    p.add_argument("recipe", nargs="?")
    p.add_argument("overrides", nargs="*")
    p.add_argument("--print", action="store_true", help="print the fully resolved recipe")
    p.add_argument("--help-keys", choices=["pretrain", "finetune"], help="list every recipe key with its help text")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("convert", help="import a checkpoint into hfpipe")
    p.add_argument("kind", choices=["bert"])
    p.add_argument("src", help="BERT checkpoint folder or Hub id")
    p.add_argument("out", help="output folder")
    p.add_argument("--architecture", help="override config.json's architecture, e.g. BertForMaskedLM")
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("push", help="upload a model folder to the Hugging Face Hub")
    p.add_argument("dir")
    p.add_argument("--repo-id", required=True)
    p.add_argument("--private", action="store_true")
    p.add_argument("--revision", help="branch to push to (created if missing)")
    p.add_argument("--commit-message")
    p.set_defaults(fn=cmd_push)

    p = sub.add_parser("glue", help="run GLUE tasks x seeds and print a markdown table")
    p.add_argument("model", help="model folder, Hub id or BERT checkpoint")
    p.add_argument("overrides", nargs="*", help="key=value for every task, or task:key=value for one task "
                   "(e.g. sst2:data.train_file=...); put them right after MODEL")
    p.add_argument("--tasks", nargs="+", default=["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"])
    p.add_argument("--seeds", nargs="+", type=int, default=[42])
    p.add_argument("--output-dir", default="runs/glue")
    p.add_argument("--from-mnli", action="store_true", help="start RTE, MRPC and STS-B from the MNLI checkpoint")
    p.set_defaults(fn=cmd_glue)

    p = sub.add_parser("demo", help="the main job end to end: tokenizer -> pretrain -> fine-tune -> export -> reload")
    p.add_argument("--output-dir", default="runs/demo")
    p.set_defaults(fn=cmd_demo)

    from .teach import attention_viz, lessons, shapes

    for module in (shapes, attention_viz, lessons):
        module.add_parser(sub)  # each sets func=module.run
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    run = getattr(args, "fn", None) or args.func
    try:
        return run(args)
    except _user_errors() as err:  # a message that says what to fix, not a traceback
        print(f"hfpipe {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # the loops save a checkpoint first and say so
        print(f"hfpipe {args.command}: interrupted", file=sys.stderr)
        return 130


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by input the user can fix (recipes, files, data, checkpoints, the Hub)."""
    from .config.recipe import RecipeError
    from .data.sources import DataSourceError
    from .data.tokenizer import MissingMaskTokenError
    from .hub.push import HubError, ModelFolderError
    from .model.convert import ConversionError
    from .tasks.files import TaskDataError
    from .train.step import TrainingError

    return (RecipeError, FileNotFoundError, DataSourceError, TaskDataError, ConversionError, HubError,
            ModelFolderError, MissingMaskTokenError, TrainingError)


if __name__ == "__main__":
    sys.exit(main())
