"""``--download``: fetch public datasets for users with internet. Resumable (HTTP Range), checksum-verified.

Checksums: GroupLens publishes MD5s for MovieLens; the Amazon dumps publish none, so their SHA-256 is recorded
on first download (``<file>.sha256`` beside it) and verified on every later use.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

_ML = "https://files.grouplens.org/datasets/movielens/"
_A14 = "https://snap.stanford.edu/data/amazon/productGraph/categoryFiles/"
_A18 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_v2/"
_A23 = "https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw/"

REGISTRY: dict[str, dict] = {
    "ml-100k": {"format": "movielens", "files": [(_ML + "ml-100k.zip", "md5:0e33842e24a9c977be4e0107933c0723")],
                "path": "ml-100k", "note": "MovieLens 100K (GroupLens licence: research use, no redistribution)"},
    "ml-1m": {"format": "movielens", "files": [(_ML + "ml-1m.zip", "md5:c4d9eecfca2ab87c1945afe126590906")],
              "path": "ml-1m", "note": "MovieLens 1M"},
    "ml-10m": {"format": "movielens", "files": [(_ML + "ml-10m.zip", "md5:ce571fd55effeba0271552578f2648bd")],
               "path": "ml-10M100K", "note": "MovieLens 10M"},
    "ml-20m": {"format": "movielens", "files": [(_ML + "ml-20m.zip", "md5:cd245b17a1ae2cc31bb14903e1204af3")],
               "path": "ml-20m", "note": "MovieLens 20M"},
    "ml-25m": {"format": "movielens", "files": [(_ML + "ml-25m.zip", "md5:6b51fb2759a8657d3bfcbfc42b592ada")],
               "path": "ml-25m", "note": "MovieLens 25M"},
    "amazon2014-beauty": {"format": "amazon2014",
                          "files": [(_A14 + "reviews_Beauty_5.json.gz", None), (_A14 + "meta_Beauty.json.gz", None)],
                          "path": "reviews_Beauty_5.json.gz", "items": "meta_Beauty.json.gz",
                          "note": "Amazon 2014 Beauty 5-core (McAuley lab, research use)"},
    "amazon2014-sports": {"format": "amazon2014",
                          "files": [(_A14 + "reviews_Sports_and_Outdoors_5.json.gz", None),
                                    (_A14 + "meta_Sports_and_Outdoors.json.gz", None)],
                          "path": "reviews_Sports_and_Outdoors_5.json.gz", "items": "meta_Sports_and_Outdoors.json.gz",
                          "note": "Amazon 2014 Sports and Outdoors 5-core"},
    "amazon2014-toys": {"format": "amazon2014",
                        "files": [(_A14 + "reviews_Toys_and_Games_5.json.gz", None),
                                  (_A14 + "meta_Toys_and_Games.json.gz", None)],
                        "path": "reviews_Toys_and_Games_5.json.gz", "items": "meta_Toys_and_Games.json.gz",
                        "note": "Amazon 2014 Toys and Games 5-core"},
    "amazon2018-industrial": {"format": "amazon2018",
                              "files": [(_A18 + "categoryFilesSmall/Industrial_and_Scientific_5.json.gz", None),
                                        (_A18 + "metaFiles2/meta_Industrial_and_Scientific.json.gz", None)],
                              "path": "Industrial_and_Scientific_5.json.gz",
                              "items": "meta_Industrial_and_Scientific.json.gz",
                              "note": "Amazon 2018 Industrial and Scientific 5-core"},
    "amazon2023-beauty": {"format": "amazon2023",
                          "files": [(_A23 + "review_categories/All_Beauty.jsonl.gz", None),
                                    (_A23 + "meta_categories/meta_All_Beauty.jsonl.gz", None)],
                          "path": "All_Beauty.jsonl.gz", "items": "meta_All_Beauty.jsonl.gz",
                          "note": "Amazon 2023 All_Beauty"},
}


def default_cache() -> Path:
    return Path(os.environ.get("LLMREC_CACHE", Path.home() / ".cache" / "llmrec"))


def _digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: Path, checksum: str | None = None, chunk: int = 1 << 16,
                  progress: bool = True) -> Path:
    """Download ``url`` to ``dest``, resuming a ``dest.part`` left by an interrupted run, then verify
    ``checksum`` (``"md5:..."`` or ``"sha256:..."``; ``None`` records the SHA-256 on first download)."""
    from tqdm.auto import tqdm

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file():
        _verify(dest, checksum)
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # already complete
            resp = None
        else:
            raise LlmrecError(f"{url}: download failed (HTTP {e.code} {e.reason})") from None
    except (urllib.error.URLError, OSError) as e:
        raise LlmrecError(f"{url}: download failed ({getattr(e, 'reason', e)}); no internet? Download the file "
                          f"by hand and pass it with --path") from None
    if resp is not None:
        with resp:
            resumed = resp.status == 206
            if have and not resumed:  # server ignored Range: start over
                have = 0
            total = resp.headers.get("Content-Length")
            total = int(total) + have if total is not None else None
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                while block := resp.read(chunk):
                    f.write(block)
                    bar.update(len(block))
    _verify(part, checksum, shown=dest)
    os.replace(part, dest)
    if checksum is None:
        dest.with_name(dest.name + ".sha256").write_text(_digest(dest, "sha256") + "\n")
    return dest


def _verify(path: Path, checksum: str | None, shown: Path | None = None) -> None:
    shown = shown or path
    if checksum is None:
        side = shown.with_name(shown.name + ".sha256")
        if side.is_file() and path == shown:
            want = side.read_text().strip()
            got = _digest(path, "sha256")
            if got != want:
                raise LlmrecError(f"{shown}: sha256 {got} differs from the one recorded at first download ({want}); "
                                  "delete the file to fetch it again")
        return
    algo, _, want = checksum.partition(":")
    got = _digest(path, algo)
    if got != want:
        path.unlink(missing_ok=True)
        raise LlmrecError(f"{shown}: {algo} checksum mismatch (expected {want}, got {got}); the partial file was "
                          "removed, run again to re-download")


def _extract(zpath: Path, into: Path) -> None:
    with zipfile.ZipFile(zpath) as z:
        for m in z.namelist():
            target = (into / m).resolve()
            if not str(target).startswith(str(into.resolve())):
                raise LlmrecError(f"{zpath}: unsafe path {m!r} in archive")
        z.extractall(into)


def fetch_dataset(name: str, cache: str | Path | None = None, base_url: str | None = None) -> dict:
    """Download (or reuse) a registry dataset; returns ``{"format", "path", "items"}`` for ``build_dataset``.
    ``base_url`` (or ``LLMREC_DOWNLOAD_MIRROR``) replaces the host part, for mirrors and tests."""
    if name not in REGISTRY:
        raise LlmrecError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}")
    spec = REGISTRY[name]
    root = Path(cache) if cache else default_cache()
    folder = root / name
    mirror = base_url or os.environ.get("LLMREC_DOWNLOAD_MIRROR")
    for url, checksum in spec["files"]:
        fname = url.rsplit("/", 1)[1]
        if mirror:
            url = mirror.rstrip("/") + "/" + fname
        dest = download_file(url, folder / fname, checksum)
        if fname.endswith(".zip") and not (folder / spec["path"]).exists():
            _extract(dest, folder)
    out = {"format": spec["format"], "path": str(folder / spec["path"])}
    if spec.get("items"):
        out["items"] = str(folder / spec["items"])
    return out
