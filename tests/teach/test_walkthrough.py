"""docs/walkthrough.md stays true: every code line it quotes is still in the file it names, every command it
quotes still runs (and `hfpipe shapes` still prints exactly what it shows), and the ablation commands
quoted in the docs still parse.

    .venv/bin/pytest tests/teach/test_walkthrough.py -q

Commands are read from ```console blocks (`$ hfpipe ...`, then the output) and ```bash blocks, and run
in order in an empty folder, each in a fresh `python -m hfpipe` as a reader would run them. Two
exceptions keep this fast: `hfpipe pretrain` gets a tiny budget appended (FAST_PRETRAIN), and a command
marked `# long` (the ablations, minutes each) is only parsed, with its variants checked.
"""

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from hfpipe.cli import build_parser
from hfpipe.teach.ablate.suites import SUITES, select_variants

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
WALKTHROUGH = DOCS / "walkthrough.md"
LONG_MARKER = "# long"
FAST_PRETRAIN = ["train.max_steps=2", "train.eval_every_steps=null", "eval.max_batches=1",
                 "data.max_documents=200", "data.max_validation_documents=20", "tokenizer.vocab_size=1000"]


def fenced_blocks(path: Path) -> list[tuple[str, list[str]]]:
    """(language, lines) of every ``` block in a markdown file."""
    blocks, current, language = [], None, ""
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            if current is None:
                current, language = [], line[3:].strip()
            else:
                blocks.append((language, current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def quoted_commands(path: Path) -> list[tuple[str, list[str]]]:
    """(command line, the output quoted under it) for every `hfpipe` command in console/bash blocks."""
    found = []
    for language, lines in fenced_blocks(path):
        if language == "console":
            output = None  # the lines under the current `$ ` line
            for line in lines:
                if line.startswith("$ "):
                    output = []
                    found.append((line[2:], output))
                elif output is not None:
                    output.append(line)
        elif language == "bash":
            found += [(line, []) for line in lines if line.startswith("hfpipe ")]
    return [(command, output) for command, output in found if command.startswith("hfpipe ")]


def check_parses(command: str) -> None:
    argv = shlex.split(command, comments=True)[1:]
    args = build_parser(only=argv[0]).parse_args(argv)
    if argv[0] == "ablate":
        select_variants(SUITES[args.suite], args.variants)


def test_walkthrough_quotes_commands_of_every_kind():
    commands = [c for c, _ in quoted_commands(WALKTHROUGH)]
    words = {shlex.split(c)[1] for c in commands}
    assert {"pretrain", "shapes", "attention", "ablate"} <= words
    assert {c.split()[2] for c in commands if c.startswith("hfpipe ablate")} == set(SUITES)


def test_every_quoted_code_line_is_in_its_file():
    """A ```python block that starts with `# path/to/file.py` quotes lines of that file, verbatim."""
    checked = 0
    for language, lines in fenced_blocks(WALKTHROUGH):
        if language != "python" or not lines or not lines[0].startswith("# hfpipe/"):
            continue
        source = {line.strip() for line in (REPO / lines[0][2:].split()[0]).read_text().splitlines()}
        for line in lines[1:]:
            assert line.strip() in source, f"{lines[0][2:]} no longer has the line: {line.strip()}"
            checked += 1
    assert checked >= 25


def test_every_quoted_command_still_runs(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    ran = []
    for command, output in quoted_commands(WALKTHROUGH):
        if LONG_MARKER in command:
            check_parses(command)
            continue
        argv = shlex.split(command, comments=True)[1:]
        if argv[0] == "pretrain":
            argv += FAST_PRETRAIN
        done = subprocess.run([sys.executable, "-m", "hfpipe", *argv], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        if argv[0] == "shapes":  # deterministic (meta device): the quoted output is the real output
            assert done.stdout.rstrip("\n").splitlines() == output, "re-run the command and paste its output"
        ran.append(argv[0])
    assert ran == ["pretrain", "attention", "shapes"]
    assert (tmp_path / "docs" / "walkthrough-attention.png").is_file()


def test_the_attention_picture_is_committed_and_small():
    png = DOCS / "walkthrough-attention.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size < 200_000


@pytest.mark.parametrize("doc", ["walkthrough.md", "ablations.md"])
def test_ablation_commands_in_the_docs_parse(doc):
    commands = [c for c, _ in quoted_commands(DOCS / doc) if c.startswith("hfpipe ablate")]
    assert commands
    for command in commands:
        check_parses(command)
