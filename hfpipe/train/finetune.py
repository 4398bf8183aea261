"""Fine-tuning on a downstream task (GLUE, CoNLL-2003 NER, SQuAD): the loop, in one readable function.

    hfpipe finetune recipes/finetune/glue/sst2.yaml model.name_or_path=runs/pretrain-tiny/final
    accelerate launch -m hfpipe finetune recipes/finetune/conll2003.yaml model.name_or_path=...

Starts from an hfpipe folder, a Hub id, or a BERT checkpoint (converted on the fly); attaches the
task head; trains with dynamic padding and length-grouped batches; evaluates every epoch; keeps
the best model by the task's main metric; optionally stops early. As in pretraining, batches are
a pure function of (seed, step) and the loss is normalized over the whole global batch, so the
run is the same on 1 or N processes; evaluation gathers every example exactly once.
"""

import json
import math
import shutil
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import gather_object, set_seed
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from ..config.recipe import save_recipe, to_dict
from ..model.modeling_hfpipe import (
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
)
from ..tasks.spec import compute_task_metrics, get_task, load_task_data, main_metric_value, preprocess
from .checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from .training import Budget, MetricsLog, Throughput, build_optimizer, load_encoder, plot_curves, set_lr

HEADS = {
    "sequence_classification": HfpipeForSequenceClassification,
    "regression": HfpipeForSequenceClassification,
    "token_classification": HfpipeForTokenClassification,
    "question_answering": HfpipeForQuestionAnswering,
}
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TARGETS = ("labels", "start_positions", "end_positions")


# ----------------------------------------------------------------------------------------------
# Batches
# ----------------------------------------------------------------------------------------------


def epoch_batches(
    lengths: list[int], global_batch: int, seed: int, epoch: int, group_by_length: bool, min_size: int = 1
) -> list[list[int]]:
    """The epoch's global batches as lists of example indices: shuffled with (seed, epoch); with
    length grouping, sorted by length inside windows of 50 batches, then the batch order shuffled
    (so padding is small but every batch is still random)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(lengths), generator=g).tolist()
    if group_by_length:
        window = 50 * global_batch
        order = [i for s in range(0, len(order), window)
                 for i in sorted(order[s : s + window], key=lambda i: -lengths[i])]
    batches = [order[s : s + global_batch] for s in range(0, len(order), global_batch)]
    if batches and len(batches[-1]) < min_size:  # too small to give every micro-batch a row
        batches.pop()
    if group_by_length:
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def micro_slices(batch: list[int], world: int, rank: int, accum: int) -> list[list[int]]:
    """This process's micro-batches of a global batch, ordered (accumulation step, process)."""
    parts = np.array_split(np.array(batch, dtype=np.int64), world * accum)
    return [parts[a * world + rank].tolist() for a in range(accum)]


def pad_batch(rows: list[dict], tokenizer) -> dict[str, torch.Tensor]:
    """Dynamic padding to the longest row of this micro-batch."""
    out: dict[str, torch.Tensor] = {}
    T = max(len(r["input_ids"]) for r in rows)
    for key in MODEL_INPUTS:
        if key not in rows[0]:
            continue
        pad = tokenizer.pad_token_id if key == "input_ids" else 0
        out[key] = torch.tensor([r[key] + [pad] * (T - len(r[key])) for r in rows])  # (B, T)
    if "labels" in rows[0]:
        first = rows[0]["labels"]
        if isinstance(first, list):  # token classification: one label per token, -100 on padding
            out["labels"] = torch.tensor([r["labels"] + [-100] * (T - len(r["labels"])) for r in rows])  # (B, T)
        else:
            out["labels"] = torch.tensor([r["labels"] for r in rows])  # (B,)
    for key in ("start_positions", "end_positions"):
        if key in rows[0]:
            out[key] = torch.tensor([r[key] for r in rows])  # (B,)
    return out


def count_targets(batch: dict[str, torch.Tensor]) -> int:
    """What the loss is averaged over: labelled tokens (NER) or rows (everything else)."""
    labels = batch.get("labels")
    if labels is not None and labels.dim() == 2 and labels.dtype == torch.long:
        return int((labels != -100).sum())
    return int(batch["input_ids"].shape[0])


# ----------------------------------------------------------------------------------------------
# Evaluation: every example exactly once, whatever the number of processes
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def predict(model, accelerator, dataset, tokenizer, batch_size: int, kind: str) -> list:
    """Per-example raw predictions in dataset order, gathered from all processes."""
    model.eval()
    world, rank = accelerator.num_processes, accelerator.process_index
    mine = list(range(rank, len(dataset), world))  # round-robin: disjoint, complete
    results = []
    for s in range(0, len(mine), batch_size):
        idx = mine[s : s + batch_size]
        rows = [dataset[i] for i in idx]
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


def evaluate_split(model, accelerator, spec, split: str, raw_split, features, tokenizer, recipe) -> dict:
    """The task's metrics on one validation split (computed identically on every process)."""
    from ..tasks.qa import postprocess_qa_predictions

    preds = predict(model, accelerator, features, tokenizer, recipe.eval.batch_size, spec.kind)
    if spec.kind == "question_answering":
        answers = postprocess_qa_predictions(raw_split, features, [p[0] for p in preds], [p[1] for p in preds],
                                             n_best=recipe.data.n_best, max_answer_length=recipe.data.max_answer_length)
        return compute_task_metrics(spec, answers, raw_split, split)
    return compute_task_metrics(spec, preds, features["labels"], split)


# ----------------------------------------------------------------------------------------------
# The run
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


def finetune(recipe, model_factory=None) -> dict:
    """Fine-tune as the recipe says; returns the best evaluation metrics.

    `model_factory(recipe, spec) -> model` replaces `build_model`: benchmarks use it to run this very
    loop on transformers' own BERT classes, so the comparison isolates the model implementation."""
    train, out_dir = recipe.train, Path(recipe.output_dir)
    accelerator = Accelerator(mixed_precision=train.mixed_precision, project_dir=str(out_dir))
    main = accelerator.is_main_process
    set_seed(recipe.seed)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_recipe(recipe, out_dir / "resolved_recipe.yaml")

    spec = get_task(recipe.task)
    tokenizer = AutoTokenizer.from_pretrained(recipe.model.name_or_path)
    with accelerator.main_process_first():
        raw = load_task_data(spec, recipe.data)
        features = preprocess(spec, raw, tokenizer, recipe.data)
    train_set = features["train"]
    eval_names = [name for name in spec.eval_splits if name in features]

    set_seed(recipe.seed)  # the new head's init does not depend on what data loading consumed
    model = (model_factory or build_model)(recipe, spec)
    if train.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = build_optimizer(model, train)
    model, optimizer = accelerator.prepare(model, optimizer)

    world, rank, accum = accelerator.num_processes, accelerator.process_index, train.gradient_accumulation_steps
    global_batch = train.batch_size * world * accum
    lengths = train_set["lengths"] if "lengths" in train_set.column_names else [len(x) for x in train_set["input_ids"]]
    steps_per_epoch = len(epoch_batches(lengths, global_batch, recipe.seed, 0, False, world * accum))
    max_steps = train.max_steps
    if train.num_epochs:
        epoch_steps = math.ceil(train.num_epochs * steps_per_epoch)
        max_steps = min(max_steps, epoch_steps) if max_steps else epoch_steps
    budget = Budget(train, total_steps=max_steps)
    eval_every = train.eval_every_steps or steps_per_epoch  # default: every epoch

    step, best, history, bad_evals = 0, None, [], 0
    resume_from = resolve_resume(train.resume, out_dir)
    if resume_from is not None:
        state = load_checkpoint(accelerator, resume_from)
        step, best, history, bad_evals = state["step"], state["best"], state["history"], state["bad_evals"]
    log = MetricsLog(out_dir / "metrics.jsonl", main, step if resume_from else None)

    def run_eval() -> dict:
        metrics = {}
        for name in eval_names:
            metrics.update(evaluate_split(model, accelerator, spec, name, raw[name], features[name], tokenizer, recipe))
        return metrics

    progress = tqdm(total=max_steps, initial=step, disable=not main, desc=f"finetune {spec.name}", dynamic_ncols=True)
    throughput, tokens, start_time = Throughput(), 0, time.perf_counter()
    cached_epoch, batches = -1, []
    window_loss, window_steps, loss_value = 0.0, 0, float("nan")
    model.train()
    while budget.progress(step, tokens, time.perf_counter() - start_time) < 1.0:
        epoch = step // steps_per_epoch
        if epoch != cached_epoch:
            batches = epoch_batches(lengths, global_batch, recipe.seed, epoch, train.group_by_length, world * accum)
            cached_epoch = epoch
        set_lr(optimizer, budget.lr(step, tokens, time.perf_counter() - start_time))
        micro = [pad_batch([train_set[i] for i in idx], tokenizer)
                 for idx in micro_slices(batches[step % len(batches)], world, rank, accum)]
        counts = [count_targets(mb) for mb in micro]
        total = accelerator.reduce(torch.tensor(float(sum(counts)), device=accelerator.device), reduction="sum")
        step_loss = torch.zeros((), device=accelerator.device)
        for a, mb in enumerate(micro):
            last = a == len(micro) - 1
            mb = {k: v.to(accelerator.device) for k, v in mb.items()}
            with accelerator.no_sync(model) if not last else nullcontext():
                out = model(**mb)
                weight = counts[a] / max(total.item(), 1.0)
                accelerator.backward(out.loss * weight * world)
            step_loss += out.loss.detach() * weight
            tokens += int(mb["attention_mask"].sum())
        loss_value = accelerator.reduce(step_loss, reduction="sum").item()
        if not math.isfinite(loss_value):
            optimizer.zero_grad(set_to_none=True)
            if train.on_nan == "stop":
                raise RuntimeError(f"loss is {loss_value} at step {step + 1}; lower train.lr or set train.on_nan=skip")
        else:
            if train.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), train.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            window_loss, window_steps = window_loss + loss_value, window_steps + 1
        step += 1
        progress.update(1)

        if step % train.log_every_steps == 0 and window_steps:
            record = {"step": step, "loss": window_loss / window_steps, "lr": optimizer.param_groups[0]["lr"],
                      "tokens_per_sec": throughput.update(tokens), "epoch": round(step / steps_per_epoch, 3)}
            log.write(record)
            progress.set_postfix(loss=f"{record['loss']:.4f}")
            window_loss, window_steps = 0.0, 0

        finished = budget.progress(step, tokens, time.perf_counter() - start_time) >= 1.0
        if step % eval_every == 0 or finished:
            metrics = run_eval()
            value = main_metric_value(spec, metrics)
            history.append({"step": step, "epoch": round(step / steps_per_epoch, 3), **metrics})
            log.write({"step": step, **{f"eval_{k}": v for k, v in metrics.items()}})
            accelerator.print(f"step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
            if best is None or value > best["value"]:
                best, bad_evals = {"value": value, "step": step, "metrics": metrics}, 0
                if main:
                    save_model_folder(accelerator.unwrap_model(model), tokenizer, out_dir / "best")
            else:
                bad_evals += 1
            accelerator.wait_for_everyone()
            if train.early_stopping_patience and bad_evals >= train.early_stopping_patience:
                accelerator.print(f"early stopping: no improvement of {spec.main_metric} in {bad_evals} evaluations")
                break
        if train.save_every_steps and step % train.save_every_steps == 0:
            save_checkpoint(accelerator, out_dir, step,
                            {"step": step, "best": best, "history": history, "bad_evals": bad_evals}, train.keep_last)
    progress.close()

    results = {"task": spec.name, "main_metric": spec.main_metric, "best_step": best["step"], **best["metrics"],
               "final_train_loss": loss_value, "steps": step, "history": history}
    if main:
        final = out_dir / "final"
        if final.exists():
            shutil.rmtree(final)
        shutil.copytree(out_dir / "best", final)
        from ..hub.model_card import write_model_card

        config = json.loads((final / "config.json").read_text())
        write_model_card(final, config=config, recipe=to_dict(recipe), results=best["metrics"], task=spec.name,
                         base_model=recipe.model.name_or_path, pipeline_tag=spec.pipeline_tag,
                         repo_id=recipe.hub.repo_id)
        (out_dir / "results.json").write_text(json.dumps(results, indent=2))
        if recipe.tracking.plot:
            plot_curves(out_dir / "metrics.jsonl", out_dir / "loss_curve.png", f"fine-tuning: {spec.name}")
        if recipe.hub.push_to_hub:
            from ..hub.push import push_folder

            push_folder(final, recipe.hub.repo_id, private=recipe.hub.private, revision=recipe.hub.revision,
                        commit_message=recipe.hub.commit_message)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return results


def save_model_folder(model, tokenizer, folder: Path) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
