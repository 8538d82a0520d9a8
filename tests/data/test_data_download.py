"""Downloads against a local http.server (never the real internet) and data-dir resolution."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

import nodeprobe.data.download as dl
import nodeprobe.data_home as data_home
from nodeprobe.data import ensure_file, fetch, resolve_data_dir
from nodeprobe.errors import NodeprobeError

PAYLOAD = b'{"P1": []}\n' * 1000


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "srv"
    root.mkdir()
    (root / "file.json").write_bytes(PAYLOAD)
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            hits.append(self.path)
            super().do_GET()

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    t = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_good_checksums(server, tmp_path):
    url, hits = server
    dest = tmp_path / "out"
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    md5 = hashlib.md5(PAYLOAD).hexdigest()
    p = fetch(f"{url}/file.json", dest, sha256=sha, md5=md5)
    assert p == dest / "file.json" and p.read_bytes() == PAYLOAD
    assert [x.name for x in dest.iterdir()] == ["file.json"]  # no temp file left
    assert fetch(f"{url}/file.json", dest, md5=md5.upper()) == p and len(hits) == 1  # verified, not refetched
    p2 = fetch(f"{url}/file.json", dest, filename="renamed.json")
    assert p2.read_bytes() == PAYLOAD


def test_fetch_bad_checksum_leaves_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "out"
    with pytest.raises(NodeprobeError, match=r"file.json: checksum mismatch \(md5 .* ≠ expected 0{32}\)"):
        fetch(f"{url}/file.json", dest, md5="0" * 32)
    assert list(dest.iterdir()) == []
    with pytest.raises(NodeprobeError, match="sha256"):
        fetch(f"{url}/file.json", dest, sha256="f" * 64)
    assert list(dest.iterdir()) == []
    # a stale local file with the wrong checksum is replaced by a verified download
    (dest / "file.json").write_bytes(b"stale")
    p = fetch(f"{url}/file.json", dest, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert p.read_bytes() == PAYLOAD


def test_fetch_http_errors(server, tmp_path):
    url, _ = server
    dest = tmp_path / "out"
    with pytest.raises(NodeprobeError, match=r"missing.json: HTTP 404 .*nothing was saved") as e:
        fetch(f"{url}/missing.json", dest)
    assert "\n" not in str(e.value)
    assert list(dest.iterdir()) == []
    with pytest.raises(NodeprobeError, match="cannot download"):
        fetch("http://127.0.0.1:1/x.json", dest, timeout=5)  # nothing listens on port 1
    with pytest.raises(NodeprobeError, match="unsupported URL scheme 'ftp'"):
        fetch("ftp://example.org/x", dest)
    assert list(dest.iterdir()) == []


def test_ensure_file_downloads_known_source(server, tmp_path, monkeypatch):
    url, hits = server
    monkeypatch.setattr(
        dl, "KNOWN_SOURCES",
        {"fewrel/x.json": dl.Source(f"{url}/file.json", md5=hashlib.md5(PAYLOAD).hexdigest())},
    )
    p = ensure_file("fewrel/x.json", tmp_path / "cache")
    assert p == tmp_path / "cache" / "fewrel" / "x.json" and p.read_bytes() == PAYLOAD
    assert ensure_file("fewrel/x.json", tmp_path / "cache") == p and len(hits) == 1
    with pytest.raises(NodeprobeError, match="no public download is known for 'nope.txt'"):
        ensure_file("nope.txt", tmp_path / "cache")


def test_resolve_data_dir(tmp_path, monkeypatch, shared_data):
    monkeypatch.delenv("NODEPROBE_DATA", raising=False)
    assert resolve_data_dir(tmp_path) == tmp_path
    assert resolve_data_dir() == shared_data.resolve()  # <repo>/../shared/data in this checkout
    monkeypatch.setenv("NODEPROBE_DATA", str(tmp_path / "env"))
    assert resolve_data_dir() == tmp_path / "env"
    assert resolve_data_dir(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("NODEPROBE_DATA")
    monkeypatch.setattr(data_home, "repo_shared_data", lambda: tmp_path / "absent")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == tmp_path / "xdg" / "nodeprobe"
    f = tmp_path / "afile"
    f.write_text("x")
    with pytest.raises(NodeprobeError, match="is a file"):
        resolve_data_dir(f)


def test_known_sources_are_the_public_originals():
    src = dl.KNOWN_SOURCES["fewrel/train_wiki.json"]
    assert src.url == "https://raw.githubusercontent.com/thunlp/FewRel/master/data/train_wiki.json"
    assert src.md5 == "5e663e9c3f1bfbdb2de72696e9504fd7"
    assert dl.KNOWN_SOURCES["fewrel/val_wiki.json"].sha256 is None


def test_known_vocab_checksum_matches_shared_copy(shared_data):
    src = dl.KNOWN_SOURCES["tokenizer/bert-base-uncased-vocab.txt"]
    data = (shared_data / "tokenizer" / "bert-base-uncased-vocab.txt").read_bytes()
    assert hashlib.sha256(data).hexdigest() == src.sha256
    assert Path(src.url).name == "vocab.txt"
