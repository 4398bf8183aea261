"""How a run meets accelerate: the Accelerator a recipe asks for, the launch checked before any compute,
and the collective pieces every backend (DDP, FSDP, DeepSpeed) needs from the loops.

    accelerator = make_accelerator(recipe, report_to=..., project_dir=out_dir)   # both loops
    check_launch(accelerator)                        # before anything is written or computed
    state_dict = full_state_dict(accelerator, model) # collective: the whole model, on every backend
    share = equal_share(n_items, world, rank)        # the same number of eval forwards on every rank

Precision (`train.mixed_precision`):
  null   (the shipped recipes) under `accelerate launch`, the launcher's choice (`--mixed_precision`, the
         accelerate config file; accelerate exports it as ACCELERATE_MIXED_PRECISION, 'no' when none was
         given); outside a launcher (plain `hfpipe pretrain`, torchrun), what `auto` means.
  auto   bf16 where the device computes it natively (CUDA with bf16; a CPU with AVX512-BF16 or AMX),
         fp32 elsewhere: on an AVX2-only CPU, bf16 autocast is about 10x slower than fp32.
  no / bf16 / fp16   win over the launcher.
The run prints the precision in force and why (and a hint with the flag when the launcher's fp32 leaves
native bf16 unused); results.json and the model card record it.

Launches that do less than asked print one loud `hfpipe: WARNING:` line (check_launch): the launcher
was asked for several processes and started one, or asked for FSDP / DeepSpeed and accelerate runs
something else. Processes that did not join one job stop before anything is written.
"""

import functools
import os
from pathlib import Path

import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, parse_flag_from_env
from torch.distributed.tensor import DTensor

from .step import TrainingError

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty where that file does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (so bf16 autocast speeds training up, not down)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return any(flag in cpu_flags() for flag in NATIVE_BF16_CPU_FLAGS)
    return False


def launcher_precision() -> str | None:
    """The precision `accelerate launch` exported (its flag or config file; 'no' when neither gave one),
    or None outside accelerate launch."""
    return os.environ.get("ACCELERATE_MIXED_PRECISION") or None


def resolve_precision(setting: str | None, device: torch.device,
                      launcher: str | None = None) -> tuple[str | None, str]:
    """(what to pass to Accelerator -- None leaves the launcher's choice --, why), for `train.mixed_precision`
    given the launcher's precision (`launcher_precision()`; None outside accelerate launch)."""
    if setting is None and launcher is not None:
        return None, f"the launcher's choice: accelerate launch --mixed_precision {launcher}"
    if setting in (None, "auto"):
        key = f"train.mixed_precision={'auto' if setting else 'null'}" + ("" if setting else " outside a launcher")
        if native_bf16(device):
            return "bf16", f"{key}: {device.type} computes bf16 natively"
        reason = ("this CPU has no AVX512-BF16 or AMX, where bf16 is ~10x slower than fp32"
                  if device.type == "cpu" else f"{device.type} has no native bf16")
        return "no", f"{key}: {reason}"
    return setting, f"train.mixed_precision={setting}"


def bf16_hint(setting: str | None, precision: str, device: torch.device) -> str | None:
    """One line when the launcher's fp32 leaves native bf16 unused (None otherwise)."""
    if setting is None and precision == "no" and native_bf16(device):
        return (f"hint: this {device.type} computes bf16 natively and the launcher chose fp32: "
                f"`accelerate launch --mixed_precision bf16 ...` (or train.mixed_precision=auto) would use it")
    return None


def make_accelerator(recipe, *, report_to: list[str] | None, project_dir: Path) -> Accelerator:
    """The run's Accelerator: precision resolved, accelerate's accumulation protocol on (so DDP, FSDP and
    DeepSpeed sync and step once per optimizer step), DeepSpeed's config filled from the recipe, FSDP
    checkpoints as full state dicts; the launch checked before anything is computed or written."""
    train = recipe.train
    # The process state as Accelerator will make it (ACCELERATE_USE_CPU honoured), to see the device first.
    device = PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU")).device
    mixed_precision, why = resolve_precision(train.mixed_precision, device, launcher_precision())
    kwargs = {} if mixed_precision is None else {"mixed_precision": mixed_precision}
    accelerator = Accelerator(gradient_accumulation_steps=train.gradient_accumulation_steps,
                              log_with=report_to or None, project_dir=str(project_dir), **kwargs)
    check_launch(accelerator)
    check_backend(recipe, accelerator)
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        config = accelerator.state.deepspeed_plugin.deepspeed_config
        # We prepare no DataLoader, so accelerate cannot fill these "auto" values itself.
        config["train_micro_batch_size_per_gpu"] = train.batch_size
        config["gradient_accumulation_steps"] = train.gradient_accumulation_steps
        config["gradient_clipping"] = train.max_grad_norm or 0.0  # DeepSpeed clips inside its step
    if accelerator.distributed_type == DistributedType.FSDP:
        accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
    accelerator.print(f"precision: {accelerator.mixed_precision} ({why}); "
                      f"{describe(accelerator)['distributed_type']} on {accelerator.num_processes} process(es)")
    hint = bf16_hint(train.mixed_precision, accelerator.mixed_precision, accelerator.device)
    if hint:
        accelerator.print(hint)
    return accelerator


def describe(accelerator: Accelerator) -> dict:
    """What results.json and the model card record about how the run was executed."""
    return {"precision": accelerator.mixed_precision, "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type).removeprefix("DistributedType.")}


def launch_shortfall(accelerator: Accelerator, env=os.environ) -> str | None:
    """One loud line when the launcher was asked for more than it started: several processes but this
    is the only one (accelerate's single-process launcher sets MASTER_ADDR/MASTER_PORT and no WORLD_SIZE,
    e.g. for a `distributed_type: MULTI_CPU` config), or FSDP / DeepSpeed that accelerate did not run."""
    kind = describe(accelerator)["distributed_type"]
    ran = f"accelerate runs {kind} on {accelerator.num_processes} process(es)"
    if "MASTER_ADDR" in env and "MASTER_PORT" in env and "WORLD_SIZE" not in env and accelerator.num_processes == 1:
        return ("hfpipe: WARNING: the launcher was asked for several processes but started only this one "
                f"({ran}; accelerate's single-process launcher took the config): pass --multi_gpu "
                "(or distributed_type: MULTI_GPU in the config file; on CPU with ACCELERATE_USE_CPU=1)")
    for asked, wanted in (("ACCELERATE_USE_FSDP", DistributedType.FSDP),
                          ("ACCELERATE_USE_DEEPSPEED", DistributedType.DEEPSPEED)):
        if env.get(asked, "").lower() in ("1", "true", "yes") and accelerator.distributed_type != wanted:
            name = str(wanted).removeprefix("DistributedType.")
            return (f"hfpipe: WARNING: the launcher asked for {name} but {ran} "
                    f"({name} needs GPUs; on CPU accelerate falls back): nothing is sharded")
    return None


def check_launch(accelerator: Accelerator) -> None:
    """A launcher that started N processes which did not join one job (each would train alone and write
    into the same output_dir) stops here, before any compute, with the flag that fixes it; a launch
    smaller than asked prints one loud line (launch_shortfall)."""
    shortfall = launch_shortfall(accelerator)
    if shortfall:
        accelerator.print(shortfall)
    launched = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if launched > 1 and accelerator.num_processes != launched:
        on_cpu = accelerator.device.type == "cpu"
        fix = ("on CPU set ACCELERATE_USE_CPU=1 and pass --multi_gpu (it selects the multi-process backend: "
               "ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N ...)" if on_cpu else
               "pass --multi_gpu (or a config file with distributed_type: MULTI_GPU, FSDP or DEEPSPEED)")
        raise TrainingError(
            f"the launcher started {launched} processes (WORLD_SIZE={launched}) but they did not join one "
            f"distributed job (accelerate sees {accelerator.num_processes} process, distributed_type "
            f"{describe(accelerator)['distributed_type']}): each would train alone and overwrite the same "
            f"output_dir. Nothing was written. To fix it, {fix}."
        )


def check_backend(recipe, accelerator: Accelerator) -> None:
    """Combinations that cannot work fail here in one line, naming the recipe key and the launcher flag."""
    train, model = recipe.train, recipe.model
    if accelerator.distributed_type == DistributedType.DEEPSPEED and train.on_nan == "skip":
        raise TrainingError("train.on_nan=skip cannot work under DeepSpeed (its engine steps inside backward, "
                            "before the loss is known on every rank): set train.on_nan=stop, or launch without "
                            "--use_deepspeed")
    dynamo = os.environ.get("ACCELERATE_DYNAMO_BACKEND", "no").lower()
    if train.compile and dynamo not in ("no", ""):
        raise TrainingError(f"train.compile=true and the launcher's --dynamo_backend {dynamo} would compile the "
                            "model twice: set train.compile=false or launch with --dynamo_backend no")
    if train.compile and accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise TrainingError("train.compile=true is refused under DeepSpeed (it wraps the model in its engine "
                            "after compiling): set train.compile=false or launch without --use_deepspeed")
    position = _position_type(model)
    if position == "alibi" and model.attn_implementation in ("flex_attention", "flash_attention_2"):
        raise TrainingError(f"position_embedding_type=alibi adds a bias to the attention scores, which "
                            f"model.attn_implementation={model.attn_implementation} does not take: set "
                            f"model.attn_implementation=sdpa (or eager)")


def _position_type(model_args) -> str | None:
    """The run's position scheme, from the recipe (preset + overrides) or the starting checkpoint's config."""
    if "position_embedding_type" in model_args.config_overrides:
        return model_args.config_overrides["position_embedding_type"]
    if model_args.name_or_path:
        config_file = Path(model_args.name_or_path) / "config.json"
        if config_file.is_file():
            import json

            return json.loads(config_file.read_text()).get("position_embedding_type")
        return None
    from ..model.configuration_hfpipe import PRESETS

    return PRESETS.get(model_args.preset, {}).get("position_embedding_type", "absolute")


def full_state_dict(accelerator: Accelerator, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """Collective (call on every rank) for `save_pretrained(..., state_dict=)`: the whole model's weights,
    gathered from FSDP shards (FSDP1, and FSDP2's DTensors) or DeepSpeed ZeRO partitions, on the main
    process. None where there is nothing to gather (one process, DDP): save_pretrained reads the model."""
    inner = accelerator.unwrap_model(model)
    if any(isinstance(p, DTensor) for p in inner.parameters()):  # FSDP2 (fully_shard)
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(inner, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    elif accelerator.distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        state = accelerator.get_state_dict(model)
    else:
        return None
    return state if accelerator.is_main_process else None


def equal_share(n_items: int, world: int, rank: int) -> list[tuple[int, bool]]:
    """This rank's items of a round-robin split, padded so every rank gets the same number:
    [(item index, counted)]. Padding repeats item `rank % n_items` with counted=False, so sharded
    backends (FSDP, ZeRO-3), whose forward passes are collective, run the same number on every rank."""
    mine = [(i, True) for i in range(rank, n_items, world)]
    per_rank = -(-n_items // world)  # ceil
    return mine + [(rank % max(n_items, 1), False)] * (per_rank - len(mine))
