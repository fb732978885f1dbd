"""The evaluation protocol: score ranked lists (generative models) or full-catalog scores (everything else).

Both paths end in the same metric functions (:mod:`llmrec.eval.metrics`) and the same result object, so a
TIGER beam list and a SASRec score matrix are compared on exactly the same footing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd

from llmrec.errors import LlmrecError, where
from llmrec.eval.metrics import DEFAULT_KS, mean_metrics, metrics_from_hits, metrics_from_rank_counts


@dataclass
class EvalResult:
    metrics: dict
    per_user: pd.DataFrame = field(repr=False)
    topk: np.ndarray | None = field(default=None, repr=False)  # [n, K] best items (score-based path)

    def to_json(self, path: str | Path) -> None:
        from llmrec.artifacts import write_json
        write_json(path, self.metrics)


def parse_ks(spec: str | Sequence[int] | None) -> tuple[int, ...]:
    if spec is None:
        return DEFAULT_KS
    if isinstance(spec, str):
        try:
            ks = tuple(int(x) for x in spec.split(",") if x.strip())
        except ValueError:
            raise LlmrecError(f"--ks: expected comma-separated positive integers, got {spec!r}") from None
    else:
        ks = tuple(int(k) for k in spec)
    if not ks or min(ks) < 1:
        raise LlmrecError(f"--ks: expected positive integers, got {spec!r}")
    return tuple(sorted(set(ks)))


def _is_item(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


def evaluate_ranked_lists(targets: Sequence, ranked: Sequence[Sequence], ks=DEFAULT_KS, n_items: int | None = None,
                          users: Sequence | None = None, sid_codes: np.ndarray | None = None) -> EvalResult:
    """Score ranked item lists. ``targets[i]`` is an item id or a list of them.

    Duplicates are dropped (first occurrence kept, later items move up). Entries that are not catalog ids
    (not an int, < 1, or > ``n_items`` when given) are *invalid*: they keep their slot as a miss and are
    counted in ``invalid_rate`` = invalid entries / all entries.
    """
    ks = parse_ks(ks)
    n = len(ranked)
    if n != len(targets):
        raise LlmrecError(f"{len(targets)} targets but {len(ranked)} ranked lists")
    if n == 0:
        raise LlmrecError("no examples to evaluate")
    L = max(ks)
    mat, total, invalid, dups = _ranked_matrix(ranked, L, n_items)
    multi = any(isinstance(t, (list, tuple, np.ndarray)) for t in targets)
    if multi:
        tsets = [set(int(x) for x in (t if isinstance(t, (list, tuple, np.ndarray)) else [t])) for t in targets]
        hits = np.array([[x in ts for x in row] for row, ts in zip(mat, tsets)], dtype=bool).reshape(n, L)
        n_t = np.array([len(ts) for ts in tsets])
        tcol = [sorted(ts) for ts in tsets]
    else:
        tarr = np.asarray(targets, dtype=np.int64)
        hits = mat == tarr[:, None]
        n_t = None
        tcol = tarr
    per = metrics_from_hits(hits, n_t, ks)
    metrics = mean_metrics(per)
    metrics.update({"n_users": n, "invalid_rate": invalid / total if total else 0.0,
                    "duplicate_rate": dups / total if total else 0.0, "n_invalid": invalid, "n_ranked": total})
    if sid_codes is not None and not multi:
        metrics.update(sid_prefix_accuracy(mat[:, 0], tcol, sid_codes))
    frame = pd.DataFrame({"user": list(users) if users is not None else np.arange(n), "target": tcol,
                          "rank": np.where(hits.any(1), hits.argmax(1), -1)})
    for k, v in per.items():
        frame[k] = v
    return EvalResult(metrics, frame, mat)


def _ranked_matrix(ranked: Sequence[Sequence], L: int, n_items: int | None) -> tuple[np.ndarray, int, int, int]:
    """Ranked lists -> ``[n, L]`` matrix (``-1`` = empty or invalid slot), vectorised.

    Duplicates are removed keeping the first occurrence (later entries move up); invalid entries keep their
    slot. Returns the matrix and the counts of entries, invalid entries and dropped duplicates.
    """
    n = len(ranked)
    lengths = np.fromiter((len(r) for r in ranked), np.int64, n)
    total = int(lengths.sum())
    flat = None
    if n and (lengths == lengths[0]).all() and lengths[0]:  # equal lengths: one C-level conversion
        arr = np.asarray(ranked).reshape(-1)
    else:
        flat = [x for r in ranked for x in r]
        arr = np.asarray(flat) if flat else np.zeros(0, np.int64)
    if arr.dtype.kind in "iu":
        vals = arr.astype(np.int64)
        valid = vals >= 1
    else:  # mixed types (strings, floats, None...): check entry by entry
        flat = flat if flat is not None else [x for r in ranked for x in r]
        valid = np.fromiter((_is_item(x) and x >= 1 for x in flat), bool, total)
        vals = np.fromiter((int(x) if ok else -1 for x, ok in zip(flat, valid)), np.int64, total)
    if n_items is not None:
        valid &= vals <= n_items
    invalid = int((~valid).sum())
    width = int(lengths.max()) if n else 0
    rows = np.repeat(np.arange(n), lengths)
    cols = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    # invalid entries get distinct negative values so they are never "duplicates" of each other
    full = np.full((n, max(width, 1)), -1, np.int64)
    full[rows, cols] = np.where(valid, vals, -2 - cols)
    order = np.argsort(full, axis=1, kind="stable")
    srt = np.take_along_axis(full, order, axis=1)
    dup_sorted = (srt[:, 1:] == srt[:, :-1]) & (srt[:, 1:] > 0)
    dup = np.zeros_like(full, dtype=bool)
    np.put_along_axis(dup, order[:, 1:], dup_sorted, axis=1)
    present = np.zeros_like(dup)
    present[rows, cols] = True
    keep = present & ~dup
    newpos = np.cumsum(keep, axis=1) - 1
    sel = keep & (newpos < L)
    mat = np.full((n, L), -1, np.int64)
    mat[np.nonzero(sel)[0], newpos[sel]] = np.maximum(full[sel], -1)
    return mat, total, invalid, int(dup.sum())


def sid_prefix_accuracy(pred: np.ndarray, target: np.ndarray, codes: np.ndarray) -> dict[str, float]:
    """Share of examples whose top-1 item shares the target's first l SID codes, for each level l."""
    codes = np.asarray(codes)
    pred = np.asarray(pred)
    ok = pred > 0
    pc = np.where(ok[:, None], codes[np.clip(pred, 0, len(codes) - 1)], -1)
    tc = codes[np.asarray(target)]
    same = np.cumprod(pc == tc, axis=1).astype(bool)
    return {f"sid_prefix_acc@{l + 1}": float(same[:, l].mean()) for l in range(codes.shape[1])}


def evaluate_scores(score_fn: Callable[[pd.DataFrame], "np.ndarray"], examples: pd.DataFrame, n_items: int,
                    ks=DEFAULT_KS, exclude_history: bool = False, batch_size: int = 256, ties: str = "expected",
                    keep_topk: int = 0, progress: bool = True, desc: str = "eval") -> EvalResult:
    """Full ranking over the catalog. ``score_fn(batch)`` gets a slice of ``examples`` (columns user, history,
    history_ts, target, ...) and returns scores ``[B, n_items + 1]`` (numpy or torch; column 0 = padding, ignored).

    ``exclude_history`` removes each example's history items from the candidates (the target itself always
    stays rankable, so repeat purchases are not made impossible).
    """
    import torch
    from tqdm.auto import tqdm

    ks = parse_ks(ks)
    n = len(examples)
    if n == 0:
        raise LlmrecError("no examples to evaluate")
    greater = np.empty(n, np.int64)
    equal = np.empty(n, np.int64)
    top = np.zeros((n, keep_topk), np.int64) if keep_topk else None
    targets_all = np.array(examples["target"], dtype=np.int64)  # a writable copy
    bar = tqdm(total=n, desc=desc, unit="ex", disable=not progress, leave=False)
    with torch.inference_mode():
        for s in range(0, n, batch_size):
            batch = examples.iloc[s: s + batch_size]
            scores = score_fn(batch)
            scores = torch.tensor(scores, dtype=torch.float32) if isinstance(scores, np.ndarray) else \
                scores.detach().float().clone()
            if scores.shape != (len(batch), n_items + 1):
                raise LlmrecError(f"score_fn returned shape {tuple(scores.shape)}, expected "
                                  f"({len(batch)}, {n_items + 1}) = (batch, n_items + 1)")
            t = torch.as_tensor(targets_all[s: s + len(batch)])
            scores[:, 0] = -torch.inf
            if exclude_history:
                rows = np.repeat(np.arange(len(batch)), [len(h) for h in batch["history"]])
                cols = np.concatenate([np.asarray(h, np.int64) for h in batch["history"]]) if len(rows) else \
                    np.zeros(0, np.int64)
                tscore = scores.gather(1, t[:, None]).clone()
                scores[torch.as_tensor(rows), torch.as_tensor(cols)] = -torch.inf
                scores.scatter_(1, t[:, None], tscore)
            ts = scores.gather(1, t[:, None])
            greater[s: s + len(batch)] = (scores > ts).sum(1).numpy()
            equal[s: s + len(batch)] = ((scores == ts).sum(1) - 1).numpy()
            if keep_topk:
                top[s: s + len(batch)] = scores.topk(keep_topk, dim=1).indices.numpy()
            bar.update(len(batch))
    bar.close()
    per = metrics_from_rank_counts(greater, equal, ks, ties)
    metrics = mean_metrics(per)
    metrics.update({"n_users": n, "invalid_rate": 0.0, "ties": ties, "exclude_history": exclude_history})
    frame = pd.DataFrame({"user": examples["user"].to_numpy(), "target": targets_all, "rank": greater,
                          "ties": equal})
    for k, v in per.items():
        frame[k] = v
    return EvalResult(metrics, frame, top)


def popularity_bins(train_items: np.ndarray, n_items: int, hot: float = 0.25, cold: float = 0.25) -> np.ndarray:
    """Bin per item id (0 hot, 1 middle, 2 cold) by training frequency: top 25% of items hot, bottom 25% cold."""
    counts = np.bincount(np.asarray(train_items, np.int64), minlength=n_items + 1)[1:]
    order = np.argsort(-counts, kind="stable")  # most popular first, ties by id
    bins = np.empty(n_items + 1, np.int8)
    bins[0] = -1
    n_hot, n_cold = int(round(hot * n_items)), int(round(cold * n_items))
    b = np.ones(n_items, np.int8)
    b[order[:n_hot]] = 0
    b[order[n_items - n_cold:]] = 2
    bins[1:] = b
    return bins


def metrics_by_bin(result: EvalResult, bins: np.ndarray, names=("hot", "middle", "cold")) -> dict[str, dict]:
    """Mean metrics of the examples whose target falls in each popularity bin."""
    pu = result.per_user
    tb = bins[pu["target"].to_numpy(np.int64)]
    cols = [c for c in pu.columns if "@" in c]
    out = {}
    for i, name in enumerate(names):
        sel = pu[tb == i]
        out[name] = {"n_users": int(len(sel)), **{c: float(sel[c].mean()) if len(sel) else 0.0 for c in cols}}
    return out


def read_predictions(path: str | Path) -> tuple[list, list, list]:
    """Read ``{"user", "target", "ranked"}`` JSON lines; errors name the line and field."""
    path = Path(path)
    if not path.is_file():
        raise LlmrecError(f"{path}: predictions file not found")
    lines, recs = [], []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise LlmrecError(f"{where(path, n)}: malformed JSON ({e.msg})") from None
            lines.append((n, None))
    users, targets, ranked = [], [], []
    for (n, _), rec in zip(lines, recs):
        if not isinstance(rec, dict):
            raise LlmrecError(f"{where(path, n)}: expected a JSON object with user, target, ranked")
        for key in ("target", "ranked"):
            if key not in rec:
                raise LlmrecError(f"{where(path, n, key)}: missing (each line needs user, target, ranked)")
        if not isinstance(rec["ranked"], list):
            raise LlmrecError(f"{where(path, n, 'ranked')}: expected a list of item ids, got "
                              f"{type(rec['ranked']).__name__}")
        t = rec["target"]
        if not (_is_item(t) or (isinstance(t, list) and all(_is_item(x) for x in t))):
            raise LlmrecError(f"{where(path, n, 'target')}: expected an item id (int) or a list of them, got {t!r}")
        users.append(rec.get("user", n))
        targets.append(t)
        ranked.append(rec["ranked"])
    if not ranked:
        raise LlmrecError(f"{path}: no predictions (empty file)")
    return users, targets, ranked


def write_predictions(path: str | Path, users: Iterable, targets: Iterable, ranked: Iterable,
                      scores: Iterable | None = None, extra: dict[str, Iterable] | None = None) -> None:
    """Write the JSONL that ``llmrec eval`` reads (atomic)."""
    import os
    import uuid

    from llmrec.artifacts import json_default
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    cols = {"user": users, "target": targets, "ranked": ranked}
    if scores is not None:
        cols["scores"] = scores
    cols.update(extra or {})
    with open(tmp, "w", encoding="utf-8") as f:
        for row in zip(*cols.values()):
            rec = {}
            for k, v in zip(cols, row):
                rec[k] = v.tolist() if hasattr(v, "tolist") else v
            f.write(json.dumps(rec, ensure_ascii=False, default=json_default) + "\n")
    os.replace(tmp, path)
