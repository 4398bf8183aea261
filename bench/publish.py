"""Published figures come from results files, never from hand edits.

    python bench/publish.py            # rewrite every marked block in README.md and docs/*.md
    python bench/publish.py --check    # exit 1 naming each block that differs, or a stale results file
    python bench/publish.py --check --strict   # also fail on blocks whose results file is not there yet

A block is the text between `<!-- bench:FILE/TABLE -->` and `<!-- /bench:FILE/TABLE -->`: the table
TABLE of bench/results/FILE.json (`{"tables": {TABLE: {"columns", "rows", "note"}}}`) as markdown, then
one provenance line (commit, date, CPU model and speed flags, cores, load before/after, command).

A results file is stale when the last commit that changed any path in its "measures" list is not an
ancestor of (or equal to) the commit it measured (`git merge-base --is-ancestor`): the code changed
since the figures were made. A results file measured on a dirty tree is never current.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NOT_MEASURED = "not measured yet at this commit: run `make bench`"
MARKER = re.compile(r"<!-- bench:(?P<file>[\w.-]+)/(?P<table>[\w.-]+) -->\n(?P<body>.*?)"
                    r"<!-- /bench:(?P=file)/(?P=table) -->", re.DOTALL)


def documents(root: Path) -> list[Path]:
    """The files that may carry markers: README.md and docs/*.md."""
    return [p for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))] if p.is_file()]


def load_results(root: Path, name: str) -> dict | None:
    path = root / "bench" / "results" / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def provenance_line(prov: dict) -> str:
    """One line a reader can check the figures against."""
    machine = prov.get("machine") or {}
    commit = (prov.get("commit") or "unknown")[:9] + (" (dirty)" if prov.get("dirty") else "")
    flags = ", ".join(machine.get("flags") or []) or "no speed flags recorded"
    cores = machine.get("usable_cores", machine.get("cores", "?"))
    load = f"{prov.get('load_before')} → {prov.get('load_after')}"
    return (f"<sub>commit {commit} · {prov.get('date', 'undated')} · {machine.get('model', 'unknown CPU')} "
            f"({flags}) · {cores} cores · load {load} · `{prov.get('command', '?')}`</sub>")


def render_table(table: dict) -> str:
    cols = table["columns"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in table["rows"]]
    if table.get("note"):
        lines += ["", table["note"]]
    return "\n".join(lines)


def render_block(root: Path, file: str, table: str) -> tuple[str, str]:
    """(body, status): status is 'ok', 'not measured' (no results file, or an old one without tables)
    or 'missing table' (the file has tables, but not this one)."""
    results = load_results(root, file)
    if results is None or "tables" not in results:
        return NOT_MEASURED + "\n", "not measured"
    if table not in results["tables"]:
        return NOT_MEASURED + "\n", "missing table"
    return render_table(results["tables"][table]) + "\n\n" + provenance_line(results.get("provenance", {})) + "\n", "ok"


def publish(root: Path) -> tuple[dict[Path, str], list[str], set[str]]:
    """Every document as it should read, problems found while rendering, and the results files the
    markers reference (only those that exist)."""
    rendered, problems, referenced = {}, [], set()

    def replace(match: re.Match, doc: Path) -> str:
        file, table = match["file"], match["table"]
        body, status = render_block(root, file, table)
        if status != "not measured":
            referenced.add(file)
        if status == "missing table":
            problems.append(f"{doc.relative_to(root)}: bench:{file}/{table}: bench/results/{file}.json has no table "
                            f"{table!r} (it has {', '.join(load_results(root, file)['tables']) or 'none'})")
        return f"<!-- bench:{file}/{table} -->\n{body}<!-- /bench:{file}/{table} -->"

    for doc in documents(root):
        text = doc.read_text()
        rendered[doc] = MARKER.sub(lambda m, d=doc: replace(m, d), text)
    return rendered, problems, referenced


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)


def stale(root: Path, name: str) -> str | None:
    """Why bench/results/NAME.json does not describe the code at HEAD, or None when it does."""
    results = load_results(root, name) or {}
    prov, measures = results.get("provenance") or {}, results.get("measures") or []
    where = f"bench/results/{name}.json"
    if prov.get("dirty"):
        return f"{where}: measured on a dirty tree ({', '.join(prov['dirty'][:3])}): re-run it on a commit"
    if not prov.get("commit"):
        return f"{where}: its provenance names no commit: re-run it with bench/provenance.py's write_results"
    if not measures:
        return f"{where}: has no \"measures\" list, so its staleness cannot be checked: add the paths it measures"
    last = _git(root, "log", "-1", "--format=%H", "--", *measures).stdout.strip()
    if not last:
        return f"{where}: no commit touches its measured paths {measures}: fix \"measures\""
    if _git(root, "cat-file", "-e", f"{prov['commit']}^{{commit}}").returncode != 0:
        return f"{where}: measured at {prov['commit'][:9]}, a commit this repository does not have: re-run it"
    if _git(root, "merge-base", "--is-ancestor", last, prov["commit"]).returncode != 0:
        return (f"{where}: measured at {prov['commit'][:9]} but {last[:9]} changed {', '.join(measures)} "
                f"since: re-run `{prov.get('command', 'its benchmark')}`")
    return None


def check(root: Path, strict: bool = False) -> list[str]:
    """Every reason the published figures are not what the results files say (empty when they are)."""
    rendered, problems, referenced = publish(root)
    for doc, text in rendered.items():
        current = doc.read_text()
        for match in MARKER.finditer(current):
            ident = f"bench:{match['file']}/{match['table']}"
            want = next(m for m in MARKER.finditer(text) if f"bench:{m['file']}/{m['table']}" == ident)["body"]
            if match["body"] != want:
                problems.append(f"{doc.relative_to(root)}: {ident} differs from bench/results/{match['file']}.json: "
                                "run `python bench/publish.py`")
            elif strict and want == NOT_MEASURED + "\n":
                problems.append(f"{doc.relative_to(root)}: {ident}: {NOT_MEASURED}")
    problems += [reason for name in sorted(referenced) if (reason := stale(root, name))]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if anything is out of date")
    parser.add_argument("--strict", action="store_true", help="with --check: a block not measured yet fails too")
    parser.add_argument("--root", type=Path, default=REPO, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    root = args.root.resolve()
    if args.check:
        problems = check(root, strict=args.strict)
        for p in problems:
            print(f"bench/publish.py --check: {p}", file=sys.stderr)
        if not problems:
            print("bench/publish.py --check: every published block matches its results file, none stale")
        return 1 if problems else 0
    rendered, problems, _ = publish(root)
    for doc, text in rendered.items():
        if doc.read_text() != text:
            doc.write_text(text)
            print(f"wrote {doc.relative_to(root)}")
    for p in problems:
        print(f"bench/publish.py: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
