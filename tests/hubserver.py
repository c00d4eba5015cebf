"""A small Hugging Face Hub-compatible HTTP server for tests (stdlib only, 127.0.0.1, threaded).

It answers the endpoints the real ``huggingface_hub`` client calls for:

- ``GET /api/models`` (author, search, filter (repeatable), limit, full/expand; pages via a Link header);
- ``GET /api/models/{repo}`` and ``/api/models/{repo}/revision/{rev}`` (sha, siblings, ``blobs=1`` sizes/LFS);
- ``GET /api/models/{repo}/tree/{rev}[/{path}]`` (``recursive``, paged by a Link header, 404 for a missing folder);
- ``HEAD|GET /{repo}/resolve/{rev}/{file}`` (ETag, X-Repo-Commit, Content-Length, X-Linked-*; ``Range: bytes=A-[B]``
  answered 206 with that part);
- ``POST /api/repos/create``, ``POST /api/validate-yaml``;
- ``POST /api/models/{repo}/preupload/{rev}`` and ``/commit/{rev}`` (files sent inline, base64 ndjson).

Repos are in memory, every commit gets a sha1; ``fail_next`` makes chosen requests answer 429/5xx/4xx,
``stall_next`` makes them wait (longer than a client's timeout) before answering, and ``requests`` records what
the client sent (method, path, headers) for assertions, ``sent`` the body bytes answered per path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


def git_blob_sha1(data: bytes) -> str:
    """Git's blob object id (what the Hub reports for non-LFS files)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Commit:
    sha: str
    files: dict[str, bytes]
    message: str
    created: float


@dataclass
class Repo:
    repo_id: str
    tags: list[str] = field(default_factory=list)
    private: bool = False
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def at(self, revision: str) -> Commit | None:
        if revision in ("main", "HEAD"):
            return self.head if self.commits else None
        for commit in self.commits:
            if commit.sha == revision or (len(revision) >= 7 and commit.sha.startswith(revision)):
                return commit
        return None


@dataclass
class Fault:
    pattern: re.Pattern
    status: int | None  # None: answer normally, after ``delay``
    remaining: int
    retry_after: float | None
    method: str | None
    delay: float = 0.0


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def header(self, name: str) -> str | None:
        """A request header, case-insensitively."""
        wanted = name.lower()
        return next((v for k, v in self.headers.items() if k.lower() == wanted), None)


class HubState:
    """Everything the server knows: repos, tokens, injected faults and the request log."""

    def __init__(self, page_size: int = 2, tree_page_size: int = 1000) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, str] = {}
        self.page_size = page_size
        self.tree_page_size = tree_page_size  # the Hub pages tree listings by 1000 entries (50 with expand)
        self.faults: list[Fault] = []
        self.stalled: dict[str, threading.Event] = {}  # path → set when the stalled request's client asks again
        self.abandoned = 0  # stalled requests whose client gave up (timed out) and asked again
        self.requests: list[RecordedRequest] = []
        self.sent: dict[str, int] = {}  # path → body bytes answered to its requests
        self.sent_lock = threading.Lock()
        self.ignore_range = False  # answer ranged GETs with the whole file (200), as some servers do
        self.lock = threading.Lock()

    # -- setup helpers used by tests ---------------------------------------------------------------
    def add_repo(self, repo_id: str, files: dict[str, bytes], tags: list[str] | None = None,
                 message: str = "initial commit") -> str:
        """Create or update a repo with ``files`` as a new commit; return the commit sha."""
        with self.lock:
            repo = self.repos.setdefault(repo_id, Repo(repo_id=repo_id))
            if tags is not None:
                repo.tags = list(tags)
            base = dict(repo.head.files) if repo.commits else {}
            base.update(files)
            return self._commit(repo, base, message)

    def _commit(self, repo: Repo, files: dict[str, bytes], message: str) -> str:
        seed = f"{repo.repo_id}\0{len(repo.commits)}\0{message}\0{time.time_ns()}".encode()
        digest = hashlib.sha1(seed + b"".join(hashlib.sha1(files[k]).digest() for k in sorted(files))).hexdigest()
        repo.commits.append(Commit(sha=digest, files=files, message=message, created=time.time()))
        return digest

    def fail_next(self, path_regex: str, status: int, count: int = 1, retry_after: float | None = None,
                  method: str | None = None) -> None:
        """The next ``count`` requests whose path matches ``path_regex`` answer ``status``."""
        with self.lock:
            self.faults.append(Fault(re.compile(path_regex), status, count, retry_after, method))

    def stall_next(self, path_regex: str, seconds: float, count: int = 1, method: str | None = None) -> None:
        """The next ``count`` requests whose path matches wait up to ``seconds`` before they are answered; a client
        that times out and asks for the same path again ends the wait and counts in ``abandoned``."""
        with self.lock:
            self.faults.append(Fault(re.compile(path_regex), None, count, None, method, seconds))

    def count(self, method: str, path_regex: str) -> int:
        """How many recorded requests match."""
        pattern = re.compile(path_regex)
        return sum(1 for r in self.requests if r.method == method and pattern.search(r.path))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.remaining > 0 and fault.pattern.search(path) and fault.method in (None, method):
                    fault.remaining -= 1
                    return fault
        return None


class HubHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HubServer

    def log_message(self, format: str, *args) -> None:
        return

    # -- plumbing ------------------------------------------------------------------------------------
    @property
    def state(self) -> HubState:
        return self.server.state

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head_only: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if not head_only and self.command != "HEAD":  # a HEAD answer has no body, errors included
            path = urlsplit(self.path).path
            with self.state.sent_lock:  # not ``lock``: some routes answer while holding it
                self.state.sent[path] = self.state.sent.get(path, 0) + len(body)
            self.wfile.write(body)

    def _json(self, status: int, value, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(value).encode(), headers)

    def _error(self, status: int, message: str, error_code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if error_code:
            headers["X-Error-Code"] = error_code
        self._json(status, {"error": message}, headers)

    def _user(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            return self.state.tokens.get(auth[len("Bearer "):])
        return None

    def _dispatch(self, method: str) -> None:
        path = urlsplit(self.path).path
        body = self._body() if method in ("POST", "PUT") else b""
        with self.state.lock:
            self.state.requests.append(RecordedRequest(method, self.path, dict(self.headers.items()), body))
        with self.state.lock:
            waiting = self.state.stalled.get(path)
            if waiting is not None and not waiting.is_set():
                waiting.set()
                self.state.abandoned += 1
        fault = self.state._take_fault(method, path)
        if fault is not None and fault.delay:
            released = threading.Event()
            with self.state.lock:
                self.state.stalled[path] = released
            released.wait(fault.delay)
            with self.state.lock:
                self.state.stalled.pop(path, None)
        if fault is not None and fault.status is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            self._json(fault.status, {"error": f"injected {fault.status}"}, headers)
            return
        try:
            self._route(method, path, body)
        except Exception as err:  # noqa: BLE001 - a test server answers 500 rather than hanging the client
            self._error(500, f"test hub server error: {type(err).__name__}: {err}")

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    # -- routes --------------------------------------------------------------------------------------
    def _route(self, method: str, path: str, body: bytes) -> None:
        query = parse_qs(urlsplit(self.path).query)
        if method == "GET" and path == "/api/models":
            return self._list_models(query)
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(json.loads(body or b"{}"))
        if method == "POST" and path == "/api/validate-yaml":
            return self._json(200, {"errors": [], "warnings": []})
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if method == "GET" and match:
            return self._model_info(match.group(1), unquote(match.group(2) or "main"), query)
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if method == "GET" and match:
            return self._tree(match.group(1), unquote(match.group(2)), unquote(match.group(3) or ""), query)
        match = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
        if method == "POST" and match:
            repo_id, action, revision = match.group(1), match.group(2), unquote(match.group(3))
            if action == "preupload":
                return self._preupload(repo_id, revision, json.loads(body))
            return self._commit(repo_id, revision, body)
        match = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if method in ("GET", "HEAD") and match:
            return self._resolve(match.group(1), unquote(match.group(2)), unquote(match.group(3)), method == "HEAD")
        return self._error(404, f"no route for {method} {path}")

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.state.repos.get(repo_id)
        if repo is None or not repo.commits:
            self._error(404, "Repository not found", "RepoNotFound")
            return None
        if repo.private and self._user() != repo_id.split("/")[0]:
            self._error(401, "Repository not found", "RepoNotFound")
            return None
        return repo

    def _siblings(self, commit: Commit, blobs: bool) -> list[dict]:
        out = []
        for name in sorted(commit.files):
            data = commit.files[name]
            entry: dict = {"rfilename": name}
            if blobs:
                entry.update(size=len(data), blobId=git_blob_sha1(data))
                if name.endswith(LFS_SUFFIXES):
                    entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            out.append(entry)
        return out

    def _model_json(self, repo: Repo, commit: Commit, blobs: bool) -> dict:
        author = repo.repo_id.split("/")[0]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(commit.created))
        return {
            "_id": hashlib.md5(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "modelId": repo.repo_id,
            "author": author,
            "sha": commit.sha,
            "lastModified": stamp,
            "createdAt": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo.commits[0].created)),
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(repo.tags),
            "library_name": "peft" if "peft" in repo.tags else None,
            "siblings": self._siblings(commit, blobs),
        }

    def _list_models(self, query: dict[str, list[str]]) -> None:
        author = (query.get("author") or [None])[0]
        search = (query.get("search") or [None])[0]
        filters = query.get("filter") or []
        limit = int((query.get("limit") or ["0"])[0]) or None
        cursor = int((query.get("cursor") or ["0"])[0])
        full = bool(query.get("full")) or "siblings" in (query.get("expand") or [])
        user = self._user()
        matches = []
        for repo_id in sorted(self.state.repos):
            repo = self.state.repos[repo_id]
            if not repo.commits or (repo.private and user != repo_id.split("/")[0]):
                continue
            if author and repo_id.split("/")[0] != author:
                continue
            if search and search.lower() not in repo_id.lower():
                continue
            if any(tag not in repo.tags for tag in filters):
                continue
            matches.append(repo)
        if limit:
            matches = matches[:limit]
        page = matches[cursor:cursor + self.state.page_size]
        items = []
        for repo in page:
            item = self._model_json(repo, repo.head, blobs=False)
            if not full:
                item.pop("siblings")
            items.append(item)
        headers = {}
        if cursor + self.state.page_size < len(matches):
            params = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
            params.append(("cursor", str(cursor + self.state.page_size)))
            headers["Link"] = f'<{self.server.endpoint}/api/models?{urlencode(params)}>; rel="next"'
        self._json(200, items, headers)

    def _commit_at(self, repo_id: str, revision: str) -> tuple[Repo, Commit] | None:
        """The repository and its commit at ``revision``; None after answering 404/401."""
        repo = self._repo(repo_id)
        if repo is None:
            return None
        commit = repo.at(revision)
        if commit is None:
            self._error(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return None
        return repo, commit

    def _model_info(self, repo_id: str, revision: str, query: dict[str, list[str]]) -> None:
        found = self._commit_at(repo_id, revision)
        if found is None:
            return
        repo, commit = found
        self._json(200, self._model_json(repo, commit, blobs=bool(query.get("blobs"))))

    def _tree(self, repo_id: str, revision: str, prefix: str, query: dict[str, list[str]]) -> None:
        """``GET /api/models/{repo}/tree/{rev}[/{path}]`` as the Hub answers it: the folder's entries (files with
        size, blob oid and LFS info; folders as ``type: directory``), every level below it with
        ``recursive=true``, paged by a ``Link: <...cursor=...>; rel="next"`` header (``tree_page_size`` entries
        a page); 404 ``EntryNotFound`` for a path that is not a folder of that commit."""
        found = self._commit_at(repo_id, revision)
        if found is None:
            return
        repo, commit = found
        prefix = prefix.strip("/")
        recursive = (query.get("recursive") or ["false"])[0].lower() in ("1", "true")
        below = {name[len(prefix) + 1:] if prefix else name: name for name in commit.files
                 if not prefix or name.startswith(prefix + "/")}
        if prefix and not below:
            return self._error(404, f"{prefix} does not exist on {revision}", "EntryNotFound")
        entries: dict[str, dict] = {}
        for relative, name in below.items():
            parts = relative.split("/")
            depth = len(parts) if recursive else 1
            for i in range(1, min(depth, len(parts) - 1) + 1):  # the folders on the way
                folder = "/".join(filter(None, [prefix, *parts[:i]]))
                entries.setdefault(folder, {"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                            "size": 0, "path": folder})
            if len(parts) == 1 or recursive:
                data = commit.files[name]
                item = {"type": "file", "oid": git_blob_sha1(data), "size": len(data), "path": name}
                if name.endswith(LFS_SUFFIXES):
                    item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                entries[name] = item
        items = [entries[k] for k in sorted(entries)]
        cursor = int((query.get("cursor") or ["0"])[0])
        size = self.state.tree_page_size
        headers = {}
        if cursor + size < len(items):
            params = [(k, v) for k, values in query.items() if k != "cursor" for v in values]
            params.append(("cursor", str(cursor + size)))
            headers["Link"] = f'<{self.server.endpoint}{urlsplit(self.path).path}?{urlencode(params)}>; rel="next"'
        self._json(200, items[cursor:cursor + size], headers)

    def _resolve(self, repo_id: str, revision: str, filename: str, head_only: bool) -> None:
        found = self._commit_at(repo_id, revision)
        if found is None:
            return
        repo, commit = found
        if filename not in commit.files:
            return self._error(404, "Entry not found", "EntryNotFound")
        data = commit.files[filename]
        etag = hashlib.sha256(data).hexdigest() if filename.endswith(LFS_SUFFIXES) else git_blob_sha1(data)
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes"}
        range_header = self.headers.get("Range")
        if range_header and not head_only and not self.state.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header.strip())
            start = int(match.group(1))
            end = min(int(match.group(2)), len(data) - 1) if match.group(2) else len(data) - 1
            if start > end:
                return self._error(416, "Requested Range Not Satisfiable")
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            return self._send(206, data[start:end + 1], headers, "application/octet-stream")
        self._send(200, data, headers, "application/octet-stream", head_only=head_only)

    def _create_repo(self, payload: dict) -> None:
        user = self._user()
        if user is None:
            return self._error(401, "Invalid credentials in Authorization header")
        name, org = payload.get("name"), payload.get("organization") or user
        if org != user and org not in self.server.orgs_of(user):
            return self._error(403, f"You don't have the rights to create a model under the namespace {org!r}")
        repo_id = f"{org}/{name}"
        with self.state.lock:
            if repo_id in self.state.repos:
                return self._json(409, {"error": "You already created this model repo",
                                        "url": f"{self.server.endpoint}/{repo_id}"},
                                  {"X-Error-Message": "You already created this model repo"})
            repo = Repo(repo_id=repo_id, private=payload.get("visibility") == "private")
            self.state.repos[repo_id] = repo
            self.state._commit(repo, {".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"},
                               "initial commit")
        self._json(200, {"url": f"{self.server.endpoint}/{repo_id}", "name": repo_id})

    def _writable_repo(self, repo_id: str) -> Repo | None:
        user = self._user()
        if user is None:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        repo = self._repo(repo_id)
        if repo is None:
            return None
        owner = repo_id.split("/")[0]
        if owner != user and owner not in self.server.orgs_of(user):
            self._error(403, f"You don't have write access to {repo_id}")
            return None
        return repo

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        repo = self._writable_repo(repo_id)
        if repo is None:
            return
        commit = repo.at(revision)
        files = []
        for entry in payload.get("files", []):
            existing = commit.files.get(entry["path"]) if commit else None
            files.append({
                "path": entry["path"],
                "uploadMode": "regular",
                "shouldIgnore": False,
                "oid": git_blob_sha1(existing) if existing is not None else None,
            })
        self._json(200, {"files": files, "commitOid": commit.sha if commit else None})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        repo = self._writable_repo(repo_id)
        if repo is None:
            return
        if revision != "main":
            return self._error(400, "commits are only supported on main in the test hub")
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return self._error(400, "commit payload must start with a header line")
        header = lines[0]["value"]
        with self.state.lock:
            parent = header.get("parentCommit")
            if parent and parent != repo.head.sha:
                return self._error(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.head.files)
            for line in lines[1:]:
                value = line["value"]
                if line["key"] == "file":
                    if value.get("encoding") != "base64":
                        return self._error(400, "only base64 file encoding is supported")
                    files[value["path"]] = base64.b64decode(value["content"])
                elif line["key"] == "deletedFile":
                    files.pop(value["path"], None)
                else:
                    return self._error(400, f"unsupported commit operation {line['key']!r} in the test hub")
            sha = self.state._commit(repo, files, header.get("summary", ""))
        self._json(200, {"commitUrl": f"{self.server.endpoint}/{repo_id}/commit/{sha}", "commitOid": sha,
                         "success": True, "pullRequestUrl": None})


class HubServer(ThreadingHTTPServer):
    """The threaded server; ``endpoint`` is its base URL, ``state`` its data."""

    daemon_threads = True
    request_queue_size = 128
    block_on_close = False

    def __init__(self, state: HubState | None = None) -> None:
        super().__init__(("127.0.0.1", 0), HubHandler)
        self.state = state or HubState()
        self.endpoint = f"http://127.0.0.1:{self.server_address[1]}"
        self.org_members: dict[str, set[str]] = {}
        self._thread: threading.Thread | None = None

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):  # a client that timed out and left is expected
            super().handle_error(request, client_address)

    def orgs_of(self, user: str) -> set[str]:
        return {org for org, members in self.org_members.items() if user in members}

    def start(self) -> HubServer:
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def repo_url(endpoint: str, repo_id: str) -> str:
    return f"{endpoint}/{quote(repo_id)}"
