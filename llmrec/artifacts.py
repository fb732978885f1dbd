"""Artifact folders: atomic writes, manifests, hashes.

Every stage writes one folder. It is built under a temporary sibling name and renamed into place only
when complete, so an interrupted or failed run never leaves a half-written folder behind. Each folder
carries a JSON manifest with the config, seed, library versions and input hashes.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

from llmrec.errors import LlmrecError

_LIBS = (
    "llmrec", "numpy", "pandas", "pyarrow", "torch", "transformers", "tokenizers", "peft", "trl",
    "accelerate", "datasets", "scikit-learn", "faiss-cpu", "sentence-transformers", "safetensors",
)


def library_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of the libraries that shape llmrec's results (missing ones are skipped)."""
    out = {"python": platform.python_version()}
    for name in (*_LIBS, *extra):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def file_hashes(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """``{path: sha256}`` for each input file (folders are hashed file by file)."""
    out: dict[str, str] = {}
    for p in paths:
        p = Path(p)
        if p.is_dir():
            for q in sorted(x for x in p.rglob("*") if x.is_file()):
                out[str(q)] = sha256_file(q)
        elif p.is_file():
            out[str(p)] = sha256_file(p)
    return out


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False, default=json_default)
        f.write("\n")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise LlmrecError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise LlmrecError(f"{path}, line {e.lineno}: invalid JSON ({e.msg})") from None


def read_yaml_mapping(path: str | os.PathLike | dict, what: str = "config") -> tuple[dict, str]:
    """A YAML file (or an in-memory dict, copied) that must hold a mapping, and where it came from (for errors)."""
    import copy

    if isinstance(path, dict):
        return copy.deepcopy(path), f"<{what}>"
    import yaml

    p = Path(path)
    if not p.is_file():
        raise LlmrecError(f"{p}: {what} not found")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise LlmrecError(f"{p}: invalid YAML ({e})") from None
    if not isinstance(raw, dict):
        raise LlmrecError(f"{p}: a {what} is a YAML mapping of options")
    return raw, str(p)


def json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy / torch scalars
        return o.item()
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, (Path,)):
        return str(o)
    if isinstance(o, (set, frozenset)):
        return sorted(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def make_manifest(kind: str, config: dict | None = None, inputs: dict | None = None, seed: int | None = None,
                  **extra: Any) -> dict:
    """The manifest every artifact folder carries: what made it, from what, with which libraries."""
    return {
        "kind": kind,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "config": config or {},
        "seed": seed,
        "inputs": inputs or {},
        "versions": library_versions(),
        "command": " ".join(sys.argv) if sys.argv and sys.argv[0] else None,
        **extra,
    }


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder that becomes ``out`` only if the block finishes without error.

    ``out`` must not exist unless ``overwrite``; then the old folder is replaced in one rename step.
    """
    out = Path(out)
    if out.exists() and not overwrite:
        raise LlmrecError(f"{out}: output folder already exists (pass --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
