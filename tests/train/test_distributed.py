"""What `accelerate launch` users rely on, tested on CPU as far as CPU allows (train/distributed.py):
the precision in force, launches that cannot work stopped before any compute, a failing rank ending
the job, every rank running the same number of eval forward passes, and full-state-dict saves of
FSDP2-sharded models (torch's `fully_shard` over gloo). Full FSDP and DeepSpeed runs need GPUs:
bench/gpu_check.py (`make bench-gpu`)."""

import json
import socket
import subprocess
import sys
import tempfile
import textwrap
import time

import launch
import pytest
import torch
from launch import REPO, cli_env

from hfpipe.train import distributed
from hfpipe.train.distributed import equal_share, resolve_precision

CPU = torch.device("cpu")


# ----------------------------------------------------------------------------------------------
# Precision
# ----------------------------------------------------------------------------------------------


def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(distributed, "cpu_flags", lambda: frozenset({"avx2", "fma"}))
    assert resolve_precision("auto", CPU)[0] == "no"
    assert "AVX512-BF16 or AMX" in resolve_precision("auto", CPU)[1]
    for flags in ({"avx2", "avx512_bf16"}, {"amx_bf16", "amx_tile"}):
        monkeypatch.setattr(distributed, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert resolve_precision("auto", CPU)[0] == "bf16"


def test_null_takes_the_launchers_choice_and_means_auto_outside_a_launcher(monkeypatch):
    for launcher in ("no", "bf16", "fp16"):  # accelerate launch always exports one ('no' by default)
        assert resolve_precision(None, CPU, launcher)[0] is None  # Accelerator then reads the launcher's
    for flags, expected in (({"avx2"}, "no"), ({"avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16")):
        monkeypatch.setattr(distributed, "cpu_flags", lambda flags=flags: frozenset(flags))
        assert resolve_precision(None, CPU, None)[0] == resolve_precision("auto", CPU, None)[0] == expected
        assert "train.mixed_precision=null outside a launcher" in resolve_precision(None, CPU, None)[1]
    for value in ("no", "bf16", "fp16"):  # an explicit value wins, under a launcher or not
        assert resolve_precision(value, CPU, "bf16")[0] == value
        assert resolve_precision(value, CPU, None)[0] == value


def test_the_bf16_hint_names_the_flag_only_when_the_launchers_fp32_leaves_native_bf16_unused(monkeypatch):
    monkeypatch.setattr(distributed, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    hint = distributed.bf16_hint(None, "no", CPU)
    assert hint is not None and "--mixed_precision bf16" in hint
    assert distributed.bf16_hint(None, "bf16", CPU) is None  # native bf16 in use
    assert distributed.bf16_hint("no", "no", CPU) is None  # the recipe chose fp32 on purpose
    monkeypatch.setattr(distributed, "cpu_flags", lambda: frozenset({"avx2"}))
    assert distributed.bf16_hint(None, "no", CPU) is None  # nothing native to use


def test_shipped_recipes_leave_precision_to_the_launcher():
    import yaml

    recipes = sorted((REPO / "recipes").glob("pretrain/*.yaml")) + sorted((REPO / "recipes").glob("finetune/**/*.yaml"))
    assert len(recipes) > 10
    for path in recipes:
        train = (yaml.safe_load(path.read_text()) or {}).get("train") or {}
        assert train.get("mixed_precision") is None, f"{path.name}: mixed_precision {train.get('mixed_precision')}"


def test_null_precision_outside_a_launcher_is_auto(tmp_path):
    result = launch.run(launch.hfpipe_command(*_tiny(tmp_path, "plain")))
    assert result.returncode == 0, result.stderr[-3000:]
    expected = "bf16" if distributed.native_bf16(CPU) else "no"
    assert f"precision: {expected} (train.mixed_precision=null outside a launcher" in result.stdout + result.stderr
    assert json.loads((tmp_path / "plain" / "results.json").read_text())["run"]["precision"] == expected


def _tiny(tmp_path, name: str, *extra: str) -> list[str]:
    return ["pretrain", str(REPO / "recipes/pretrain/tiny.yaml"), f"output_dir={tmp_path / name}",
            "train.max_steps=2", "train.eval_every_steps=null", "train.save_every_steps=null",
            "eval.max_batches=1", "data.max_documents=40", "tracking.plot=false", *extra]


def _launch_one(args: list[str], *launcher_flags: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
               "--dynamo_backend", "no", *launcher_flags, "-m", "hfpipe", *args]
    return subprocess.run(command, capture_output=True, text=True, env=cli_env(ACCELERATE_USE_CPU="1"),
                          timeout=300, cwd=REPO)


def test_the_launchers_precision_is_honoured_unless_the_recipe_sets_one(tmp_path):
    launcher = _launch_one(_tiny(tmp_path, "launcher"), "--mixed_precision", "bf16")  # tiny.yaml says null
    assert launcher.returncode == 0, launcher.stderr[-3000:]
    assert "precision: bf16 (the launcher's choice" in launcher.stdout + launcher.stderr
    results = json.loads((tmp_path / "launcher" / "results.json").read_text())
    assert (results["run"]["precision"], results["run"]["num_processes"], results["run"]["distributed_type"]) == (
        "bf16", 1, "NO")
    assert "| precision | bf16 |" in (tmp_path / "launcher" / "final" / "README.md").read_text()

    recipe = _launch_one(_tiny(tmp_path, "recipe", "train.mixed_precision=no"), "--mixed_precision", "bf16")
    assert recipe.returncode == 0, recipe.stderr[-3000:]
    assert json.loads((tmp_path / "recipe" / "results.json").read_text())["run"]["precision"] == "no"


# ----------------------------------------------------------------------------------------------
# Launches that cannot work, launches smaller than asked, and failing ranks
# ----------------------------------------------------------------------------------------------

ACCELERATE_CONFIGS = sorted(p.name for p in (REPO / "recipes/accelerate").glob("*.yaml"))


@pytest.mark.parametrize("config", ACCELERATE_CONFIGS)
def test_every_shipped_accelerate_config_starts_the_processes_it_asks_for(tmp_path, config):
    """Each config run for real on CPU (ACCELERATE_USE_CPU=1; GPU configs with --num_processes 2): the
    processes that ran are the processes asked for, and a backend CPU cannot run is said out loud."""
    import yaml

    asked = yaml.safe_load((REPO / "recipes/accelerate" / config).read_text())
    if asked["distributed_type"] == "DEEPSPEED":
        pytest.importorskip("deepspeed", reason="the DeepSpeed config needs `pip install deepspeed`")
    n = min(asked["num_processes"], 2)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"recipes/accelerate/{config}",
               "--num_processes", str(n), "--main_process_port", "0", "-m", "hfpipe", *_tiny(tmp_path, "run")]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env(ACCELERATE_USE_CPU="1"),
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())["run"]
    assert results["num_processes"] == n
    assert results["distributed_type"] == ("NO" if n == 1 else "MULTI_CPU")
    if asked["distributed_type"] in ("FSDP", "DEEPSPEED"):
        assert f"hfpipe: WARNING: the launcher asked for {asked['distributed_type']} but accelerate runs " \
               "MULTI_CPU on 2 process(es)" in result.stdout


def test_a_config_that_starts_one_process_instead_of_two_says_so(tmp_path):
    # accelerate 1.x sends distributed_type MULTI_CPU to its single-process launcher: one process runs.
    config = tmp_path / "multi_cpu.yaml"
    config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: MULTI_CPU\nuse_cpu: true\n"
                      "num_processes: 2\nnum_machines: 1\nmachine_rank: 0\nmain_process_ip: 127.0.0.1\n"
                      "main_process_port: 0\nmixed_precision: 'no'\n")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(config), "-m", "hfpipe",
               *_tiny(tmp_path, "run")]
    result = subprocess.run(command, capture_output=True, text=True, env=cli_env(ACCELERATE_USE_CPU="1"),
                            timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    warning = [line for line in result.stdout.splitlines() if line.startswith("hfpipe: WARNING:")]
    assert len(warning) == 1 and "asked for several processes but started only this one" in warning[0]
    assert "--multi_gpu" in warning[0]
    assert json.loads((tmp_path / "run" / "results.json").read_text())["run"]["num_processes"] == 1


class _FakeAccelerator:
    def __init__(self, distributed_type, num_processes):
        self.distributed_type, self.num_processes, self.mixed_precision = distributed_type, num_processes, "no"


def test_launch_shortfall_is_silent_when_the_launch_is_what_was_asked():
    from accelerate.utils import DistributedType

    one, ddp = _FakeAccelerator(DistributedType.NO, 1), _FakeAccelerator(DistributedType.MULTI_CPU, 2)
    assert distributed.launch_shortfall(one, env={}) is None  # plain `hfpipe pretrain`
    assert distributed.launch_shortfall(ddp, env={"MASTER_ADDR": "h", "MASTER_PORT": "1", "WORLD_SIZE": "2"}) is None
    assert "several processes" in distributed.launch_shortfall(one, env={"MASTER_ADDR": "h", "MASTER_PORT": "1"})
    fsdp = distributed.launch_shortfall(ddp, env={"ACCELERATE_USE_FSDP": "true"})
    assert fsdp.startswith("hfpipe: WARNING: the launcher asked for FSDP but accelerate runs MULTI_CPU")
    assert "DEEPSPEED" in distributed.launch_shortfall(one, env={"ACCELERATE_USE_DEEPSPEED": "true"})
    fsdp_ran = _FakeAccelerator(DistributedType.FSDP, 2)
    assert distributed.launch_shortfall(fsdp_ran, env={"ACCELERATE_USE_FSDP": "true"}) is None


def test_two_machines_on_loopback_train_exactly_as_one_machine_with_two_processes(tmp_path):
    """README's multi-node form: the same command on each machine with its --machine_rank. (The second
    run reuses the first's tokenizer: tokenizer training is not bit-reproducible, see data/tokenizer.py.)"""
    args = ("train.max_steps=3", "train.log_every_steps=1")
    one = launch.run(launch.two_process_command(*_tiny(tmp_path, "one", *args)))
    assert one.returncode == 0, one.stderr[-3000:]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    machines = [subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
         "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
         "--main_process_port", str(port), "--mixed_precision", launch.cpu_precision(), "--dynamo_backend", "no",
         "-m", "hfpipe", *_tiny(tmp_path, "two", *args, f"tokenizer.name_or_path={tmp_path / 'one' / 'tokenizer'}")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(ACCELERATE_USE_CPU="1"), cwd=REPO)
        for rank in (0, 1)]
    for machine in machines:
        _, err = machine.communicate(timeout=300)
        assert machine.returncode == 0, err[-3000:]

    def curve(name):
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"], r["tokens"]) for r in rows if "loss" in r]

    assert len(curve("one")) == 3 and curve("two") == curve("one")
    results = json.loads((tmp_path / "two" / "results.json").read_text())["run"]
    assert (results["num_processes"], results["distributed_type"]) == (2, "MULTI_CPU")


def test_processes_that_did_not_join_one_job_stop_before_writing(tmp_path):
    # --multi_gpu on a CPU machine without ACCELERATE_USE_CPU=1: torchrun starts two processes, and
    # accelerate makes each a single-process job. Both would write runs/... at once.
    env = {k: v for k, v in cli_env().items() if k != "ACCELERATE_USE_CPU"}
    result = subprocess.run(launch.two_process_command(*_tiny(tmp_path, "run")), capture_output=True, text=True,
                            env=env, timeout=300, cwd=REPO)
    assert result.returncode != 0
    assert "the launcher started 2 processes (WORLD_SIZE=2) but they did not join one distributed job" in result.stderr
    assert "set ACCELERATE_USE_CPU=1 and pass --multi_gpu" in result.stderr
    assert not (tmp_path / "run").exists()  # nothing written, nothing computed


def test_a_recipe_the_backend_cannot_run_fails_in_one_line_before_compute(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hfpipe", *_tiny(
        tmp_path, "alibi", "model.config_overrides={position_embedding_type: alibi}",
        "model.attn_implementation=flex_attention")], capture_output=True, text=True, env=cli_env(), timeout=300,
        cwd=REPO)
    assert result.returncode != 0
    error = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(error) == 1 and "model.attn_implementation=sdpa" in error[0] and "alibi" in error[0]
    assert not (tmp_path / "alibi").exists()


FAIL_ON_RANK_1 = textwrap.dedent("""
    import os, sys
    import hfpipe.train.pretrain as pretrain
    if os.environ["RANK"] == "1":  # this rank fails in its first evaluation; rank 0 waits in a collective
        def evaluate(run):
            raise RuntimeError("rank 1 lost its data")
        pretrain.evaluate = evaluate
    from hfpipe.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_a_failing_rank_ends_every_rank_with_its_error(tmp_path):
    script = tmp_path / "fail_on_rank_1.py"
    script.write_text(FAIL_ON_RANK_1)
    command = launch.two_process_command(*_tiny(tmp_path, "run"))
    command[command.index("-m", 3):command.index("-m", 3) + 2] = [str(script)]  # the script instead of -m hfpipe
    start = time.monotonic()
    result = launch.run(command, timeout=240)  # a hang would raise TimeoutExpired
    assert result.returncode != 0
    assert "rank 1 lost its data" in result.stderr
    assert time.monotonic() - start < 200


# ----------------------------------------------------------------------------------------------
# Collective pieces, in two real gloo processes
# ----------------------------------------------------------------------------------------------


def gloo_launch(function, args=(), num_processes=2):
    """accelerate's debug_launcher, but with spawned processes: forking pytest (its OpenMP pool and
    accelerate state from earlier tests) can hang the children. `function` runs in each process with a
    gloo group joined through a file rendezvous; it must live at module level."""
    from accelerate.utils import PrepareForLaunch, patch_environment
    from torch.multiprocessing import start_processes

    with tempfile.TemporaryDirectory() as rdv, patch_environment(
        world_size=num_processes, master_addr="127.0.0.1", master_port="29500", accelerate_mixed_precision="no",
        accelerate_debug_rdv_file=f"{rdv}/store", accelerate_use_cpu="yes", gloo_socket_ifname="lo",
    ):
        start_processes(PrepareForLaunch(function, debug=True), args=args, nprocs=num_processes, start_method="spawn")


def cpu_accelerator(**kwargs):
    from accelerate import Accelerator

    return Accelerator(cpu=True, **kwargs)


def test_equal_share_pads_every_rank_to_the_same_count():
    shares = [equal_share(5, 3, rank) for rank in range(3)]
    assert [len(s) for s in shares] == [2, 2, 2]
    counted = sorted(i for share in shares for i, counted in share if counted)
    assert counted == [0, 1, 2, 3, 4]  # every item exactly once
    assert shares[2] == [(2, True), (2, False)]
    assert equal_share(1, 2, 1) == [(0, False)]  # a rank with nothing still runs one forward pass
    assert equal_share(0, 2, 0) == []


def _eval_counts_body(out: str):
    from datasets import Dataset

    from hfpipe.config import load_recipe
    from hfpipe.config.pretrain_recipe import PretrainRecipe
    from hfpipe.data.tokenizer import train_tokenizer
    from hfpipe.train.pretrain import equal_eval_batches

    accelerator = cpu_accelerator()
    recipe = load_recipe(REPO / "recipes/pretrain/tiny.yaml", PretrainRecipe, ["eval.batch_size=4"])
    tokenizer = train_tokenizer(["the cat sat on the mat", "a dog ran in the park"] * 20, recipe.tokenizer)
    rows = [tokenizer("the cat sat on the mat " * (1 + i % 3), return_special_tokens_mask=True) for i in range(13)]
    val_set = Dataset.from_list([{"input_ids": r["input_ids"], "special_tokens_mask": r["special_tokens_mask"],
                                  "position_ids": list(range(len(r["input_ids"])))} for r in rows])
    batches = equal_eval_batches(recipe, val_set, tokenizer, 0.3, accelerator)  # 13 rows: batches of 4,4,4,1
    counted = sum(int((b["labels"] != -100).sum()) for b, c in batches if c)
    with open(f"{out}/rank{accelerator.process_index}.json", "w") as f:
        json.dump({"forwards": len(batches), "counted_batches": sum(c for _, c in batches),
                   "counted_rows": sum(len(b["input_ids"]) for b, c in batches if c), "labels": counted}, f)


@pytest.mark.timeout(300)  # a hung gloo collective fails here, not after the suite's 900 s
def test_every_rank_runs_the_same_number_of_eval_forwards(tmp_path):
    gloo_launch(_eval_counts_body, args=(str(tmp_path),), num_processes=3)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert [r["forwards"] for r in ranks] == [2, 2, 2]  # 4 batches over 3 ranks: one padding forward each
    assert [r["counted_batches"] for r in ranks] == [2, 1, 1]
    assert sum(r["counted_rows"] for r in ranks) == 13  # padding excluded from the totals


def _fsdp2_save_body(out: str):
    from torch.distributed.fsdp import fully_shard

    from hfpipe.model.configuration_hfpipe import HfpipeConfig
    from hfpipe.model.modeling_hfpipe import HfpipeForMaskedLM

    accelerator = cpu_accelerator()
    torch.manual_seed(0)
    model = HfpipeForMaskedLM(HfpipeConfig.from_preset("bert-tiny", vocab_size=96, max_position_embeddings=32))
    whole = {k: v.clone() for k, v in model.state_dict().items()}
    for layer in model.model.layers:
        fully_shard(layer)
    fully_shard(model)
    local = model.model.layers[0].mixer.qkv.weight.to_local()
    state_dict = distributed.full_state_dict(accelerator, model)
    if accelerator.is_main_process:
        assert local.shape[0] < whole["model.layers.0.mixer.qkv.weight"].shape[0]  # really sharded
        assert state_dict.keys() == whole.keys()
        assert all(torch.equal(state_dict[k], whole[k]) for k in whole)
        HfpipeForMaskedLM(model.config).save_pretrained(out, state_dict=state_dict)
    else:
        assert state_dict is None


@pytest.mark.timeout(300)  # a hung gloo collective fails here, not after the suite's 900 s
def test_fsdp2_sharded_model_saves_its_full_state_dict(tmp_path):
    from hfpipe.model.configuration_hfpipe import HfpipeConfig
    from hfpipe.model.modeling_hfpipe import HfpipeForMaskedLM

    gloo_launch(_fsdp2_save_body, args=(str(tmp_path / "final"),), num_processes=2)
    torch.manual_seed(0)
    reference = HfpipeForMaskedLM(HfpipeConfig.from_preset("bert-tiny", vocab_size=96, max_position_embeddings=32))
    reloaded = HfpipeForMaskedLM.from_pretrained(tmp_path / "final")
    for name, value in reference.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], value), name


# ----------------------------------------------------------------------------------------------
# The GPU check (bench/gpu_check.py): its runs are valid recipes, and it says when there is no GPU
# ----------------------------------------------------------------------------------------------


def test_gpu_check_runs_are_valid_recipes_and_it_refuses_without_cuda(tmp_path):
    from hfpipe.config import load_recipe
    from hfpipe.config.pretrain_recipe import PretrainRecipe

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(REPO / "bench"))
    for attn in ("sdpa", "flex_attention", "flash_attention_2"):
        recipe = load_recipe(REPO / "recipes/pretrain/modern-small-wikitext.yaml", PretrainRecipe,
                             gpu_check.recipe_overrides(tmp_path, 50, 32, attn))
        assert (recipe.model.preset, recipe.data.block_size, recipe.train.mixed_precision) == ("modern-base", 512, "bf16")
        assert recipe.data.num_workers == 2 and recipe.train.max_steps == 50
    if not torch.cuda.is_available():
        result = subprocess.run([sys.executable, str(REPO / "bench/gpu_check.py"), "--dirty", "--out", str(tmp_path / "g.json")],
                                capture_output=True, text=True,
                                env=cli_env(), timeout=120, cwd=REPO)
        # Nothing was run: the check fails (exit 1, not a pass) and still writes its JSON.
        assert result.returncode == 1 and "this machine has no CUDA GPU" in result.stderr
        assert (tmp_path / "g.json").is_file()


def _fsdp2_vs_ddp_body(out: str, sharded: bool):
    from test_step import mlm_batch, tiny_model
    from torch.distributed.fsdp import fully_shard

    from hfpipe.train.step import LoopState, train_step

    accelerator = cpu_accelerator(gradient_accumulation_steps=2)
    model = tiny_model(seed=0)
    if sharded:  # FSDP2 as accelerate applies it on GPUs: each layer, then the root
        for layer in model.model.layers:
            fully_shard(layer)
        fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model, optimizer = (model, accelerator.prepare(optimizer)) if sharded else accelerator.prepare(model, optimizer)
    state, losses, rank = LoopState(), [], accelerator.process_index
    # the same global batch each step (so the loss must fall), with uneven masked counts per rank and
    # micro-batch: the global normalisation matters
    micro = [mlm_batch(2, 1 + 3 * rank + a, seed=10 * rank + a) for a in range(2)]
    for _ in range(6):
        result = train_step(model, optimizer, accelerator, micro, state, max_grad_norm=1.0, on_nan="stop",
                            checkpoints="unused")
        losses.append(result.loss)
    if accelerator.is_main_process:
        with open(f"{out}/{'fsdp2' if sharded else 'ddp'}.json", "w") as f:
            json.dump(losses, f)


@pytest.mark.timeout(300)  # a hung gloo collective fails here, not after the suite's 900 s
def test_fsdp2_training_matches_ddp_step_for_step(tmp_path):
    # The same train_step (accumulation, global normalisation, clipping) over torch's FSDP2 and over DDP,
    # two gloo processes each: the loss curves agree.
    sys.path.insert(0, str(REPO / "tests" / "train"))
    try:
        for sharded in (False, True):
            gloo_launch(_fsdp2_vs_ddp_body, args=(str(tmp_path), sharded), num_processes=2)
    finally:
        sys.path.remove(str(REPO / "tests" / "train"))
    ddp, fsdp2 = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("ddp", "fsdp2"))
    assert len(ddp) == 6 and ddp[-1] < ddp[0] - 0.1  # it trains
    assert fsdp2 == pytest.approx(ddp, rel=1e-5)
