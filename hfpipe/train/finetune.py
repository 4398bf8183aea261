"""Fine-tuning on a downstream task (GLUE, CoNLL-2003 NER, SQuAD): setup, the loop (fit), evaluate, finish.

    hfpipe finetune recipes/finetune/glue/sst2.yaml model.name_or_path=runs/pretrain-tiny/final
    hfpipe finetune recipes/finetune/glue/sst2-lora.yaml model.name_or_path=...   # LoRA (peft: section)
    accelerate launch -m hfpipe finetune recipes/finetune/conll2003.yaml model.name_or_path=...

Starts from an hfpipe folder, a Hub id, or a BERT checkpoint (converted on the fly); attaches the
task head; trains with dynamic padding and length-grouped batches; evaluates every epoch; keeps
the best model by the task's main metric; optionally stops early. With `peft.method: lora` the
model is wrapped in peft adapters before training (train/lora.py); the loop is the same. As in
pretraining, batches are a pure function of (seed, step) (data/loader.py) and the loss is normalized over the whole global
batch (train/step.py), so the run is the same on 1 or N processes; evaluation gathers every example
exactly once.
"""

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from ..config import FinetuneRecipe, save_recipe, to_dict
from ..data.loader import MODEL_INPUTS, epoch_batches, micro_slices, pad_batch
from ..hub.export import (
    export_best,
    export_best_adapter,
    push_checkpoint_to_hub,
    push_final,
    save_model_folder,
)
from ..model.load import load_encoder
from ..model.modeling_hfpipe import (
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
)
from ..tasks import compute_task_metrics, get_task, load_task_data, main_metric_value, preprocess
from .budget import Budget, budget_spent
from .checkpoint import find_resume, load_checkpoint, save_checkpoint
from .distributed import describe, equal_share, full_state_dict, make_accelerator
from .logs import MetricsLog, flat_config, mlm_flops_per_token, peak_flops, plot_curves, require_trackers
from .loop import LoopGlue, done_line
from .lora import add_lora, count_parameters, require_peft
from .optim import build_optimizer
from .step import LoopState

HEADS = {
    "sequence_classification": HfpipeForSequenceClassification,
    "regression": HfpipeForSequenceClassification,
    "token_classification": HfpipeForTokenClassification,
    "question_answering": HfpipeForQuestionAnswering,
}


@dataclass
class Run:
    """What `setup` builds for `fit`, `evaluate` and `finish`, and the best-model bookkeeping."""

    recipe: FinetuneRecipe
    accelerator: Accelerator
    spec: Any  # the task (tasks/spec.py)
    tokenizer: PreTrainedTokenizerBase
    raw: dict  # split name -> raw examples (SQuAD's answers are scored against them)
    features: dict  # split name -> tokenized features
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    budget: Budget
    steps_per_epoch: int
    log: MetricsLog
    state: LoopState
    best: dict | None = None  # {"value", "step", "metrics"} of the best evaluation so far
    history: list[dict] = field(default_factory=list)  # every evaluation
    bad_evals: int = 0  # evaluations since the best one
    last_loss: float = math.nan
    parameters: dict = field(default_factory=dict)  # {"trainable_parameters", "total_parameters"}
    glue: LoopGlue | None = None  # fit's loop glue (train/loop.py)

    @property
    def out_dir(self) -> Path:
        return Path(self.recipe.output_dir)

    def checkpoint_state(self) -> dict:
        return {**self.state.to_dict(), "best": self.best, "history": self.history, "bad_evals": self.bad_evals}


def finetune(recipe, model_factory=None) -> dict:
    """Fine-tune as the recipe says; returns the best evaluation metrics.

    `model_factory(recipe, spec) -> model` replaces `build_model`: benchmarks use it to run this very
    loop on transformers' own BERT classes, so the comparison isolates the model implementation."""
    run = setup(recipe, model_factory or build_model)
    fit(run)
    return finish(run)


# ----------------------------------------------------------------------------------------------
# Setup: task data, model with its head, optimizer, resume
# ----------------------------------------------------------------------------------------------


def build_model(recipe, spec):
    head = HEADS[spec.kind]
    kwargs = {"num_labels": spec.num_labels}
    if spec.kind == "regression":
        kwargs["problem_type"] = "regression"
    elif spec.kind in ("sequence_classification", "token_classification"):
        kwargs.update(id2label=spec.id2label, label2id=spec.label2id)
        if spec.kind == "sequence_classification":
            kwargs["problem_type"] = "single_label_classification"
    model = load_encoder(recipe.model.name_or_path, head, **kwargs, **recipe.model.config_overrides)
    model.set_attn_implementation(recipe.model.attn_implementation)
    return model


def setup(recipe, model_factory) -> Run:
    train, out_dir = recipe.train, Path(recipe.output_dir)
    # Before any compute, and before resolved_recipe.yaml is overwritten: a tracker that is not installed,
    # a damaged checkpoint, or one trained with another recipe stops the run here.
    report_to, resume_from = require_trackers(recipe.tracking.report_to), find_resume(recipe)
    accelerator = make_accelerator(recipe, report_to=report_to, project_dir=out_dir)  # checks the launch
    set_seed(recipe.seed)
    spec = get_task(recipe.task)
    if recipe.peft.method == "lora":
        require_peft()  # before the data is loaded: say now that peft is missing
    tokenizer = AutoTokenizer.from_pretrained(recipe.model.name_or_path)
    with accelerator.main_process_first():
        raw = _cap_evaluation(load_task_data(spec, recipe.data), spec, recipe.eval)
        features = preprocess(spec, raw, tokenizer, recipe.data)
    # Written only once the data is in hand: data that cannot be had (an unreachable Hub, a bad file)
    # leaves the output folder as it was.
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out_dir / "resolved_recipe.yaml")
    if report_to:  # started now, so a tracker that cannot start fails before any model compute
        accelerator.init_trackers(recipe.tracking.project_name, config=flat_config(to_dict(recipe)))

    set_seed(recipe.seed)  # the new head's init does not depend on what data loading consumed
    model = model_factory(recipe, spec)
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if recipe.peft.method == "lora":
        model = add_lora(model, recipe.peft, spec.kind)  # frozen weights; adapters and head train
    trainable, total = count_parameters(model)
    accelerator.print(f"parameters: {trainable:,} trainable of {total:,} ({100 * trainable / total:.2f}%)")
    optimizer = build_optimizer(model, train)
    if train.compile:
        model = torch.compile(model, dynamic=True)
    model, optimizer = accelerator.prepare(model, optimizer)

    slots = accelerator.num_processes * train.gradient_accumulation_steps  # micro-batches per global batch
    steps_per_epoch = len(epoch_batches(_lengths(features["train"]), train.batch_size * slots, recipe.seed, 0,
                                        False, slots))
    max_steps = train.max_steps
    if train.num_epochs:
        epoch_steps = math.ceil(train.num_epochs * steps_per_epoch)
        max_steps = min(max_steps, epoch_steps) if max_steps else epoch_steps

    state, best, history, bad_evals = LoopState(), None, [], 0
    if resume_from is not None:
        saved = load_checkpoint(accelerator, resume_from)
        state, best, history, bad_evals = LoopState.from_dict(saved), saved["best"], saved["history"], saved["bad_evals"]
        accelerator.print(f"resumed from {resume_from} at step {state.step}")
    log = MetricsLog(out_dir / "metrics.jsonl", accelerator.is_main_process, state.step if resume_from else None)
    return Run(recipe, accelerator, spec, tokenizer, raw, features, model, optimizer, Budget(train, total_steps=max_steps),
               steps_per_epoch, log, state, best, history, bad_evals,
               parameters={"trainable_parameters": trainable, "total_parameters": total})


def _cap_evaluation(raw, spec, args):
    """`eval.max_batches`: the first max_batches x batch_size examples of each validation split."""
    if args.max_batches is not None:
        for split in (s for s in spec.eval_splits if s in raw):
            raw[split] = raw[split].select(range(min(len(raw[split]), args.max_batches * args.batch_size)))
    return raw


def _lengths(train_set) -> list[int]:
    return train_set["lengths"] if "lengths" in train_set.column_names else [len(x) for x in train_set["input_ids"]]


# ----------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------


def fit(run: Run) -> None:
    """Train until the budget is spent or early stopping: lr -> batches -> step -> log / evaluate / save
    (train/loop.py, the glue pretraining shares). Ctrl-C saves a checkpoint first; the same command resumes."""
    train, accelerator, state, train_set = run.recipe.train, run.accelerator, run.state, run.features["train"]
    world, rank, accum = accelerator.num_processes, accelerator.process_index, train.gradient_accumulation_steps
    global_batch, lengths = train.batch_size * world * accum, _lengths(train_set)
    eval_every = train.eval_every_steps or run.steps_per_epoch  # default: every epoch
    epochs = {}  # the epoch's global batches, by epoch (only the current one is kept)

    def next_batches() -> list[dict]:
        """This process's micro-batches of the global batch of step state.step."""
        epoch = state.step // run.steps_per_epoch
        if epoch not in epochs:
            epochs.clear()
            epochs[epoch] = epoch_batches(lengths, global_batch, run.recipe.seed, epoch, train.group_by_length,
                                          world * accum)
        batches = epochs[epoch]
        return [pad_batch([train_set[i] for i in idx], run.tokenizer)
                for idx in micro_slices(batches[state.step % len(batches)], world, rank, accum)]

    def save() -> Path:
        return save_checkpoint(accelerator, run.out_dir, state.step, run.checkpoint_state(), train.keep_last,
                               recipe=run.recipe)

    config = accelerator.unwrap_model(run.model).config
    mean_length = round(sum(lengths) / max(len(lengths), 1))
    run.glue = LoopGlue(accelerator, state, run.budget, run.log, desc=f"finetune {run.spec.name}", train=train,
                        out_dir=run.out_dir, save_checkpoint=save, epoch=lambda: state.step / run.steps_per_epoch,
                        flops_per_token=mlm_flops_per_token(config, mean_length, 0.0),  # the encoder's; heads are small
                        peak=peak_flops(accelerator.device, run.recipe.tracking.peak_tflops, accelerator.mixed_precision))
    run.model.train()
    with run.glue as glue:
        done = budget_spent(run.budget, state, accelerator)
        while not done:
            glue.step(run.model, run.optimizer, next_batches)
            run.last_loss = glue.last_loss
            done = budget_spent(run.budget, state, accelerator)
            if (state.step % eval_every == 0 or done) and evaluate_and_keep_best(run):
                break  # early stopping
            if train.save_every_steps and state.step % train.save_every_steps == 0:
                saved = save()
                if run.recipe.hub.push_checkpoints and accelerator.is_main_process:
                    push_checkpoint_to_hub(accelerator.unwrap_model(run.model), run.tokenizer, saved, run.recipe)
            glue.check_interrupt()


# ----------------------------------------------------------------------------------------------
# Evaluation: every example exactly once, whatever the number of processes
# ----------------------------------------------------------------------------------------------


def evaluate_and_keep_best(run: Run) -> bool:
    """Evaluate every validation split, log it, save best/ when the main metric improves; True when
    early stopping says to stop."""
    accelerator, state, spec, train = run.accelerator, run.state, run.spec, run.recipe.train
    metrics = evaluate(run)
    value = main_metric_value(spec, metrics)
    run.history.append({"step": state.step, "epoch": round(state.step / run.steps_per_epoch, 3), **metrics})
    run.log.write({"step": state.step, **{f"eval_{k}": v for k, v in metrics.items()}})
    accelerator.log({f"eval_{k}": v for k, v in metrics.items()}, step=state.step)
    accelerator.print(f"step {state.step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    if run.best is None or value > run.best["value"]:  # the first maximum wins: later ties do not replace it
        run.best, run.bad_evals = {"value": value, "step": state.step, "metrics": metrics}, 0
        state_dict = full_state_dict(accelerator, run.model)  # collective: gathered from FSDP/ZeRO shards
        if accelerator.is_main_process:
            save_model_folder(accelerator.unwrap_model(run.model), run.tokenizer, run.out_dir / "best", state_dict)
    else:
        run.bad_evals += 1
    accelerator.wait_for_everyone()
    if train.early_stopping_patience and run.bad_evals >= train.early_stopping_patience:
        accelerator.print(f"early stopping: no improvement of {spec.main_metric} in {run.bad_evals} evaluations")
        return True
    return False


def evaluate(run: Run) -> dict:
    """The task's metrics on every validation split (computed identically on every process)."""
    from ..tasks.qa import postprocess_qa_predictions

    spec, recipe, metrics = run.spec, run.recipe, {}
    for split in (name for name in spec.eval_splits if name in run.features):
        features = run.features[split]
        preds = predict(run.model, run.accelerator, features, run.tokenizer, recipe.eval.batch_size, spec.kind)
        if spec.kind == "question_answering":
            answers = postprocess_qa_predictions(run.raw[split], features, [p[0] for p in preds], [p[1] for p in preds],
                                                 n_best=recipe.data.n_best, max_answer_length=recipe.data.max_answer_length)
            metrics.update(compute_task_metrics(spec, answers, run.raw[split], split))
        else:
            metrics.update(compute_task_metrics(spec, preds, features["labels"], split))
    return metrics


@torch.no_grad()
def predict(model, accelerator, dataset, tokenizer, batch_size: int, kind: str) -> list:
    """Per-example raw predictions in dataset order, gathered from all processes."""
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    # Round-robin (disjoint, complete), padded so every rank runs the same number of forward passes.
    share = equal_share(len(dataset), world, rank)
    results = []
    for s in range(0, len(share), batch_size):
        rows = [dataset[i] for i, _ in share[s : s + batch_size]]
        idx = [i for i, counted in share[s : s + batch_size] if counted]  # padding rows come last
        batch = pad_batch(rows, tokenizer)
        inputs = {k: v.to(accelerator.device) for k, v in batch.items() if k in MODEL_INPUTS}
        out = model(**inputs)
        if kind == "question_answering":
            start, end = out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()
            for j, i in enumerate(idx):
                n = len(rows[j]["input_ids"])
                results.append((i, (start[j, :n], end[j, :n])))
        elif kind == "token_classification":
            pred = out.logits.argmax(-1).cpu()
            for j, i in enumerate(idx):
                n = len(rows[j]["input_ids"])
                results.append((i, pred[j, :n].tolist()))
        elif kind == "regression":
            pred = out.logits.squeeze(-1).float().cpu().tolist()
            results.extend(zip(idx, pred))
        else:
            pred = out.logits.argmax(-1).cpu().tolist()
            results.extend(zip(idx, pred))
    model.train()
    gathered = gather_object(results) if world > 1 else results
    by_index = dict(gathered)
    return [by_index[i] for i in range(len(dataset))]


# ----------------------------------------------------------------------------------------------
# The end: final/ from the best model (LoRA: adapter/, and final/ merged), results.json
# ----------------------------------------------------------------------------------------------


def finish(run: Run) -> dict:
    recipe, accelerator, best, out_dir = run.recipe, run.accelerator, run.best, run.out_dir
    # Metrics at the top level, how the run was executed under "run": CoNLL's entity "precision" and the
    # run's precision (bf16) used to collide here.
    results = {"task": run.spec.name, "main_metric": run.spec.main_metric, "best_step": best["step"],
               **best["metrics"], "final_train_loss": run.last_loss, "steps": run.state.step,
               "tokens": run.state.tokens, "train_seconds": round(run.state.elapsed, 2),
               **(run.glue.speed() if run.glue else {}), **run.parameters, "run": describe(accelerator),
               "history": run.history}
    if accelerator.is_main_process:
        if recipe.peft.method == "lora":  # best/ holds the best adapter; the run's model is merged in place
            export_best_adapter(accelerator.unwrap_model(run.model), run.tokenizer, out_dir / "best",
                                out_dir, recipe, run.spec, best["metrics"])
        else:
            export_best(out_dir / "best", out_dir / "final", recipe, run.spec, best["metrics"])
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        if recipe.tracking.plot:
            plot_curves(out_dir / "metrics.jsonl", out_dir / "loss_curve.png", f"fine-tuning: {run.spec.name}")
        done_line(accelerator, f"best {run.spec.main_metric} {best['value']:.4f} at step {best['step']}",
                  out_dir / "final")
        if recipe.hub.push_to_hub:
            push_final(out_dir / "final", recipe)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results
