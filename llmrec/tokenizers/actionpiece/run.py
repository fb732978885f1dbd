"""ActionPiece as a pipeline stage: inputs (dataset + embeddings, or precomputed JSON) -> a tokenizer folder.

``DIR/`` holds ``merges.json`` (``[left, right, new_token, weight]`` in merge order), ``vocab.json`` (every
token with its features), ``item_features.json`` (FEATURES.json format), ``targets.json`` (each item's target
tokens), ``report.json``, ``manifest.json`` and ``actionpiece.png``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Hashable, Sequence

import numpy as np

from llmrec.artifacts import atomic_dir, file_hashes, make_manifest, write_json
from llmrec.errors import LlmrecError
from llmrec.tokenizers.actionpiece.build import learn_merges
from llmrec.tokenizers.actionpiece.naive import KINDS
from llmrec.tokenizers.actionpiece.tokenizer import ActionPiece

log = logging.getLogger(__name__)


def _value_order(values: set[str]) -> list[str]:
    """Numeric order when every value is an integer, text order otherwise (deterministic token ids)."""
    try:
        return sorted(values, key=lambda v: (int(v), v))
    except ValueError:
        return sorted(values)


def train_actionpiece(item_ids: Sequence[Hashable], item_features: Sequence[Sequence], sequences: Sequence[Sequence],
                      vocab_size: int, *, position_names: Sequence[str] | None = None, check_every: int = 0,
                      progress: bool = True, source: str = "sequences") -> ActionPiece:
    """Learn an ActionPiece vocabulary of ``vocab_size`` tokens (initial features included).

    ``item_features[r]`` are the ``m`` feature values of item ``item_ids[r]`` (position = index); ``sequences``
    are lists of item ids, oldest first. ``check_every=k`` verifies all counts against a full recount after
    every ``k``-th merge (debug).
    """
    if len(item_ids) != len(item_features) or not item_ids:
        raise LlmrecError(f"{len(item_ids)} item ids for {len(item_features)} feature rows")
    m = len(item_features[0])
    for it, f in zip(item_ids, item_features):
        if len(f) != m:
            raise LlmrecError(f"item {it!r}: {len(f)} features, expected {m} (one per position)")
    vals = [_value_order({str(f[p]) for f in item_features}) for p in range(m)]
    features = [(p, v) for p in range(m) for v in vals[p]]
    tid = {f: i for i, f in enumerate(features)}
    mat = np.array([[tid[(p, str(v))] for p, v in enumerate(f)] for f in item_features], dtype=np.int64)
    row = {it: r for r, it in enumerate(item_ids)}
    seqs = []
    for s, seq in enumerate(sequences):
        try:
            seqs.append(np.fromiter((row[it] for it in seq), dtype=np.int64, count=len(seq)))
        except KeyError as e:
            raise LlmrecError(f"{source}, sequence {s}: item {e.args[0]!r} has no features") from None
    n_init = len(features)
    if vocab_size < n_init:
        raise LlmrecError(f"--vocab-size {vocab_size} is smaller than the {n_init} initial feature tokens")
    res = learn_merges(mat, seqs, n_init, vocab_size - n_init, check_every=check_every, progress=progress)
    ap = ActionPiece(features, res.pairs, res.counts, res.scale, list(item_ids), mat,
                     position_names=list(position_names or []), stats=res.stats)
    ap.stats["apps"] = res.apps.sum(0).tolist()
    ap.stats["apps_per_merge"] = res.apps
    ap.stats["merges_never_applied"] = int((res.apps.sum(1) == 0).sum())
    return ap


def _dataset_sequences(dataset: Path, protocol: str) -> list[list[int]]:
    from llmrec.data_builders import load_split

    _, seqs = load_split(dataset, protocol).train_sequences()
    return [s.tolist() for s in seqs]


def _load_embeddings(path: Path, n_items: int) -> np.ndarray:
    """The dataset's item embeddings (``load_embeddings`` checks shape and NaN/inf); rows must match its items."""
    from llmrec.data_builders.embeddings import load_embeddings

    emb = load_embeddings(path).vectors
    if len(emb) != n_items + 1:
        raise LlmrecError(f"{path}: {len(emb)} rows, expected n_items + 1 = {n_items + 1} (row = item id; "
                          "embeddings of another catalog?)")
    return emb


def build_features(*, dataset: Path | None = None, embeddings: Path | None = None, features: Path | None = None,
                   categorical: Sequence[str] | None = None, sequences: list | None = None, n_codebooks: int = 4,
                   codebook_size: int = 256, hash_buckets: int | None = None, seed: int = 0):
    """``(item ids, feature rows, position names, description)`` from exactly one feature source."""
    from llmrec.tokenizers.actionpiece import features as F

    sources = [x is not None for x in (embeddings, features, categorical)]
    if sum(sources) != 1:
        raise LlmrecError("give exactly one feature source: --embeddings, --features or --categorical")
    if features is not None:
        ids, rows = F.load_features_json(features)
        names = [f"f{p}" for p in range(len(rows[0]))]
        desc = {"source": "features", "path": str(features)}
        buckets = hash_buckets or 0
    else:
        if dataset is None:
            raise LlmrecError("--embeddings and --categorical need --dataset")
        from llmrec.data_builders import load_dataset

        ds = load_dataset(dataset)
        buckets = 128 if hash_buckets is None else hash_buckets
        if embeddings is not None:
            emb = _load_embeddings(embeddings, ds.n_items)
            train_items = np.unique(np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences])) \
                if sequences else np.arange(1, ds.n_items + 1)
            t0 = time.perf_counter()
            codes = F.opq_codes(emb[1:], n_codebooks, codebook_size, train_rows=train_items - 1, seed=seed)
            log.info("OPQ %dx%d codes for %d items in %.1fs", n_codebooks, codebook_size, len(codes),
                     time.perf_counter() - t0)
            ids = list(range(1, ds.n_items + 1))
            rows = codes.tolist()
            names = [f"opq{p}" for p in range(n_codebooks)]
            desc = {"source": "embeddings", "path": str(embeddings), "n_codebooks": n_codebooks,
                    "codebook_size": codebook_size}
        else:
            ids, mat = F.categorical_features(ds, categorical)
            rows = mat.tolist()
            names = list(categorical)
            desc = {"source": "categorical", "fields": list(categorical)}
    if buckets:
        digit = F.disambiguation_digit(rows, buckets, seed=seed)
        rows = [list(r) + [int(d)] for r, d in zip(rows, digit)]
        names = names + ["hash"]
    desc["hash_buckets"] = buckets
    dup = Counter(tuple(map(str, r)) for r in rows)
    shared = sum(c for c in dup.values() if c > 1)
    desc["items_sharing_features"] = shared
    return ids, rows, names, desc


def run_actionpiece(out: str | Path, *, vocab_size: int, dataset: str | Path | None = None, protocol: str = "loo",
                    embeddings: str | Path | None = None, features: str | Path | None = None,
                    sequences: str | Path | None = None, categorical: Sequence[str] | None = None,
                    n_codebooks: int = 4, codebook_size: int = 256, hash_buckets: int | None = None, seed: int = 0,
                    check_every: int = 0, overwrite: bool = False, progress: bool = True,
                    plots: bool = True) -> ActionPiece:
    """Build an ActionPiece tokenizer folder ``out`` (see the module docstring) and return the tokenizer."""
    from llmrec.tokenizers.actionpiece import features as F

    t0 = time.perf_counter()
    c0 = time.process_time()
    dataset = Path(dataset) if dataset is not None else None
    if sequences is not None:
        seqs = F.load_sequences_json(sequences)
        seq_source = str(sequences)
        if features is None:  # features come from the dataset, whose item ids are integers
            try:
                seqs = [[int(x) for x in s] for s in seqs]
            except ValueError as e:
                raise LlmrecError(f"{sequences}: item ids must be the dataset's integer ids ({e})") from None
    elif dataset is not None:
        seqs = _dataset_sequences(dataset, protocol)
        seq_source = f"{dataset} ({protocol} training sequences)"
    else:
        raise LlmrecError("give --sequences SEQUENCES.json or --dataset DIR (its training sequences are used)")
    ids, rows, names, feat_desc = build_features(
        dataset=dataset, embeddings=embeddings, features=features, categorical=categorical, sequences=seqs,
        n_codebooks=n_codebooks, codebook_size=codebook_size, hash_buckets=hash_buckets, seed=seed)
    if features is not None and dataset is not None and sequences is None:
        seqs = [[str(x) for x in s] for s in seqs]  # FEATURES.json keys are strings
    if feat_desc["items_sharing_features"]:
        raise LlmrecError(f"{feat_desc['items_sharing_features']} items share their feature set with another item, "
                          "so they could not be told apart; add a disambiguation digit with --hash-buckets N")
    t_feat = time.perf_counter() - t0
    ap = train_actionpiece(ids, rows, seqs, vocab_size, position_names=names, check_every=check_every,
                           progress=progress, source=seq_source)
    t_build = ap.stats["total_seconds"]

    targets = {it: ap.segment_item(it) for it in ap.item_ids}
    lens = Counter(len(t) for t in targets.values())
    roundtrip = sum(ap.decode(t, canonical=True) == it for it, t in targets.items())
    report = {
        "vocab_size": ap.vocab_size, "initial_tokens": ap.n_init, "merges": len(ap.merges),
        "requested_vocab_size": vocab_size, "features_per_item": ap.n_positions, "position_names": names,
        "n_items": ap.n_items, "n_sequences": ap.stats["n_sequences"],
        "item_occurrences": ap.stats["n_item_occurrences"],
        "applications": dict(zip(KINDS, ap.stats["apps"])), "merges_never_applied": ap.stats["merges_never_applied"],
        "corpus_tokens_before": ap.stats["tokens_before"], "corpus_tokens_after": ap.stats["tokens_after"],
        "target_length_histogram": {str(k): lens[k] for k in sorted(lens)},
        "target_mean_length": float(np.mean([len(t) for t in targets.values()])),
        "roundtrip_items": roundtrip, "features": feat_desc,
        "first_merge_weight": float(ap.weights[0]) if len(ap.merges) else None,
        "last_merge_weight": float(ap.weights[-1]) if len(ap.merges) else None,
        "seconds": {"features": round(t_feat, 2), "vocabulary": t_build,
                    "total_wall": round(time.perf_counter() - t0, 2), "total_cpu": round(time.process_time() - c0, 2)},
        "build_stats": {k: v for k, v in ap.stats.items() if k not in ("apps", "apps_per_merge")},
    }
    if roundtrip != ap.n_items:
        raise LlmrecError(f"internal error: only {roundtrip} of {ap.n_items} items decode back from their targets")
    inputs = [p for p in (features, sequences, embeddings) if p is not None]
    if dataset is not None:
        inputs += [dataset / "items.parquet", dataset / "splits" / protocol / "train.parquet"]
    config = {"method": "actionpiece", "vocab_size": vocab_size, "dataset": str(dataset) if dataset else None,
              "protocol": protocol, "embeddings": str(embeddings) if embeddings else None,
              "features": str(features) if features else None, "sequences": str(sequences) if sequences else None,
              "categorical": list(categorical) if categorical else None, "n_codebooks": n_codebooks,
              "codebook_size": codebook_size, "hash_buckets": feat_desc["hash_buckets"], "check_every": check_every}
    with atomic_dir(out, overwrite=overwrite) as tmp:
        ap.save(tmp)
        write_json(tmp / "report.json", report)
        write_json(tmp / "manifest.json", make_manifest("actionpiece", config=config, seed=seed,
                                                        inputs=file_hashes(inputs)))
        if plots and len(ap.merges):
            plot_report(ap, targets, tmp / "actionpiece.png")
    log.info("ActionPiece: %d tokens (%d merges) in %.1fs -> %s", ap.vocab_size, len(ap.merges), t_build, out)
    return ap


def plot_report(ap: ActionPiece, targets: dict, path: Path) -> None:
    """Merge weight by rank, where merges were applied (inside items / item-slot / across items), target lengths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4))
    r = np.arange(1, len(ap.merges) + 1)
    ax[0].loglog(r, ap.weights, lw=0.8)
    ax[0].set(xlabel="merge rank", ylabel="weight when merged", title="Merge weights")
    apps = ap.stats.get("apps_per_merge")
    if apps is not None:
        for i, name in enumerate(KINDS):
            ax[1].plot(r, np.cumsum(apps[:, i]), label=name.replace("_", " "))
        ax[1].set(xlabel="merge rank", ylabel="applications (cumulative)", title="Where merges apply")
        ax[1].legend()
    lens = Counter(len(t) for t in targets.values())
    ks = sorted(lens)
    ax[2].bar(ks, [lens[k] for k in ks])
    ax[2].set_xticks(ks)
    ax[2].set(xlabel="tokens per item (target)", ylabel="items", title=f"Target lengths ({ap.n_items} items)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
