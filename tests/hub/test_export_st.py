"""`hfpipe export sentence-transformers`: the folder loads in sentence-transformers where hfpipe is not
installed, and its embeddings are the pooled hidden states of the model it came from.

    .venv/bin/pytest tests/hub/test_export_st.py -q

Two exports -- an hfpipe masked-LM folder with the default mean pooling, and a transformers BERT folder
(converted on the way) with CLS pooling and normalization -- then one fresh-environment subprocess that
loads both as a stranger would and compares `encode` with pooling `AutoModel` by hand, and with the
embeddings of the source models computed here.
"""

import json
import re

import torch
import transformers
from fresh_env import run_without_hfpipe
from torch.nn import functional as F

from hfpipe import HfpipeConfig, HfpipeForMaskedLM, HfpipeModel
from hfpipe.cli import main
from hfpipe.config import TokenizerArgs
from hfpipe.data.tokenizer import train_tokenizer

TEXTS = ["the quick brown fox jumps over the lazy dog", "hello world", "tiny models export fast", "a dog"]

SUBPROCESS = r"""
import json, torch
from sentence_transformers import SentenceTransformer
from transformers import AutoModel, AutoTokenizer
from torch.nn import functional as F

report = {}
for case in json.loads(CASES):
    st = SentenceTransformer(case["out"], trust_remote_code=True, device="cpu")
    got = st.encode(case["texts"], convert_to_tensor=True)
    model = AutoModel.from_pretrained(case["out"], trust_remote_code=True).eval()
    batch = AutoTokenizer.from_pretrained(case["out"])(case["texts"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    if case["pooling"] == "cls":
        pooled = hidden[:, 0]
    else:
        mask = batch["attention_mask"][..., None].float()
        pooled = (hidden * mask).sum(1) / mask.sum(1)
    if case["normalize"]:
        pooled = F.normalize(pooled, dim=-1)
    report[case["name"]] = dict(
        vs_automodel=(got - pooled).abs().max().item(),
        vs_source=(got - torch.load(case["expected"])).abs().max().item(),
        max_seq_length=st.max_seq_length,
        dimension=st.get_sentence_embedding_dimension(),
        modules=[type(m).__name__ for m in st],
        model_class=type(model).__name__,
        model_module=type(model).__module__.split(".")[0],
    )
print("REPORT", json.dumps(report))
"""


def masked_mean(hidden, mask):
    weights = mask[..., None].float()  # (B, T) -> (B, T, 1)
    return (hidden * weights).sum(1) / weights.sum(1)  # (B, T, C) -> (B, C)


def test_sentence_transformers_folder_loads_without_hfpipe(tmp_path, capsys):
    small = dict(hidden_size=32, intermediate_size=48, num_attention_heads=2, max_position_embeddings=64)
    tokenizer = train_tokenizer(TEXTS * 10, TokenizerArgs(type="wordpiece", vocab_size=80, min_frequency=1))
    torch.manual_seed(0)
    config = HfpipeConfig.from_preset("modern-tiny", vocab_size=len(tokenizer), **small)
    HfpipeForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    tokenizer.save_pretrained(tmp_path / "mlm")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *sorted(set(" ".join(TEXTS).split()))]
    bert_tokenizer = transformers.BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    bert_config = transformers.BertConfig(vocab_size=len(bert_tokenizer), num_hidden_layers=2, **small)
    bert = transformers.BertModel(bert_config).eval()
    bert.save_pretrained(tmp_path / "bert")
    bert_tokenizer.save_pretrained(tmp_path / "bert")

    # The source models' embeddings, computed here with hfpipe and with transformers' own BERT.
    source = HfpipeModel.from_pretrained(tmp_path / "mlm", add_pooling_layer=False).eval()
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    bert_batch = bert_tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        mean = masked_mean(source(**batch).last_hidden_state, batch["attention_mask"])
        torch.save(mean, tmp_path / "mlm.pt")
        torch.save(F.normalize(bert(**bert_batch).last_hidden_state[:, 0], dim=-1), tmp_path / "bert.pt")

    cases = [
        dict(name="mlm", args=[], pooling="mean", normalize=False),
        dict(name="bert", args=["--pooling", "cls", "--normalize"], pooling="cls", normalize=True),
    ]
    for case in cases:
        out = tmp_path / f"st-{case['name']}"
        argv = ["export", "sentence-transformers", str(tmp_path / case["name"]), str(out), *case["args"]]
        assert main(argv) == 0
        stdout = capsys.readouterr().out
        diff = float(re.search(r"max abs diff (\S+)", stdout).group(1))
        print(f"{case['name']}: SentenceTransformer vs {case['pooling']} pooling of AutoModel: {diff:.2e}")
        assert diff <= 1e-5, stdout
        case.update(out=str(out), texts=TEXTS, expected=str(tmp_path / f"{case['name']}.pt"))
        paths = [m["path"] for m in json.loads((out / "modules.json").read_text())]
        assert paths == ["", "1_Pooling"] + (["2_Normalize"] if case["normalize"] else [])
        pooling = json.loads((out / "1_Pooling" / "config.json").read_text())
        assert pooling["pooling_mode_mean_tokens"] == (case["pooling"] == "mean")
        assert pooling["pooling_mode_cls_token"] == (case["pooling"] == "cls")
        assert json.loads((out / "sentence_bert_config.json").read_text())["max_seq_length"] == 64
        files = {p.name for p in out.iterdir()}
        code_and_weights = {"modeling_hfpipe.py", "configuration_hfpipe.py", "model.safetensors"}
        assert code_and_weights | {"tokenizer.json"} <= files

    code = SUBPROCESS.replace("CASES", repr(json.dumps(cases)))
    done = run_without_hfpipe(code, env={"HF_HUB_OFFLINE": "1"})
    report = json.loads(done.stdout.split("REPORT", 1)[1])
    print(json.dumps(report, indent=1))
    for case in cases:
        got = report[case["name"]]
        assert got["vs_automodel"] <= 1e-5, got  # encode == pooling AutoModel's outputs by hand
        assert got["vs_source"] <= 1e-5, got  # == the source model's embeddings (BERT: transformers' own)
        assert got["max_seq_length"] == 64 and got["dimension"] == 32, got
        normalize = ["Normalize"] if case["normalize"] else []
        assert got["modules"] == ["Transformer", "Pooling", *normalize], got
        assert got["model_class"] == "HfpipeModel", got
        assert got["model_module"] == "transformers_modules", got  # the folder's remote code, not hfpipe


def test_not_a_model_folder(tmp_path, capsys):
    transformers.GPT2Config(n_layer=1, n_embd=8, n_head=2).save_pretrained(tmp_path / "gpt2")
    capsys.readouterr()
    assert main(["export", "sentence-transformers", str(tmp_path / "gpt2"), str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == (
        f"hfpipe export: error: {tmp_path / 'gpt2'}: config.json says model_type "
        "'gpt2'; hfpipe exports hfpipe or BERT models\n"
    )
    assert not (tmp_path / "out").exists()
