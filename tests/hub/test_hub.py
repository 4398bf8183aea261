"""Push -> download -> load through the real huggingface_hub client, against a Hub test double.

There is no internet here, so `tests/hub_server.py` (a TEST DOUBLE of the Hub's HTTP protocol, in
memory) serves 127.0.0.1. huggingface_hub reads HF_ENDPOINT once, at import, and the suite runs with
HF_HUB_OFFLINE=1, so both sides of a transfer run in subprocesses whose environment points at it:
- the pusher (`HubClient`): one long-lived process that imports hfpipe.hub.push once and runs the calls
  the tests send it, with HF_HUB_OFFLINE=0, a fake HF_TOKEN, HF_HOME in a temporary folder and DEBUG
  logging everywhere (so the token-in-logs check reads the most verbose output there is);
- the user (`run_without_hfpipe`, tests/fresh_env.py): transformers only -- `import hfpipe` fails --
  loading with trust_remote_code=True and revision pinned to the pushed commit.
Outputs after the round trip are compared with the ones the model gave before the push.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fresh_env import run_without_hfpipe
from hub_server import HubServer
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast, pipeline

from hfpipe import (
    HfpipeConfig,
    HfpipeForMaskedLM,
    HfpipeForQuestionAnswering,
    HfpipeForSequenceClassification,
    HfpipeForTokenClassification,
)
from hfpipe.hub.model_card import write_model_card
from hfpipe.hub.push import ModelFolderError, push_folder

TOKEN = "hf_FakeTestToken0123456789abcdefXYZ"  # only the test server accepts it
WORDS = "the a of and to in is was for on with by at from good bad film paris london ada born capital france where"
TEXTS = ["the capital of france is [MASK] .", "ada was born in london , a good city ."]
# Two architectures travel: original BERT (post-norm, learned positions) and modern (pre-norm, RoPE, GeGLU).
PRESETS = {
    "fill-mask": "bert-tiny",
    "text-classification": "modern-tiny",
    "token-classification": "modern-tiny",
    "question-answering": "bert-tiny",
}
# task -> (head class, Auto class the user loads it with, config overrides, pipeline call, head outputs)
TASKS = {
    "fill-mask": (HfpipeForMaskedLM, "AutoModelForMaskedLM", {}, {"inputs": TEXTS[0]}, ["logits"]),
    "text-classification": (
        HfpipeForSequenceClassification,
        "AutoModelForSequenceClassification",
        {"id2label": {0: "negative", 1: "positive"}, "label2id": {"negative": 0, "positive": 1}},
        {"inputs": "a good film ."},
        ["logits"],
    ),
    "token-classification": (
        HfpipeForTokenClassification,
        "AutoModelForTokenClassification",
        {"id2label": dict(enumerate(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]))},
        {"inputs": "ada was born in london ."},
        ["logits"],
    ),
    # transformers v5 removed the extractive "question-answering" pipeline: `qa_answer` below does its job.
    "question-answering": (
        HfpipeForQuestionAnswering,
        "AutoModelForQuestionAnswering",
        {},
        {"question": "where was ada born ?", "context": "ada was born in london ."},
        ["start_logits", "end_logits"],
    ),
}


def qa_answer(tokenizer, model, question: str, context: str) -> dict:
    """The best answer span in `context` (what v4's question-answering pipeline returned, minus batching).
    Its source also runs in the fresh environment, so both sides decode answers the same way."""
    import torch

    encoded = tokenizer(question, context, return_tensors="pt", return_offsets_mapping=True)
    offsets = encoded.pop("offset_mapping")[0].tolist()
    in_context = torch.tensor([sid == 1 for sid in encoded.sequence_ids(0)])
    with torch.no_grad():
        out = model(**encoded)
    scores = out.start_logits[0][:, None] + out.end_logits[0][None, :]  # (T start, T end)
    valid = in_context[:, None] & in_context[None, :] & torch.ones_like(scores, dtype=torch.bool).triu()
    best = scores.masked_fill(~valid, float("-inf")).argmax().item()
    start, end = divmod(best, scores.shape[1])
    char_start, char_end = offsets[start][0], offsets[end][1]
    return {"answer": context[char_start:char_end], "start": char_start, "end": char_end,
            "score": scores[start, end].item()}  # fmt: skip


def repo_for(task: str) -> str:
    return f"tester/rt-{task}"


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub():
    with HubServer(token=TOKEN) as server:
        yield server


@pytest.fixture(autouse=True)
def _heal(hub):
    yield
    hub.heal()


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A tiny fixed-vocabulary WordPiece tokenizer with BERT's special tokens at ids 0-4."""
    vocab = {
        t: i
        for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS.split(), ".", ",", "?"])
    }
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    special = dict(
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]"
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special)


def _jsonable(value):
    """Pipeline outputs hold numpy scalars: make them plain Python (exactly: float32 -> float64)."""
    return json.loads(json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else str(o)))


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    """One saved folder per task (weights, code files, tokenizer, model card) and its outputs before the push."""
    root = tmp_path_factory.mktemp("models")
    tokenizer = make_tokenizer()
    encoded = tokenizer(TEXTS, padding=True, return_tensors="pt")
    saved = {}
    for seed, (task, (head_class, _, overrides, pipe_kwargs, keys)) in enumerate(TASKS.items()):
        torch.manual_seed(seed)
        config = HfpipeConfig.from_preset(PRESETS[task], vocab_size=len(tokenizer), **overrides)
        model = head_class(config).eval()
        folder = root / task
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        card = {"results": {"eval_loss": 1.25}, "task": task, "repo_id": repo_for(task)}
        write_model_card(folder, config=model.config.to_dict(), **card)
        with torch.no_grad():
            outputs = model(**encoded)
            hidden = model.base_model(**encoded).last_hidden_state
        if task == "question-answering":
            answer = qa_answer(tokenizer, model, **pipe_kwargs)
        else:
            answer = pipeline(task, model=model, tokenizer=tokenizer)(**pipe_kwargs)
        saved[task] = {
            "folder": folder,
            "input_ids": encoded["input_ids"].tolist(),
            "hidden": hidden,
            "outputs": {key: outputs[key] for key in keys},
            "pipeline": _jsonable(answer),
        }
    return saved


# --- helpers -------------------------------------------------------------------------------------
def hub_env(endpoint: str, home: Path, **extra: str) -> dict[str, str]:
    """Environment of a process that talks to the test Hub (online, fake token, caches under `home`)."""
    return {
        "HF_ENDPOINT": endpoint,
        "HF_TOKEN": TOKEN,
        "HF_HUB_OFFLINE": "0",
        "TRANSFORMERS_OFFLINE": "0",
        "HF_HOME": str(home),
        "HF_HUB_CACHE": str(home / "hub"),
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        **extra,
    }


_CLIENT_LOOP = """
import dataclasses, json, logging, sys
logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
from hfpipe.hub import push as hub

for line in sys.stdin:
    name, args, kwargs = json.loads(line)
    try:
        value = getattr(hub, name)(*args, **kwargs)
        reply = {"ok": dataclasses.asdict(value) if dataclasses.is_dataclass(value) else str(value)}
    except Exception as err:
        reply = {"error": type(err).__name__, "types": [c.__name__ for c in type(err).__mro__], "message": str(err)}
    print("CLIENT-RESULT " + json.dumps(reply), flush=True)
"""


class HubClient:
    """hfpipe.hub.push in a subprocess: `call("push_folder", folder, repo_id, ...)` returns {"ok": result} or
    {"error": class name, "types": its classes, "message": ...}. Its stderr (DEBUG logs, HF_DEBUG
    request dumps) goes to a file, read back by `log()`."""

    def __init__(self, env: dict[str, str], log_path: Path):
        self.log_path = log_path
        self._stderr = log_path.open("w")
        self._out: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CLIENT_LOOP],
            env={**os.environ, **env, "HF_DEBUG": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
        )

    def call(self, name: str, *args, **kwargs) -> dict:
        args = [str(a) if isinstance(a, Path) else a for a in args]
        self.proc.stdin.write(json.dumps([name, args, kwargs]) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            self._out.append(line)
            if line.startswith("CLIENT-RESULT "):
                return json.loads(line.removeprefix("CLIENT-RESULT "))
        raise AssertionError(f"hub client exited ({self.proc.wait()}):\n{self.log()[-5000:]}")

    def log(self) -> str:
        return "".join(self._out) + self.log_path.read_text()

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self._stderr.close()


@pytest.fixture(scope="module")
def client(hub, tmp_path_factory):
    home = tmp_path_factory.mktemp("pusher")
    pusher = HubClient(hub_env(hub.url, home), home / "client.log")
    yield pusher
    pusher.close()


def folder_digest(folder: Path) -> str:
    """Hash of every path and file content under `folder`: equal before and after means untouched."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(path.relative_to(folder).as_posix().encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def assert_close(actual, expected, where: str, tol: float = 1e-6) -> None:
    """Same structure, equal non-float leaves, floats within `tol`."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), (
            f"{where}: {actual} != {expected}"
        )
        for key in expected:
            assert_close(actual[key], expected[key], f"{where}.{key}", tol)
    elif isinstance(expected, list):
        assert isinstance(actual, list) and len(actual) == len(expected), f"{where}: {actual} != {expected}"
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{where}[{i}]", tol)
    elif isinstance(expected, float):
        assert abs(actual - expected) <= tol, f"{where}: {actual} != {expected}"
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


_FRESH_LOAD = r"""
import contextlib, io, json, re, torch, transformers
from pathlib import Path
from huggingface_hub import hf_hub_download
from transformers import AutoConfig, AutoModel, AutoTokenizer, pipeline

out = {}
for case in json.loads(CASES):
    repo, kw = case["repo"], {"revision": case["revision"], "trust_remote_code": True}
    config = AutoConfig.from_pretrained(repo, **kw)
    tokenizer = AutoTokenizer.from_pretrained(repo, **kw)
    encoded = tokenizer(case["texts"], padding=True, return_tensors="pt")
    base = AutoModel.from_pretrained(repo, **kw).eval()
    head = getattr(transformers, case["auto"]).from_pretrained(repo, **kw).eval()
    with torch.no_grad():
        hidden = base(**encoded).last_hidden_state
        outputs = head(**encoded)
    if case["task"] == "question-answering":
        answer = qa_answer(tokenizer, head, **case["pipe_kwargs"])
    else:
        answer = pipeline(case["task"], model=repo, **kw)(**case["pipe_kwargs"])
    out[case["task"]] = {
        "model_type": config.model_type,
        "classes": [type(config).__module__, type(base).__module__, type(head).__module__],
        "input_ids": encoded["input_ids"].tolist(),
        "hidden": hidden.tolist(),
        "outputs": {key: outputs[key].tolist() for key in case["keys"]},
        "pipeline": answer,
    }
    if not case["run_card"]:
        continue
    # The model card's usage snippet, exactly as a user would copy it from the Hub, runs too.
    card = Path(hf_hub_download(repo, "README.md", revision=case["revision"])).read_text()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(re.search(r"```python\n(.*?)```", card, re.S).group(1), {})
    out[case["task"]]["snippet_printed"] = printed.getvalue()
print("FRESH-RESULT " + json.dumps(out, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
"""


# --- the round trip ------------------------------------------------------------------------------
def test_push_then_load_in_fresh_environment_gives_identical_outputs(hub, client, saved_models, tmp_path):
    """Every head: push, then AutoConfig/AutoTokenizer/AutoModel/AutoModelFor*/pipeline in an environment
    without hfpipe, at the pushed revision, reproduce the outputs computed before the push."""
    digests = {task: folder_digest(saved["folder"]) for task, saved in saved_models.items()}
    cases = []
    for task, (_, auto, _, pipe_kwargs, keys) in TASKS.items():
        pushed = client.call("push_folder", saved_models[task]["folder"], repo_for(task))["ok"]
        assert pushed["changed"] and "model.safetensors" in pushed["uploaded"], pushed
        assert pushed["commit_sha"] == hub.head(repo_for(task)).sha
        cases.append({"repo": pushed["repo_id"], "revision": pushed["commit_sha"], "task": task, "auto": auto,
                      "texts": TEXTS, "pipe_kwargs": pipe_kwargs, "keys": keys,
                      "run_card": task in ("fill-mask", "question-answering")})  # fmt: skip

    code = f"CASES = {json.dumps(cases)!r}\n" + inspect.getsource(qa_answer) + _FRESH_LOAD
    done = run_without_hfpipe(code, env=hub_env(hub.url, tmp_path / "user"), timeout=240)
    loaded = json.loads(done.stdout.split("FRESH-RESULT ", 1)[1])

    for task, saved in saved_models.items():
        got = loaded[task]
        assert got["model_type"] == "hfpipe"
        assert all(module.startswith("transformers_modules.") for module in got["classes"]), got["classes"]
        assert got["input_ids"] == saved["input_ids"], task
        diff = (torch.tensor(got["hidden"]) - saved["hidden"]).abs().max().item()
        assert diff <= 1e-6, f"{task}: AutoModel hidden states differ by {diff}"
        for key, before in saved["outputs"].items():
            diff = (torch.tensor(got["outputs"][key]) - before).abs().max().item()
            assert diff <= 1e-6, f"{task}: {key} differs by {diff} after the round trip"
        assert_close(got["pipeline"], saved["pipeline"], f"{task} pipeline")
        assert folder_digest(saved["folder"]) == digests[task], f"{task}: push modified the local folder"
    for task in ("fill-mask", "question-answering"):  # the card's two kinds of usage snippet
        assert loaded[task]["snippet_printed"].strip(), (
            f"{task}: the model card's usage snippet printed nothing"
        )

    # The token reached the server (auth) but no log line, card or pushed file.
    assert TOKEN not in client.log() and TOKEN not in done.stdout + done.stderr
    assert "authorization" in client.log().lower()  # HF_DEBUG really dumped the requests' headers
    for task in TASKS:
        files = hub.head(repo_for(task)).files
        assert {"README.md", "config.json", "modeling_hfpipe.py", "tokenizer.json"} <= files.keys()
        assert not any(TOKEN.encode() in content for content in files.values())


# --- pushing behaviour ---------------------------------------------------------------------------
def test_pushing_an_unchanged_folder_uploads_nothing(hub, client, saved_models, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(saved_models["fill-mask"]["folder"], folder)
    first = client.call("push_folder", folder, "tester/same")["ok"]
    second = client.call("push_folder", folder, "tester/same")["ok"]  # nothing changed
    with (folder / "README.md").open("a") as card:
        card.write("One more line.\n")
    third = client.call("push_folder", folder, "tester/same")["ok"]  # only the card changed

    assert first["changed"] and "model.safetensors" in first["uploaded"]
    assert second["changed"] is False and second["uploaded"] == []
    assert second["commit_sha"] == first["commit_sha"]
    assert third["changed"] and third["uploaded"] == ["README.md"]
    # Three pushes, two uploads: the unchanged push sent no preupload and no commit request.
    ours = [name for _, path, name in hub.requests if "/tester/same/" in path]
    assert ours.count("preupload") == 2 and ours.count("commit") == 2
    assert len(hub.repos["tester/same"].commits) == 3  # the initial commit + first + third


def test_push_checkpoint_sends_the_model_to_a_branch_without_training_state(
    hub, client, saved_models, tmp_path
):
    model = saved_models["fill-mask"]["folder"]
    checkpoint = tmp_path / "step-00000100"
    shutil.copytree(model, checkpoint)
    training_state = {"optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json"}
    for name in training_state:
        (checkpoint / name).write_bytes(b"training state")
    before = folder_digest(checkpoint)

    result = client.call("push_checkpoint", checkpoint, "tester/ckpt", branch="checkpoints")
    assert result["ok"]["revision"] == "checkpoints"
    files = hub.head("tester/ckpt", branch="checkpoints").files
    assert "model.safetensors" in files and "modeling_hfpipe.py" in files
    assert not training_state & files.keys()
    assert set(hub.head("tester/ckpt", branch="main").files) == {".gitattributes"}  # main untouched
    assert folder_digest(checkpoint) == before

    refused = client.call("push_folder", checkpoint, "tester/ckpt")  # push_folder refuses training state
    assert refused["error"] == "ModelFolderError" and "optimizer.bin" in refused["message"]
    assert "push_checkpoint" in refused["message"]
    no_branch = client.call("push_folder", model, "tester/ckpt", revision="v2", create_branch=False)
    assert no_branch["error"] == "HubError" and "branch 'v2' does not exist" in no_branch["message"]


# --- failures ------------------------------------------------------------------------------------
def test_http_500_everywhere_gives_a_clear_hub_error_and_leaves_the_folder_intact(hub, client, saved_models):
    folder = saved_models["text-classification"]["folder"]
    before = folder_digest(folder)
    hub.fail(500)
    result = client.call("push_folder", folder, "tester/down")
    assert result["error"] == "HubError"
    message = result["message"]
    assert "creating the repo" in message and f"POST {hub.url}/api/repos/create" in message
    assert "HTTP 500" in message and "Nothing local was modified" in message
    assert "run the same push again" in message
    assert folder_digest(folder) == before
    assert "tester/down" not in hub.repos


def test_http_500_on_commit_leaves_remote_and_local_unchanged(hub, client, saved_models):
    folder = saved_models["token-classification"]["folder"]
    before = folder_digest(folder)
    hub.fail(500, endpoints={"commit"})  # repo creation, tree and preupload work; the commit fails
    result = client.call("push_folder", folder, "tester/half")  # huggingface_hub retries 5 times first
    assert result["error"] == "HubError"
    assert "uploading" in result["message"] and "/api/models/tester/half/commit/main" in result["message"]
    assert set(hub.head("tester/half").files) == {".gitattributes"}  # no partial commit
    assert folder_digest(folder) == before


def test_connection_refused_and_missing_token_give_clear_errors(saved_models, tmp_path):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    folder = saved_models["fill-mask"]["folder"]
    before = folder_digest(folder)
    offline = HubClient(hub_env(dead, tmp_path, HF_TOKEN=""), tmp_path / "client.log")
    try:
        no_token = offline.call("push_folder", folder, "tester/x")
        refused = offline.call("push_folder", folder, "tester/x", token=TOKEN)
    finally:
        offline.close()
    assert no_token["error"] == "HubError" and "HF_TOKEN" in no_token["message"]
    assert "hf auth login" in no_token["message"]
    assert refused["error"] == "HubError"
    assert f"could not reach {dead}" in refused["message"] and "ConnectError" in refused["message"]
    assert "Nothing local was modified" in refused["message"]
    assert folder_digest(folder) == before
    assert TOKEN not in offline.log()


def test_missing_repo_revision_or_file_raise_the_hub_errors_with_a_hint(hub, client, saved_models):
    folder = saved_models["question-answering"]["folder"]
    assert "ok" in client.call("push_folder", folder, "tester/dl")
    assert "ok" in client.call("push_folder", folder, "tester/secret", private=True)

    no_repo = client.call("download", "tester/no-such-repo")
    assert "RepositoryNotFoundError" in no_repo["types"]
    assert (
        "repo 'tester/no-such-repo' was not found" in no_repo["message"] and "HF_TOKEN" in no_repo["message"]
    )
    anonymous = client.call("download", "tester/secret", filename="config.json", token=False)
    assert "RepositoryNotFoundError" in anonymous["types"] and "for a private repo" in anonymous["message"]
    authorized = client.call("download", "tester/secret", filename="config.json")
    assert hub.repos["tester/secret"].private and json.loads(Path(authorized["ok"]).read_text())["model_type"]
    no_file = client.call("download", "tester/dl", filename="pytorch_model.bin")
    assert "EntryNotFoundError" in no_file["types"]
    assert "'pytorch_model.bin' is not in tester/dl@main" in no_file["message"]
    no_rev = client.call("download", "tester/dl", revision="no-such-branch")
    assert "RevisionNotFoundError" in no_rev["types"] and "no revision 'no-such-branch'" in no_rev["message"]
    snapshot = Path(client.call("download", "tester/dl")["ok"])
    assert json.loads((snapshot / "config.json").read_text())["model_type"] == "hfpipe"


# --- local checks (no network: they fail before any request) -------------------------------------
@pytest.mark.parametrize(
    "name", ["pytorch_model.bin", "optimizer.pt", "rng_state.pth", "data.pkl", "optimizer.safetensors"]
)
def test_pickled_weights_and_training_state_are_refused(saved_models, tmp_path, name):
    folder = tmp_path / "model"
    shutil.copytree(saved_models["fill-mask"]["folder"], folder)
    (folder / name).write_bytes(b"\x80\x04pickle")
    with pytest.raises(ModelFolderError, match=rf"Refusing to push .*{name}.*only as safetensors"):
        push_folder(folder, "tester/pickles", token=TOKEN)


@pytest.mark.parametrize(
    "remove, message",
    [
        ("config.json", "has no config.json"),
        ("model.safetensors", "has no model.safetensors"),
        ("modeling_hfpipe.py", "modeling_hfpipe.py is missing"),
    ],
)
def test_incomplete_model_folder_is_refused(saved_models, tmp_path, remove, message):
    folder = tmp_path / "model"
    shutil.copytree(saved_models["fill-mask"]["folder"], folder)
    (folder / remove).unlink()
    with pytest.raises(ModelFolderError, match=message):
        push_folder(folder, "tester/incomplete", token=TOKEN)


def test_push_command_line_pushes_then_reports_no_changes(hub, saved_models, tmp_path):
    """`hfpipe push DIR --repo-id ID` as a user types it, against the test double."""
    folder = tmp_path / "model"
    shutil.copytree(saved_models["fill-mask"]["folder"], folder)
    env = {**os.environ, **hub_env(hub.url, tmp_path / "home")}
    cmd = [sys.executable, "-m", "hfpipe", "push", str(folder), "--repo-id", "tester/cli", "--commit-message", "first"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert first.stdout.startswith("pushed ") and "tester/cli" in first.stdout
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 0 and again.stdout.startswith("no changes")
    assert TOKEN not in first.stdout + first.stderr + again.stdout + again.stderr
    missing = subprocess.run([*cmd[:4], str(tmp_path / "nowhere"), *cmd[5:]], capture_output=True, text=True,
                             env=env, timeout=120)
    assert missing.returncode == 2 and "nowhere" in missing.stderr
