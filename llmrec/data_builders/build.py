"""``llmrec data build``: any supported source -> one normalized dataset folder."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from llmrec.artifacts import atomic_dir, file_hashes, make_manifest, write_json
from llmrec.data_builders.dataset import INTERACTIONS, ITEMS, MANIFEST, USERS
from llmrec.data_builders.preprocess import PreprocessConfig, preprocess
from llmrec.data_builders.raw import RawData
from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)
FORMATS = ("amazon2014", "amazon2018", "amazon2023", "movielens", "csv", "parquet", "lcrec", "minionerec")


def read_source(fmt: str, path: str | Path, items: str | Path | None = None, columns=None) -> RawData:
    if fmt in ("amazon2014", "amazon2018", "amazon2023"):
        from llmrec.data_builders.amazon import read_amazon
        return read_amazon(fmt, path, items)
    if fmt == "movielens":
        from llmrec.data_builders.movielens import read_movielens
        if items:
            raise LlmrecError("--items is not used with --format movielens (the folder holds the movies file)")
        return read_movielens(path)
    if fmt in ("csv", "parquet"):
        from llmrec.data_builders.tabular import read_tabular
        return read_tabular(path, items, columns)
    if fmt == "lcrec":
        from llmrec.data_builders.lcrec import read_lcrec
        return read_lcrec(path, items)
    if fmt == "minionerec":
        from llmrec.data_builders.lcrec import read_minionerec
        return read_minionerec(path, items)
    raise LlmrecError(f"unknown --format {fmt!r}; expected one of {', '.join(FORMATS)}")


def build_dataset(fmt: str, path: str | Path, out: str | Path, items: str | Path | None = None,
                  columns: str | dict | None = None, config: PreprocessConfig | None = None,
                  overwrite: bool = False) -> Path:
    """Read, preprocess and write a dataset folder; returns ``out``. Nothing is left at ``out`` on failure."""
    cfg = config or PreprocessConfig()
    out = Path(out)
    if out.exists() and not overwrite:
        raise LlmrecError(f"{out}: output folder already exists (pass --overwrite to replace it)")
    t0 = time.perf_counter()
    raw = read_source(fmt, path, items, columns)
    source_config = {"format": fmt, "path": str(path), "items": str(items) if items else None,
                     "columns": columns if isinstance(columns, (str, type(None))) else dict(columns)}
    return write_raw_dataset(raw, out, cfg, source_config, overwrite=overwrite, t0=t0)


def write_raw_dataset(raw: RawData, out: str | Path, cfg: PreprocessConfig, source_config: dict,
                      overwrite: bool = False, t0: float | None = None, seed: int | None = None) -> Path:
    """Preprocess reader output and write the dataset folder atomically."""
    t0 = time.perf_counter() if t0 is None else t0
    out = Path(out)
    if cfg.text_fields is None and raw.extra.get("text_fields"):
        cfg.text_fields = tuple(raw.extra["text_fields"])
    t_read = time.perf_counter() - t0
    src = str(raw.sources[0]) if raw.sources else source_config.get("format", "input")
    pre = preprocess(raw.interactions, raw.items, cfg, source=src,
                     items_source=str(raw.sources[1]) if len(raw.sources) > 1 else None)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        pre.interactions.to_parquet(tmp / INTERACTIONS, index=False)
        pre.items.to_parquet(tmp / ITEMS, index=False)
        pre.users.to_parquet(tmp / USERS, index=False)
        extra = {k: v for k, v in raw.extra.items() if k not in ("minionerec_samples", "text_fields")}
        manifest = make_manifest(
            "dataset", config={**source_config, "preprocess": cfg.to_dict()}, seed=seed,
            inputs=file_hashes(raw.sources),
            n_users=pre.stats["n_users"], n_items=pre.stats["n_items"],
            n_interactions=pre.stats["n_interactions"], has_timestamps=raw.has_timestamps,
            has_ratings="rating" in pre.interactions.columns, stats=pre.stats, source=extra,
            timings={"read_s": round(t_read, 3), "total_s": round(time.perf_counter() - t0, 3)},
        )
        write_json(tmp / MANIFEST, manifest)
        if "minionerec_samples" in raw.extra:
            _write_minionerec_split(tmp, raw.extra["minionerec_samples"], pre, manifest)
    log.info("built %s: %s users, %s items, %s interactions", out, f"{pre.stats['n_users']:,}",
             f"{pre.stats['n_items']:,}", f"{pre.stats['n_interactions']:,}")
    return out


def _write_minionerec_split(folder: Path, samples: list, pre, manifest: dict) -> None:
    """Keep MiniOneRec's published samples as ``splits/minionerec`` (train = targets of train samples)."""
    imap = pd.Series(pre.items["item"].to_numpy(), index=pre.items["original_id"].to_numpy())
    umap = pd.Series(pre.users["user"].to_numpy(), index=pre.users["original_id"].to_numpy())
    out = folder / "splits" / "minionerec"
    out.mkdir(parents=True)
    counts = {}
    for part in ("train", "valid", "test"):
        rows = [s for s in samples if s[0] == part]
        counts[part] = len(rows)
        hist = [imap.reindex(h).fillna(0).astype(np.int32).to_numpy() for _, _, h, _ in rows]
        hist = [h[h > 0] for h in hist]
        users = umap.reindex([u for _, u, _, _ in rows]).to_numpy(np.int32) if rows else np.zeros(0, np.int32)
        targets = imap.reindex([t for _, _, _, t in rows]).fillna(0).to_numpy(np.int32) if rows else \
            np.zeros(0, np.int32)
        keep = targets > 0
        if part == "train":
            tr = pd.DataFrame({"user": users[keep], "item": targets[keep],
                               "timestamp": np.flatnonzero(keep).astype(np.int64)})
            tr.to_parquet(out / "train.parquet", index=False)
            continue
        table = pa.table({
            "user": pa.array(users[keep], pa.int32()),
            "history": pa.array([h for h, k in zip(hist, keep) if k], pa.list_(pa.int32())),
            "history_ts": pa.array([np.zeros(len(h), np.int64) for h, k in zip(hist, keep) if k],
                                   pa.list_(pa.int64())),
            "target": pa.array(targets[keep], pa.int32()),
            "target_ts": pa.array(np.flatnonzero(keep).astype(np.int64), pa.int64()),
        })
        pq.write_table(table, out / f"{part}.parquet")
        counts[f"{part}_kept"] = int(keep.sum())
    write_json(out / "split.json", make_manifest(
        "split", config={"protocol": "minionerec"}, protocol="minionerec", n_items=manifest["n_items"],
        n_users=manifest["n_users"], n_train_interactions=counts["train"], n_valid=counts.get("valid_kept", 0),
        n_test=counts.get("test_kept", 0), samples=counts,
        note="MiniOneRec's published samples (history capped at 10); train is empty when its train CSV is absent"))
