"""Load a fine-tuning task's examples from the Hub or from local files, in the Hub's column layout.

    from hfpipe.tasks import get_task, load_task_data
    from hfpipe.config import TaskDataArgs                   # the recipe's `data:` section
    spec = get_task("sst2")
    raw = load_task_data(spec, TaskDataArgs(train_file="../shared/data/sst2/train.tsv",
                                            validation_file="../shared/data/sst2/dev.tsv"))
    raw["validation"][0]  # {'sentence': "it 's a charming ...", 'label': 1}

Whatever the source, the result has the columns of the task's Hub dataset (`sentence`, `premise` /
`hypothesis`, `tokens` / `ner_tags`, `id` / `context` / `question` / `answers`) and integer labels in
the Hub's order, so preprocessing and metrics never branch on where the data came from.

Local files, chosen by extension:
- `.tsv`: GLUE TSV, read with quoting OFF (GLUE text has literal `"`); header names are mapped to the
  Hub names (`#1 String` -> `sentence1`, `gold_label` -> `label`, ...). CoLA's header-less 4-column
  layout (source, label, mark, sentence) is recognised when the first row has no known column name.
- `.csv`: ordinary CSV with quoting, a header row with the task's column names.
- `.json` / `.jsonl`: records with the column names (a JSON list, JSON lines, or `{"data": [...]}`);
  for SQuAD also the official nested format `{"data": [{"title", "paragraphs": [...]}]}`.
- anything else for token classification (`.txt`, `.conll`, ...): CoNLL columns `word ... NER`,
  blank line between sentences, `-DOCSTART-` lines skipped; the NER tag is the last column.

Every bad value raises `TaskDataError` naming the file, the row (1-based line number, or the JSON
record / SQuAD question id) and the column, so the user knows exactly what to fix.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .builtin import load_builtin_task

if TYPE_CHECKING:
    import datasets

    from hfpipe.config import TaskDataArgs
    from hfpipe.tasks.spec import TaskSpec


class TaskDataError(ValueError):
    """A bad value in a data file: names the file, the row and the column to fix."""

    def __init__(self, path: str | Path, where: str, column: str | None, problem: str):
        self.path, self.where, self.column, self.problem = str(path), where, column, problem
        col = f", column {column!r}" if column else ""
        super().__init__(f"{path}, {where}{col}: {problem}")


Record = tuple[str, dict[str, Any]]
"""(where, row): `where` is "line 17", "record 3" or "question id 56be..."; row maps column -> value."""


# --------------------------------------------------------------------------------------------------
# Entry point.


def load_task_data(spec: TaskSpec, args: TaskDataArgs) -> datasets.DatasetDict:
    """The task's splits ("train", "validation", and "validation_mismatched" for MNLI).

    If `args.train_file` or `args.validation_file` is set, only local files are read (the Hub is never
    consulted, so an offline run with local files cannot half-depend on the network); a split without a
    file is left out. Otherwise a built-in task (`pydocs`) is built from the embedded corpus, and any
    other task's Hub dataset `args.dataset_name` (default: the task's) is loaded.
    `max_train_examples` / `max_eval_examples` keep the first N rows (deterministic, like HF run_glue).
    """
    import datasets

    local = {
        "train": (args.train_file, "data.train_file"),
        "validation": (args.validation_file, "data.validation_file"),
        "validation_mismatched": (args.validation_mismatched_file, "data.validation_mismatched_file"),
    }
    if args.train_file or args.validation_file:
        splits = {
            split: read_task_file(spec, path, args, key=key) for split, (path, key) in local.items() if path
        }
        out = datasets.DatasetDict(splits)
    elif spec.hub_dataset.startswith("builtin:"):
        out = load_builtin_task(spec)  # embedded data (tasks/builtin.py), offline
    else:
        out = _load_hub(spec, args)
    for split in list(out):
        limit = args.max_train_examples if split == "train" else args.max_eval_examples
        if limit is not None and limit < len(out[split]):
            out[split] = out[split].select(range(limit))
    return out


def read_task_file(
    spec: TaskSpec, path: str | Path, args: TaskDataArgs, key: str = "data file"
) -> datasets.Dataset:
    """One local file as a `datasets.Dataset` with the task's Hub columns; `key` names it in errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: no such file: {path} (resolved to {path.resolve()})")
    suffix = path.suffix.lower()
    if spec.kind == "question_answering":
        if suffix not in (".json", ".jsonl"):
            raise TaskDataError(
                path, "file", None, f"task {spec.name} reads SQuAD JSON (.json/.jsonl), not {suffix!r}"
            )
        return _squad_dataset(spec, path, _read_json_records(path, squad=True))
    if spec.kind == "token_classification":
        records = _read_json_records(path) if suffix in (".json", ".jsonl") else None
        return _conll_dataset(spec, path, records, args)
    if suffix in (".tsv", ".csv"):
        return _table_dataset(spec, path, _read_delimited(spec, path, args), args, header=True)
    if suffix in (".json", ".jsonl"):
        return _table_dataset(spec, path, _read_json_records(path), args, header=False)
    raise TaskDataError(path, "file", None, f"unknown extension {suffix!r}: use .tsv, .csv, .json or .jsonl")


# --------------------------------------------------------------------------------------------------
# Readers: files -> (where, {column: value}) records.


def _read_delimited(spec: TaskSpec, path: Path, args: TaskDataArgs) -> Iterator[Record]:
    """TSV with quoting off (GLUE), or CSV with standard quoting. Yields ("line N", row)."""
    tsv = path.suffix.lower() == ".tsv"
    with open(path, encoding="utf-8-sig", newline="") as f:  # -sig: MRPC's header starts with a BOM
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE) if tsv else csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise TaskDataError(path, "line 1", None, "the file is empty")
        wanted = set(_column_sources(spec, args).values()) | {
            n for names in _aliases(spec).values() for n in names
        }
        if spec.headerless_columns and not wanted & set(header):
            # CoLA's GLUE files have no header: the first row is already data.
            columns, first = list(spec.headerless_columns), [(reader.line_num, header)]
        else:
            columns, first = header, []
        rows = ((reader.line_num, row) for row in reader)
        for line, row in itertools.chain(first, rows):
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank line (e.g. at the end of the file)
            if len(row) != len(columns):
                raise TaskDataError(
                    path, f"line {line}", None,
                    f"expected {len(columns)} {'tab' if tsv else 'comma'}-separated fields "
                    f"({', '.join(columns)}), found {len(row)}",
                )  # fmt: skip
            yield f"line {line}", dict(zip(columns, row))


def _read_json_records(path: Path, squad: bool = False) -> Iterator[Record]:
    """JSON lines, a JSON list, `{"data": [...]}`, or (squad=True) the official SQuAD nesting."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() == ".jsonl" or _is_json_lines(text):
        for i, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"line {i}", _json_object(path, f"line {i}", line)
        return
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise TaskDataError(path, f"line {e.lineno}", None, f"invalid JSON: {e.msg}") from None
    if isinstance(data, dict) and "data" in data:
        data = data["data"]
    if not isinstance(data, list):
        raise TaskDataError(path, "top level", None, 'expected a list of records or {"data": [...]}')
    if squad and data and isinstance(data[0], dict) and "paragraphs" in data[0]:
        yield from _squad_official_records(path, data)
        return
    for i, record in enumerate(data, 1):
        if not isinstance(record, dict):
            raise TaskDataError(path, f"record {i}", None, f"expected an object, got {type(record).__name__}")
        yield f"record {i}", record


def _is_json_lines(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2 or not lines[0].lstrip().startswith("{"):
        return False
    try:
        json.loads(lines[0])
        return True
    except json.JSONDecodeError:
        return False


def _json_object(path: Path, where: str, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise TaskDataError(path, where, None, f"invalid JSON: {e.msg}") from None
    if not isinstance(record, dict):
        raise TaskDataError(path, where, None, f"expected a JSON object, got {type(record).__name__}")
    return record


def _squad_official_records(path: Path, articles: list[dict]) -> Iterator[Record]:
    """Flatten {"data": [{"title", "paragraphs": [{"context", "qas": [...]}]}]} like the Hub's squad."""
    for a, article in enumerate(articles, 1):
        for p, paragraph in enumerate(article.get("paragraphs", []), 1):
            for q, qa in enumerate(paragraph.get("qas", []), 1):
                where = (
                    f"question id {qa['id']}" if "id" in qa else f"article {a}, paragraph {p}, question {q}"
                )
                yield (
                    where,
                    {
                        "id": qa.get("id"),
                        "title": article.get("title", ""),
                        "context": paragraph.get("context"),
                        "question": qa.get("question"),
                        "answers": qa.get("answers"),
                    },
                )


def _read_conll(path: Path) -> Iterator[list[tuple[int, str, str]]]:
    """Sentences of a CoNLL column file as [(line, word, tag), ...]; the tag is the last column."""
    sentence: list[tuple[int, str, str]] = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            parts = line.split()
            if not parts or parts[0] == "-DOCSTART-":
                if sentence:
                    yield sentence
                sentence = []
                continue
            if len(parts) < 2:
                raise TaskDataError(
                    path, f"line {i}", None, f"expected 'word ... NER-tag' columns, found {line.strip()!r}"
                )
            sentence.append((i, parts[0], parts[-1]))
    if sentence:
        yield sentence


# --------------------------------------------------------------------------------------------------
# Records -> datasets with the Hub's columns and label ids.


def _aliases(spec: TaskSpec) -> dict[str, list[str]]:
    """Hub column -> other header names that mean it in GLUE files (e.g. label <- gold_label)."""
    out: dict[str, list[str]] = {}
    for file_column, column in spec.file_columns:
        out.setdefault(column, []).append(file_column)
    return out


def _column_sources(spec: TaskSpec, args: TaskDataArgs) -> dict[str, str]:
    """Hub column -> the user's column name when data.text_columns / data.label_column rename it."""
    out = {c: c for c in (*spec.text_columns, spec.label_column)}
    if args.text_columns:
        if len(args.text_columns) != len(spec.text_columns):
            from hfpipe.config.recipe import RecipeError

            raise RecipeError(
                f"task {spec.name} takes {len(spec.text_columns)} text column(s) "
                f"({', '.join(spec.text_columns)}), got {len(args.text_columns)}: {args.text_columns}",
                key="data.text_columns",
            )
        out.update(zip(spec.text_columns, args.text_columns))
    if args.label_column:
        out[spec.label_column] = args.label_column
    return out


def _resolve_columns(
    spec: TaskSpec, args: TaskDataArgs, found: Iterable[str], path: Path, where: str
) -> dict[str, str]:
    """Hub column -> the column of this file that holds it; a clear error when one is missing."""
    found = list(found)
    overridden = {c for c, s in _column_sources(spec, args).items() if s != c}
    out = {}
    for column, source in _column_sources(spec, args).items():
        candidates = [source] if column in overridden else [source, *_aliases(spec).get(column, [])]
        match = next((c for c in candidates if c in found), None)
        if match is None:
            hint = (
                ""
                if column in overridden
                else " (set data.text_columns / data.label_column to use other names)"
            )
            raise TaskDataError(
                path, where, candidates[0],
                f"missing column; columns found: {', '.join(map(str, found)) or 'none'}{hint}",
            )  # fmt: skip
        out[column] = match
    return out


def parse_label(spec: TaskSpec, value: Any, path: Path | str, where: str, column: str) -> int | float:
    """A label value -> class id (by name, or an id in range), or a float target for regression."""
    if spec.kind == "regression":
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if isinstance(value, bool) or not math.isfinite(number):
            raise TaskDataError(
                path, where, column, f"regression target must be a finite number, got {value!r}"
            )
        return number
    text = str(value).strip()
    if text in spec.label2id:
        return spec.label2id[text]
    if (
        not isinstance(value, (bool, float))
        and text.lstrip("-").isdigit()
        and 0 <= int(text) < spec.num_labels
    ):
        return int(text)
    names = ", ".join(spec.label_names)
    raise TaskDataError(
        path, where, column,
        f"label {value!r} is not in the label set of task {spec.name}: {names} (or an id 0..{spec.num_labels - 1})",
    )  # fmt: skip


def _text(value: Any, path: Path, where: str, column: str) -> str:
    if value is None or not str(value).strip():
        raise TaskDataError(path, where, column, "empty text")
    return str(value)


def _table_dataset(
    spec: TaskSpec, path: Path, records: Iterable[Record], args: TaskDataArgs, header: bool
) -> datasets.Dataset:
    """Sequence classification / regression rows -> Dataset(text columns..., label).

    `header`: the columns come from a header line (TSV/CSV), so a missing one is reported there.
    """
    import datasets

    columns: dict[str, list] = {c: [] for c in (*spec.text_columns, spec.label_column)}
    mapping = None
    for where, row in records:
        if mapping is None or not set(mapping.values()) <= row.keys():
            mapping = _resolve_columns(spec, args, row.keys(), path, "line 1 (header)" if header else where)
        for column in spec.text_columns:
            columns[column].append(_text(row[mapping[column]], path, where, mapping[column]))
        label_source = mapping[spec.label_column]
        columns[spec.label_column].append(parse_label(spec, row[label_source], path, where, label_source))
    if mapping is None:
        raise TaskDataError(path, "file", None, "no data rows")
    return datasets.Dataset.from_dict(columns, features=spec.features())


def _conll_dataset(
    spec: TaskSpec, path: Path, records: Iterable[Record] | None, args: TaskDataArgs
) -> datasets.Dataset:
    """CoNLL columns (records=None) or JSON records with token and tag lists -> Dataset(id, tokens, ner_tags)."""
    import datasets

    tokens_col, tags_col = spec.text_columns[0], spec.label_column
    ids, tokens, tags = [], [], []
    if records is None:
        for sentence in _read_conll(path):
            ids.append(str(len(ids)))
            tokens.append([word for _, word, _ in sentence])
            tags.append(
                [parse_label(spec, tag, path, f"line {i}", "NER (last column)") for i, _, tag in sentence]
            )
    else:
        for where, row in records:
            mapping = _resolve_columns(spec, args, row.keys(), path, where)
            words, labels = row[mapping[tokens_col]], row[mapping[tags_col]]
            if not isinstance(words, list) or not words:
                raise TaskDataError(path, where, mapping[tokens_col], "expected a non-empty list of words")
            if not isinstance(labels, list) or len(labels) != len(words):
                n = len(labels) if isinstance(labels, list) else type(labels).__name__
                raise TaskDataError(
                    path, where, mapping[tags_col], f"expected {len(words)} tags (one per word), got {n}"
                )
            ids.append(str(row.get("id", len(ids))))
            tokens.append([_text(w, path, where, mapping[tokens_col]) for w in words])
            tags.append([parse_label(spec, t, path, where, mapping[tags_col]) for t in labels])
    if not ids:
        raise TaskDataError(path, "file", None, "no sentences")
    return datasets.Dataset.from_dict(
        {"id": ids, tokens_col: tokens, tags_col: tags}, features=spec.features()
    )


def _squad_dataset(spec: TaskSpec, path: Path, records: Iterable[Record]) -> datasets.Dataset:
    """SQuAD records -> Dataset(id, title, context, question, answers{text, answer_start}), answers checked."""
    import datasets

    columns: dict[str, list] = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    for where, row in records:
        for column in ("id", "context", "question", "answers"):
            if row.get(column) is None:
                raise TaskDataError(path, where, column, f"missing column; columns found: {', '.join(row)}")
        context = _text(row["context"], path, where, "context")
        answers = _squad_answers(row["answers"], context, path, where)
        columns["id"].append(str(row["id"]))
        columns["title"].append(str(row.get("title") or ""))
        columns["context"].append(context)
        columns["question"].append(_text(row["question"], path, where, "question"))
        columns["answers"].append(answers)
    if not columns["id"]:
        raise TaskDataError(path, "file", None, "no questions")
    return datasets.Dataset.from_dict(columns, features=spec.features())


def _squad_answers(answers: Any, context: str, path: Path, where: str) -> dict[str, list]:
    """Official list of {text, answer_start} or the Hub's {text: [...], answer_start: [...]}; spans verified."""
    if isinstance(answers, dict):
        texts, starts = answers.get("text", []), answers.get("answer_start", [])
    elif isinstance(answers, list) and all(isinstance(a, dict) for a in answers):
        texts = [a.get("text") for a in answers]
        starts = [a.get("answer_start") for a in answers]
    else:
        raise TaskDataError(path, where, "answers", 'expected [{"text", "answer_start"}, ...]')
    if len(texts) != len(starts):
        raise TaskDataError(
            path, where, "answers", f"{len(texts)} texts but {len(starts)} answer_start values"
        )
    for text, start in zip(texts, starts):
        if (
            not isinstance(text, str)
            or not isinstance(start, int)
            or context[start : start + len(text)] != text
        ):
            found = (
                context[start : start + len(text)]
                if isinstance(start, int) and isinstance(text, str)
                else None
            )
            raise TaskDataError(
                path, where, "answers",
                f"answer {text!r} is not at answer_start={start!r} of the context (found {found!r})",
            )  # fmt: skip
    return {"text": list(texts), "answer_start": list(starts)}


# --------------------------------------------------------------------------------------------------
# The Hub.


def _offline_message(spec: TaskSpec, name: str, config: str | None, why: str) -> str:
    dataset = f"{name}/{config}" if config else name
    return (f"task {spec.name} loads {dataset!r} from the Hugging Face Hub, which is unreachable ({why}): "
            f"give local files instead, e.g. data.train_file=../shared/data/{spec.name}/train.tsv "
            f"data.validation_file=../shared/data/{spec.name}/dev.tsv (under hfpipe glue: {spec.name}:data.train_file=...)")


class HubUnreachableError(TaskDataError):
    """The task's data lives on the Hub and the Hub cannot be reached: one line, with the local-file form."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)


def hub_unreachable() -> str | None:
    """Why the Hugging Face Hub cannot be reached ("HF_HUB_OFFLINE=1", "no connection to ..."), or None.
    A 3-second TCP probe, so an offline user hears it at once instead of after ~40 s of retries."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE=1"
    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as e:
        return f"no connection to {url.hostname}: {e}"
    return None


def _load_hub(spec: TaskSpec, args: TaskDataArgs) -> datasets.DatasetDict:
    """The Hub dataset's splits renamed to ours (MNLI validation_matched -> validation), Hub columns kept."""
    import datasets

    name = args.dataset_name or spec.hub_dataset
    config = args.dataset_config if args.dataset_name else spec.hub_config
    offline = hub_unreachable()
    if offline and offline != "HF_HUB_OFFLINE=1":  # HF_HUB_OFFLINE=1 may still find datasets' cache: try it
        raise HubUnreachableError(_offline_message(spec, name, config, offline))
    try:
        hub = datasets.load_dataset(name, config)
    except Exception as e:  # offline, unknown name, script datasets: say which key to change
        if offline:
            raise HubUnreachableError(_offline_message(spec, name, config, offline)) from None
        raise RuntimeError(
            f"could not load Hub dataset {name!r} (config {config!r}) for task {spec.name}: {e} -- "
            "offline? use local files instead: data.train_file=... data.validation_file=..."
        ) from e
    out = datasets.DatasetDict()
    for split, hub_split in spec.hub_splits:
        if hub_split in hub:
            out[split] = hub[hub_split]
        elif split in ("train", "validation"):
            raise RuntimeError(f"Hub dataset {name!r} has no split {hub_split!r}; splits: {', '.join(hub)}")
    sources = _column_sources(spec, args)
    keep = [*sources.values(), *(["id"] if spec.kind == "token_classification" else [])]
    for split, ds in out.items():
        if spec.kind == "question_answering":
            continue  # the squad layout has no renamable columns
        missing = [c for c in sources.values() if c not in ds.column_names]
        if missing:
            raise RuntimeError(
                f"Hub dataset {name!r} split {split!r} has no column {missing[0]!r}; columns: "
                f"{', '.join(ds.column_names)} (set data.text_columns / data.label_column)"
            )
        ds = ds.select_columns([c for c in keep if c in ds.column_names])
        ds = ds.rename_columns({s: c for c, s in sources.items() if s != c})
        _check_hub_label_names(spec, ds, name)
        out[split] = ds
    return out


def _check_hub_label_names(spec: TaskSpec, ds: datasets.Dataset, name: str) -> None:
    """A Hub ClassLabel in another order than the task's would silently scramble labels: refuse it."""
    feature = ds.features[spec.label_column]
    feature = getattr(feature, "feature", feature)  # Sequence/List(ClassLabel) for NER
    names = getattr(feature, "names", None)
    if names is not None and tuple(names) != spec.label_names:
        raise RuntimeError(
            f"Hub dataset {name!r} labels {list(names)} differ from task {spec.name}'s {list(spec.label_names)}"
        )


# --------------------------------------------------------------------------------------------------
# A train/dev split of a SQuAD file by article (the shared data has only the dev set).


def split_squad_by_article(
    path: str | Path, out_dir: str | Path, n_eval_articles: int = 8
) -> tuple[Path, Path]:
    """Write `train.json` (all but the last `n_eval_articles` articles) and `dev.json` (those) to out_dir.

    Splitting by article keeps every paragraph's questions on one side, so no context is seen in
    training and evaluation both. Both files keep the official format and load as SQuAD JSON.
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    articles = data["data"]
    if not 0 < n_eval_articles < len(articles):
        raise ValueError(f"n_eval_articles must be in 1..{len(articles) - 1}, got {n_eval_articles}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    version = data.get("version", "1.1")
    train, dev = out_dir / "train.json", out_dir / "dev.json"
    train.write_text(json.dumps({"version": version, "data": articles[:-n_eval_articles]}), encoding="utf-8")
    dev.write_text(json.dumps({"version": version, "data": articles[-n_eval_articles:]}), encoding="utf-8")
    return train, dev
