"""--download against a local HTTP server: resume, checksum verification, registry datasets via a mirror."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest

from llmrec.data_builders.download import download_file, fetch_dataset
from llmrec.errors import LlmrecError


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with HTTP Range support (what real dataset hosts offer)."""

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        rng = self.headers.get("Range")
        self.server.ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            body = data[start:]
        else:
            self.send_response(200)
            body = data
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(RangeHandler, directory=str(root)))
    httpd.ranges = []
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.shutdown()


def test_resume_and_checksum(server, tmp_path):
    root, url, httpd = server
    payload = bytes(range(256)) * 4000
    (root / "f.bin").write_bytes(payload)
    dest = tmp_path / "dl" / "f.bin"
    dest.parent.mkdir()
    (dest.parent / "f.bin.part").write_bytes(payload[:10_000])  # an interrupted earlier run
    sha = hashlib.sha256(payload).hexdigest()
    download_file(f"{url}/f.bin", dest, f"sha256:{sha}", progress=False)
    assert dest.read_bytes() == payload
    assert httpd.ranges[-1] == "bytes=10000-"  # only the rest was fetched
    with pytest.raises(LlmrecError, match="md5 checksum mismatch"):
        download_file(f"{url}/f.bin", tmp_path / "dl2" / "f.bin", "md5:" + "0" * 32, progress=False)
    assert not (tmp_path / "dl2" / "f.bin").exists()


def test_unknown_checksum_recorded_then_verified(server, tmp_path):
    root, url, _ = server
    (root / "g.bin").write_bytes(b"hello")
    dest = tmp_path / "g.bin"
    download_file(f"{url}/g.bin", dest, None, progress=False)
    assert (tmp_path / "g.bin.sha256").read_text().strip() == hashlib.sha256(b"hello").hexdigest()
    dest.write_bytes(b"tampered")
    with pytest.raises(LlmrecError, match="differs from the one recorded"):
        download_file(f"{url}/g.bin", dest, None, progress=False)


def test_fetch_registry_dataset_through_mirror(server, tmp_path, monkeypatch):
    root, url, _ = server
    fixtures = Path(__file__).parent / "fixtures" / "movielens" / "ml-100k"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in fixtures.iterdir():
            z.write(f, f"ml-100k/{f.name}")
    (root / "ml-100k.zip").write_bytes(buf.getvalue())
    import llmrec.data_builders.download as dl
    monkeypatch.setitem(dl.REGISTRY, "ml-100k", {**dl.REGISTRY["ml-100k"], "files": [
        ("https://files.grouplens.org/datasets/movielens/ml-100k.zip", "md5:" + hashlib.md5(buf.getvalue()).hexdigest())]})
    got = fetch_dataset("ml-100k", cache=tmp_path / "cache", base_url=url)
    from llmrec.data_builders import build_dataset, load_dataset
    ds = load_dataset(build_dataset(got["format"], got["path"], tmp_path / "ds"))
    assert ds.meta["n_interactions"] == 6


def test_no_network_message(tmp_path):
    with pytest.raises(LlmrecError, match="download failed"):
        download_file("http://127.0.0.1:9/nothing.zip", tmp_path / "x.zip", None, progress=False)
