"""LoRA fine-tuning through the peft library: wrap a task model in adapters, count what trains.

    hfpipe finetune recipes/finetune/glue/sst2-lora.yaml model.name_or_path=runs/pretrain/final

    from hfpipe.train.lora import add_lora, count_parameters
    model = add_lora(model, recipe.peft, spec.kind)     # a peft PeftModel; only adapters and the head train
    trainable, total = count_parameters(model)

The loop (finetune.py) and the step (step.py) do not know about LoRA: they train whatever requires
grad. What leaves the run (adapter/, and final/ merged) is written by `hub/export.py`.
"""

import torch

from ..config.recipe import RecipeError

DEFAULT_TARGET_MODULES = ["qkv", "out_proj"]
"""hfpipe's attention projections (every layer's `mixer.qkv` and `mixer.out_proj`)."""

HEAD_MODULES = {
    "sequence_classification": ["pooler", "classifier"],
    "regression": ["pooler", "classifier"],
    "token_classification": ["classifier"],
    "question_answering": ["qa_outputs"],
}
"""Task kind -> the head modules a pretrained MLM folder does not have; they start untrained, so
LoRA trains them in full (peft's `modules_to_save`) and saves them with the adapter."""

TASK_TYPES = {
    "sequence_classification": "SEQ_CLS",
    "regression": "SEQ_CLS",
    "token_classification": "TOKEN_CLS",
    "question_answering": "QUESTION_ANS",
}
"""Task kind -> peft's TaskType, which picks the PeftModel class with the matching forward."""


def require_peft():
    """The peft module, or a RecipeError that says how to install it."""
    try:
        import peft
    except ImportError:
        raise RecipeError("is 'lora', which needs the peft library: pip install peft (or hfpipe[peft])",
                          key="peft.method") from None
    return peft


def add_lora(model: torch.nn.Module, args, kind: str):
    """Freeze `model` and wrap it with LoRA adapters as `args` (the recipe's `peft:` section) says.

    Raises RecipeError (key `peft.target_modules` / `peft.modules_to_save`) when a name matches no
    module, listing the names the model has."""
    peft = require_peft()
    targets = args.target_modules or DEFAULT_TARGET_MODULES
    head = args.modules_to_save or HEAD_MODULES[kind]
    linear = [name for name, module in model.named_modules() if isinstance(module, torch.nn.Linear)]
    _check_names("peft.target_modules", targets, linear, "Linear modules")
    _check_names("peft.modules_to_save", head, [name for name, _ in model.named_modules() if name], "modules")
    config = peft.LoraConfig(
        task_type=TASK_TYPES[kind],
        r=args.r,
        lora_alpha=args.alpha,
        lora_dropout=args.dropout,
        target_modules=list(targets),
        modules_to_save=list(head),
        bias=args.bias,
        use_rslora=args.use_rslora,
    )
    return peft.get_peft_model(model, config)


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts; a tied or shared tensor counts once."""
    params = list(model.parameters())  # parameters() yields a shared tensor once
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def _check_names(key: str, wanted: list[str], names: list[str], what: str) -> None:
    """Every wanted name must match a module as peft matches it: the full name or its last parts."""
    missing = [w for w in wanted if not any(n == w or n.endswith("." + w) for n in names)]
    if missing:
        leaves = dict.fromkeys(n.rsplit(".", 1)[-1] for n in names)  # deduplicated, in model order
        listed = ", ".join(leaf for leaf in leaves if not leaf.isdigit())  # not the layer indices
        named = ", ".join(map(repr, missing))
        raise RecipeError(f"no module is named {named}; the model's {what} are: {listed}", key=key)
