"""A TEST DOUBLE of the Hugging Face Hub's HTTP protocol -- not the Hub, and not for production.

The test suite cannot reach huggingface.co, so `tests/test_hub.py` starts this small in-memory server on
127.0.0.1 (ephemeral port), points `HF_ENDPOINT` at it and drives the *real* `huggingface_hub` client
against it: `create_repo`, `create_branch`, `upload_folder` (preupload + commit), `repo_info`,
`list_repo_tree`, `hf_hub_download` / `snapshot_download`, and transformers' `from_pretrained`.

    with HubServer(token="hf_test") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_test", "HF_HUB_OFFLINE": "0"}
        ...                                   # run the client in a subprocess with `env`
        hub.fail(500, endpoints={"commit"})   # inject failures; hub.heal() undoes it

Only the endpoints that huggingface_hub calls for those operations are implemented, read from its
source (version 2.4: hf_api.py, _commit_api.py, _upload_pipeline.py, file_download.py). Simplifications,
on purpose:
- The preupload answer puts every file in uploadMode "regular", so file contents travel base64-inline
  in the NDJSON commit. (The real Hub stores *.safetensors through Xet/LFS; this double has no LFS.)
- Repos are models only; ids must be "namespace/name"; no pagination, no PRs, no tags.
- Standard library only (http.server + threading), so it runs wherever the tests run.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

INITIAL_GITATTRIBUTES = b"# created by the test Hub (no LFS: every file is stored as a regular blob)\n"


def git_blob_oid(content: bytes) -> str:
    """The git sha1 of a blob: what the Hub reports as a regular file's oid and ETag."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]  # the full snapshot of the repo at this commit


@dataclass
class Repo:
    repo_id: str
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit sha
    commits: dict[str, Commit] = field(default_factory=dict)  # sha -> commit

    def add_commit(self, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        parent = self.branches.get(branch)
        digest = hashlib.sha1(f"{self.repo_id}\n{parent}\n{message}\n{len(self.commits)}".encode())
        for path in sorted(files):
            digest.update(f"{path}:{git_blob_oid(files[path])}\n".encode())
        commit = Commit(sha=digest.hexdigest(), parent=parent, message=message, files=dict(files))
        self.commits[commit.sha] = commit
        self.branches[branch] = commit.sha
        return commit

    def resolve(self, revision: str) -> Commit | None:
        """A branch name or a full commit sha -> that commit (None if unknown)."""
        sha = self.branches.get(revision, revision)
        return self.commits.get(sha)


class _Reply(Exception):
    """Raised by a route to answer with an HTTP error (carries the Hub's X-Error-Code header)."""

    def __init__(self, status: int, message: str, error_code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.error_code = status, message, error_code


class HubServer:
    """In-memory Hub double. `requests` logs (method, path, endpoint name) of every request served."""

    def __init__(self, token: str = "hf_test_token", user: str = "hfpipe-tester"):
        self.token, self.user = token, user
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, str]] = []
        self._fail_status: int | None = None
        self._fail_endpoints: set[str] | None = None
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> HubServer:
        server = self

        class Handler(_Handler):
            hub = server

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._httpd is not None, "start() the server first"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    # --- failure injection -----------------------------------------------------------------------
    def fail(self, status: int = 500, endpoints: set[str] | None = None) -> None:
        """Answer `status` for every request (endpoints=None) or for the named endpoints only:
        create_repo, branch, validate_yaml, preupload, commit, info, tree, refs, resolve, whoami."""
        self._fail_status, self._fail_endpoints = status, endpoints

    def heal(self) -> None:
        self._fail_status, self._fail_endpoints = None, None

    # --- introspection helpers for tests ---------------------------------------------------------
    def calls(self, endpoint: str) -> int:
        return sum(1 for _, _, name in self.requests if name == endpoint)

    def head(self, repo_id: str, branch: str = "main") -> Commit:
        repo = self.repos[repo_id]
        return repo.commits[repo.branches[branch]]


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep pytest output clean
        pass

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # --- plumbing --------------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        parts = split.path.strip("/").split("/")  # still URL-quoted: revisions are quoted with safe=""
        query = {k: v[-1] for k, v in parse_qs(split.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        name, route = _route(method, parts)
        self.hub.requests.append((method, split.path, name))
        try:
            status = self.hub._fail_status
            if status is not None and (self.hub._fail_endpoints is None or name in self.hub._fail_endpoints):
                raise _Reply(status, f"Injected failure: HTTP {status} on endpoint '{name}'")
            if route is None:
                raise _Reply(404, f"Not implemented by the test Hub: {method} {split.path}")
            with self.hub._lock:
                route(self, parts, query, body)
        except _Reply as reply:
            # Retry-After: 0 makes huggingface_hub's retries on 5xx (5 of them) take ~5 s instead of ~23 s.
            headers = {
                "X-Error-Message": reply.message,
                **({"Retry-After": "0"} if reply.status >= 500 else {}),
            }
            if reply.error_code:
                headers["X-Error-Code"] = reply.error_code
            self._send_json(reply.status, {"error": reply.message}, headers)

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, payload: object, headers: dict[str, str] | None = None) -> None:
        self._send(
            status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})}
        )

    def _authorized(self) -> bool:
        return self.headers.get("Authorization") == f"Bearer {self.hub.token}"

    def _require_auth(self) -> None:
        if not self._authorized():
            raise _Reply(401, "Invalid credentials in Authorization header")

    def _repo(self, parts: list[str], first: int) -> Repo:
        repo_id = f"{unquote(parts[first])}/{unquote(parts[first + 1])}"
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            raise _Reply(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _commit(self, repo: Repo, quoted_revision: str) -> Commit:
        revision = unquote(quoted_revision)
        commit = repo.resolve(revision)
        if commit is None:
            raise _Reply(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # --- routes ----------------------------------------------------------------------------------
    def create_repo(self, parts, query, body) -> None:
        self._require_auth()
        payload = json.loads(body or b"{}")
        if payload.get("type", "model") != "model":
            raise _Reply(400, "The test Hub only hosts model repos")
        repo_id = f"{payload.get('organization') or self.hub.user}/{payload['name']}"
        url = f"{self.hub.url}/{repo_id}"
        if repo_id in self.hub.repos:
            self._send_json(409, {"error": "You already created this model repo", "url": url})
            return
        repo = Repo(repo_id=repo_id, private=payload.get("visibility", "public") == "private")
        repo.add_commit("main", "initial commit", {".gitattributes": INITIAL_GITATTRIBUTES})
        self.hub.repos[repo_id] = repo
        self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def create_branch(self, parts, query, body) -> None:
        self._require_auth()
        repo = self._repo(parts, 2)
        branch = unquote(parts[5])
        if branch in repo.branches:
            raise _Reply(409, f"Reference already exists: refs/heads/{branch}")
        start = json.loads(body or b"{}").get("startingPoint") or "main"
        repo.branches[branch] = self._commit(repo, start).sha
        self._send_json(200, {})

    def validate_yaml(self, parts, query, body) -> None:
        self._send_json(200, {"errors": [], "warnings": []})

    def agent_harnesses(self, parts, query, body) -> None:
        self._send_json(200, {"standardEnvVars": [], "harnesses": {}})

    def whoami(self, parts, query, body) -> None:
        self._require_auth()
        self._send_json(
            200, {"type": "user", "name": self.hub.user, "orgs": [], "auth": {"type": "access_token"}}
        )

    def preupload(self, parts, query, body) -> None:
        self._require_auth()
        commit = self._commit(self._repo(parts, 2), parts[5])
        files = []
        for item in json.loads(body)["files"]:
            existing = commit.files.get(item["path"])
            oid = git_blob_oid(existing) if existing is not None else None
            files.append({"path": item["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
        self._send_json(200, {"files": files, "commitOid": commit.sha})

    def commit(self, parts, query, body) -> None:
        self._require_auth()
        repo = self._repo(parts, 2)
        branch = unquote(parts[5])
        files = dict(self._commit(repo, parts[5]).files)
        message = ""
        for line in body.splitlines():
            op = json.loads(line)
            key, value = op["key"], op["value"]
            if key == "header":
                message = value["summary"]
                if value.get("parentCommit") not in (None, repo.branches.get(branch)):
                    raise _Reply(412, "parentCommit is not the head of the branch")
            elif key == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: c for p, c in files.items() if not p.startswith(prefix)}
            else:
                raise _Reply(400, f"The test Hub does not support commit operation '{key}' (no LFS/Xet)")
        new = repo.add_commit(branch, message, files)
        url = f"{self.hub.url}/{repo.repo_id}/commit/{new.sha}"
        self._send_json(200, {"success": True, "commitOid": new.sha, "commitUrl": url})

    def info(self, parts, query, body) -> None:
        repo = self._repo(parts, 2)
        commit = self._commit(repo, parts[5] if len(parts) > 5 else "main")
        siblings = [
            {"rfilename": p, "size": len(c), "blobId": git_blob_oid(c)}
            for p, c in sorted(commit.files.items())
        ]
        info = {
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "private": repo.private,
        }
        self._send_json(200, {**info, "modelId": repo.repo_id, "siblings": siblings, "tags": []})

    def tree(self, parts, query, body) -> None:
        commit = self._commit(self._repo(parts, 2), parts[5])
        folder = "/".join(unquote(p) for p in parts[6:]).strip("/")
        prefix = folder + "/" if folder else ""
        recursive = query.get("recursive", "false").lower() == "true"
        entries: dict[str, dict] = {}
        for path, content in sorted(commit.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :].split("/")
            for depth in range(1, len(rest)):  # the folders on the way to this file
                if depth > 1 and not recursive:
                    break
                sub = prefix + "/".join(rest[:depth])
                entries.setdefault(sub, {"type": "directory", "path": sub, "oid": "0" * 40, "size": 0})
            if recursive or len(rest) == 1:
                entries[path] = {
                    "type": "file",
                    "path": path,
                    "size": len(content),
                    "oid": git_blob_oid(content),
                }
        if folder and not entries:
            raise _Reply(404, f"Path {folder} not found", "EntryNotFound")
        self._send_json(200, list(entries.values()))

    def refs(self, parts, query, body) -> None:
        repo = self._repo(parts, 2)
        branches = [
            {"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in repo.branches.items()
        ]
        self._send_json(200, {"branches": branches, "tags": [], "converts": []})

    def resolve(self, parts, query, body) -> None:
        repo = self._repo(parts, 0)
        commit = self._commit(repo, parts[3])
        path = "/".join(unquote(p) for p in parts[4:])
        content = commit.files.get(path)
        headers = {"X-Repo-Commit": commit.sha}
        if content is None:
            raise _Reply(404, f"Entry not found: {path}", "EntryNotFound")
        headers.update({"ETag": f'"{git_blob_oid(content)}"', "Content-Type": "application/octet-stream"})
        self._send(200, content, headers)


def _route(method: str, parts: list[str]):
    """(endpoint name, handler) for a request path split on '/'; (name, None) when unsupported."""
    n = len(parts)
    if parts[:2] == ["api", "repos"] and n == 3 and parts[2] == "create" and method == "POST":
        return "create_repo", _Handler.create_repo
    if parts[:2] == ["api", "validate-yaml"] and method == "POST":
        return "validate_yaml", _Handler.validate_yaml
    if parts[:2] == ["api", "whoami-v2"]:
        return "whoami", _Handler.whoami
    if parts[:2] == ["api", "agent-harnesses"]:  # client telemetry registry: answer "no agents known"
        return "agent_harnesses", _Handler.agent_harnesses
    if parts[:2] == ["api", "models"] and n >= 4:
        action = parts[4] if n > 4 else None
        table = {
            (None, "GET"): ("info", _Handler.info),
            ("revision", "GET"): ("info", _Handler.info),
            ("tree", "GET"): ("tree", _Handler.tree),
            ("refs", "GET"): ("refs", _Handler.refs),
            ("branch", "POST"): ("branch", _Handler.create_branch),
            ("preupload", "POST"): ("preupload", _Handler.preupload),
            ("commit", "POST"): ("commit", _Handler.commit),
        }
        return table.get((action, method), (f"api:{action}", None))
    if n >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
        return "resolve", _Handler.resolve
    return "unknown", None
