"""Embeddings -> a SID folder, and the peers' ``*.index.json`` in and out.

A SID folder holds

``sids.parquet``, ``sid_table.json``  the item -> SID table (:class:`~llmrec.tokenizers.SidTable`)
``sid_to_item.parquet``               the SID -> item table (rows sorted by code tuple)
``raw_codes.npy``                     ``[n_items + 1, L]`` codes before dedup (row 0 = -1)
``codebooks.safetensors``, ``tokenizer.json``   the fitted tokenizer (``load_tokenizer`` reads them; no pickle)
``manifest.json``                     method, config, seed, embedding model, input hashes, timings
``report.json``, ``cluster_sizes.png``, ``projection.png``   the quality report (``llmrec sid report``)
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from llmrec.artifacts import atomic_dir, make_manifest, read_json, sha256_file, write_json
from llmrec.errors import LlmrecError
from llmrec.tokenizers.base import load_tokenizer, make_tokenizer, save_tokenizer
from llmrec.tokenizers.dedup import DEDUP, add_digit, collision_stats, reassign
from llmrec.tokenizers.report import format_report, sid_report, write_plots
from llmrec.tokenizers.sid_table import SidTable

log = logging.getLogger(__name__)

RAW_CODES = "raw_codes.npy"


@dataclass
class SidResult:
    path: Path | None
    table: SidTable
    tokenizer: object
    report: dict


def _load_inputs(embeddings):
    """``(x [n, d], titles|None, original_ids|None, manifest, source path|None)`` from a folder, .npy or array."""
    from llmrec.data_builders.embeddings import load_embeddings

    if isinstance(embeddings, np.ndarray):
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        return x, None, None, {"source": "array"}, None
    emb = load_embeddings(embeddings)
    titles = emb.titles[1:] if emb.titles is not None else None
    orig = emb.original_ids if emb.original_ids is not None else None
    return emb.vectors[1:], titles, orig, emb.manifest, Path(embeddings)


def codes_to_table(codes: np.ndarray, codebook_sizes: list[int], original_ids=None) -> SidTable:
    n = len(codes)
    full = np.full((n + 1, codes.shape[1]), -1, np.int64)
    full[1:] = codes
    return SidTable(full, [int(k) for k in codebook_sizes], original_ids=None if original_ids is None
                    else np.asarray(original_ids, dtype=object))


def build_sids(embeddings, method: str = "rq-kmeans", levels: int = 3, codes=256, dedup: str = "digit",
               out: str | Path | None = None, seed: int = 0, overwrite: bool = False, report: bool = True,
               plots: bool = True, on_overflow: str = "digit", titles=None, **method_kw) -> SidResult:
    """Fit an item tokenizer on ``embeddings`` (an EMB folder, a ``.npy`` with row 0 = padding, or an array
    ``[n_items, d]`` whose row ``i`` is item ``i + 1``), make the codes collision-free and write ``out``.

    ``dedup``: ``digit`` (extra level), ``reassign`` (move colliding items to free last-level codes), or
    ``none`` (keep collisions; the table is then not usable for decoding).
    """
    if dedup not in DEDUP:
        raise LlmrecError(f"--dedup must be one of {DEDUP}, got {dedup!r}")
    t0 = time.perf_counter()
    x, emb_titles, orig, emb_manifest, emb_path = _load_inputs(embeddings)
    titles = emb_titles if titles is None else titles
    tok = make_tokenizer(method, levels=levels, codes=codes, seed=seed, **method_kw)
    t_fit = time.perf_counter()
    raw = tok.fit(x)
    fit_s = time.perf_counter() - t_fit
    sizes = list(tok.codebook_sizes)
    x_hat = tok.decode(raw)
    item_err = np.linalg.norm(x - x_hat, axis=1)
    dedup_info: dict = {"method": dedup, **{f"before_{k}": v for k, v in collision_stats(raw).items()}}
    if dedup == "digit":
        final, dsize = add_digit(raw, item_err)
        sizes = sizes + [dsize]
        dedup_info["digit_size"] = dsize
    elif dedup == "reassign":
        final, info = reassign(raw, tok.last_level_distances(x, raw), on_overflow=on_overflow, key=item_err)
        dedup_info.update(info)
        if final.shape[1] > raw.shape[1]:
            sizes = sizes + [info["digit_size"]]
            log.warning(info["warning"] + "; appended a disambiguation digit")
    else:
        final = raw
    table = codes_to_table(final, sizes, orig)
    rep = {}
    if report:
        dec_codes = final[:, : tok.levels]
        xh = [_decode_prefix(tok, dec_codes, l) for l in range(tok.levels)]
        rep = sid_report(raw, final, sizes, x=x, x_hat_levels=xh, titles=titles, seed=seed)
        if dedup == "reassign":
            rep["recon_error_before_dedup"] = sid_report(raw, raw, sizes[: tok.levels], x=x,
                                                         x_hat_levels=[x_hat])["recon_error"]
        rep["dedup"] = dedup_info
        rep["method"] = method
        rep["fit_seconds"] = round(fit_s, 3)
        rep["fit_stats"] = getattr(tok, "fit_stats", None)
    manifest = make_manifest(
        "sids", config={"method": method, "levels": levels, "codes": codes, "dedup": dedup,
                        "on_overflow": on_overflow, **tok.config(), **method_kw},
        seed=seed,
        inputs={} if emb_path is None else {
            str(p): sha256_file(p) for p in [emb_path / "embeddings.npy" if emb_path.is_dir() else emb_path]},
        embeddings=None if emb_path is None else str(emb_path.resolve()),
        embedding_model=emb_manifest.get("model"), n_items=len(x), dim=int(x.shape[1]),
        codebook_sizes=sizes, seconds={"fit": round(fit_s, 3), "total": round(time.perf_counter() - t0, 3)})
    if out is not None:
        with atomic_dir(out, overwrite=overwrite) as tmp:
            write_sid_folder(tmp, table, raw, tok, manifest, rep, x=x if plots else None, titles=titles,
                             plots=plots and report, seed=seed)
        log.info("wrote %s", out)
    return SidResult(Path(out) if out is not None else None, table, tok, rep)


def _decode_prefix(tok, codes: np.ndarray, upto: int) -> np.ndarray:
    """Reconstruction from levels ``0..upto`` (RQ decoders are sums, so truncation is meaningful)."""
    if hasattr(tok, "decode_prefix"):
        return tok.decode_prefix(codes, upto)
    if upto == tok.levels - 1:
        return tok.decode(codes)
    return None


def write_sid_folder(folder: Path, table: SidTable, raw: np.ndarray, tok, manifest: dict, rep: dict,
                     x=None, titles=None, plots: bool = True, seed: int = 0) -> None:
    table.save(folder)
    write_sid_to_item(folder, table)
    full_raw = np.full((len(raw) + 1, raw.shape[1]), -1, np.int64)
    full_raw[1:] = raw
    np.save(folder / RAW_CODES, full_raw)
    if tok is not None:
        save_tokenizer(tok, folder)
    if rep:
        if plots:
            rep["plots"] = write_plots(folder, table.codes[1:], table.codebook_sizes, x=x, titles=titles,
                                       title=f"{manifest['config'].get('method', 'sid')} "
                                             f"{'x'.join(str(k) for k in table.codebook_sizes)}", seed=seed)
        write_json(folder / "report.json", rep)
    write_json(folder / "manifest.json", manifest)


def write_sid_to_item(folder: Path, table: SidTable) -> None:
    codes = table.codes[1:]
    order = np.lexsort(codes.T[::-1])
    cols = {f"c{l}": codes[order, l].astype(np.int32) for l in range(table.levels)}
    cols["sid"] = [table.item_sid(int(i) + 1) for i in order]
    cols["item"] = (order + 1).astype(np.int32)
    pd.DataFrame(cols).to_parquet(folder / "sid_to_item.parquet", index=False)


# --- report of an existing folder ---------------------------------------------------------------------------
def report_sids(folder: str | Path, embeddings=None, recompute: bool = False, plots: bool = True) -> dict:
    """The stored report, or a fresh one (``recompute``, or when the folder has none, e.g. imported SIDs).

    Reconstruction error needs embeddings: the folder's own (from its manifest) or ``embeddings``. Without a
    fitted tokenizer (imported SIDs) the decoder is estimated from the codes: each level's codeword is the
    mean residual of its items (the best any RQ decoder can do with these codes).
    """
    folder = Path(folder)
    table = SidTable.load(folder)
    if (folder / "report.json").is_file() and not recompute and embeddings is None:
        return read_json(folder / "report.json")
    man = read_json(folder / "manifest.json") if (folder / "manifest.json").is_file() else {}
    emb_src = embeddings or man.get("embeddings")
    x = titles = None
    if emb_src is not None and Path(emb_src).exists():
        x, titles, _, _, _ = _load_inputs(emb_src)
        if len(x) != table.n_items:
            raise LlmrecError(f"{emb_src}: {len(x)} items but the SID table {folder} has {table.n_items}")
    elif emb_src is not None:
        log.warning("embeddings %s not found: report without reconstruction error", emb_src)
    raw = np.load(folder / RAW_CODES)[1:] if (folder / RAW_CODES).is_file() else table.codes[1:]
    tok = None
    if (folder / "tokenizer.json").is_file():
        tok = load_tokenizer(folder)
    xh = None
    if x is not None:
        L = tok.levels if tok is not None else raw.shape[1]
        codes = table.codes[1:, :L]
        if tok is not None:
            xh = [_decode_prefix(tok, codes, l) for l in range(L)]
        else:
            xh = estimated_reconstruction(x, codes)
        xh = [v for v in xh if v is not None] or None
    rep = sid_report(raw, table.codes[1:], table.codebook_sizes[: raw.shape[1]], x=x, x_hat_levels=xh,
                     titles=titles)
    if tok is None and xh is not None:
        rep["recon_error_note"] = "decoder estimated from the codes (mean residual per code and level)"
    old = read_json(folder / "report.json") if (folder / "report.json").is_file() else {}
    for k in ("dedup", "method", "fit_seconds", "fit_stats", "recon_error_before_dedup"):
        if k in old:
            rep[k] = old[k]
    if plots:
        rep["plots"] = write_plots(folder, table.codes[1:], table.codebook_sizes, x=x, titles=titles,
                                   title=man.get("config", {}).get("method", "sid"))
    write_json(folder / "report.json", rep)
    return rep


def estimated_reconstruction(x: np.ndarray, codes: np.ndarray) -> list[np.ndarray]:
    """Per-level RQ reconstructions with codewords = mean residual of the items holding each code."""
    from llmrec.tokenizers.kmeans import cluster_sums

    r = x.astype(np.float32).copy()
    acc = np.zeros_like(r)
    out = []
    for l in range(codes.shape[1]):
        k = int(codes[:, l].max()) + 1
        sums, cnt = cluster_sums(r, codes[:, l], k)
        cw = (sums / np.maximum(cnt, 1)[:, None]).astype(np.float32)
        acc += cw[codes[:, l]]
        r -= cw[codes[:, l]]
        out.append(acc.copy())
    return out


# --- peers' *.index.json --------------------------------------------------------------------------------------
def import_index_json(path: str | Path, out: str | Path, dataset: str | Path | None = None, offset: int = 0,
                      embeddings=None, overwrite: bool = False) -> Path:
    """An LC-Rec / MiniOneRec ``*.index.json`` -> a SID folder. Items are matched to a dataset's ``original_id``
    when ``dataset`` is given, else ``item = int(key) - offset`` (LC-Rec keys are 0-based: ``offset=-1``)."""
    orig = None
    if dataset is not None:
        from llmrec.data_builders import load_dataset

        ds = load_dataset(dataset)
        items = ds.items.sort_values("item")
        orig = np.asarray([""] + items["original_id"].astype(str).tolist(), dtype=object)
    table = SidTable.from_index_json(path, original_ids=orig, offset=offset)
    raw = table.codes[1:]
    st = collision_stats(raw)
    man = make_manifest("sids", config={"method": "import", "source_format": "index.json", "offset": offset},
                        inputs={str(path): sha256_file(path)},
                        dataset=None if dataset is None else str(Path(dataset).resolve()),
                        embeddings=None if embeddings is None else str(Path(embeddings).resolve()),
                        n_items=table.n_items, codebook_sizes=table.codebook_sizes)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        write_sid_folder(tmp, table, raw, None, man, {})
    if st["collisions"]:
        log.warning("%s: %d items share a SID with another item (largest group %d)", path, st["collisions"],
                    st["largest_group"])
    return Path(out)


def export_index_json(folder: str | Path, path: str | Path, key: str = "original_id", offset: int = 0) -> Path:
    table = SidTable.load(folder)
    if key not in ("original_id", "item"):
        raise LlmrecError(f"--key must be original_id or item, got {key!r}")
    table.to_index_json(path, key=key, offset=offset)
    return Path(path)


__all__ = ["SidResult", "build_sids", "codes_to_table", "export_index_json", "import_index_json", "report_sids",
           "format_report"]
