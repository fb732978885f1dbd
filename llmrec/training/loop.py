"""The small shared training loop for sequence baselines (SASRec, GPT-2, HSTU, HSTU-SID, TIGER).

One loop, so every baseline is trained and selected the same way:

* deterministic: the model is built after ``torch.manual_seed(seed)``; each epoch reseeds torch and numpy from
  ``(seed, epoch)``, so a run resumed at an epoch boundary follows exactly the path of an uninterrupted one;
* early stopping on validation NDCG@10 (``TrainConfig.metric``), evaluated through :mod:`llmrec.eval`;
* checkpoints in safetensors (model + optimizer) after every epoch, ``resume=True`` continues from them;
* the test split is scored once, with the best validation checkpoint only;
* tqdm progress per epoch, ``history.json`` and ``learning_curve.png`` (validation NDCG@10 per epoch).

The model-specific parts come in as three callables: ``batches(epoch, rng)`` (training batches),
``loss_fn(model, batch)`` and ``evaluate(model, examples, desc) -> EvalResult``. Shared helpers for next-item
models live here too: left-padded batching (:func:`pad_left`, :class:`NextItemData`), uniform negative
sampling that never returns the positive (:func:`sample_negatives`) and the three losses (:func:`bce_loss`,
:func:`sampled_softmax_loss`, :func:`full_softmax_loss`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from llmrec.artifacts import atomic_dir, read_json, write_json
from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"          # workdir/checkpoint/: last epoch (model, optimizer, state) for resume
BEST = "model.safetensors"         # workdir/model.safetensors: weights of the best validation epoch


@dataclass
class TrainConfig:
    """Options of the shared loop (every baseline YAML may set them next to its model options)."""

    epochs: int = 200              # maximum number of epochs
    batch_size: int = 128          # training sequences per step
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple = (0.9, 0.98)
    warmup_steps: int = 0          # linear warm-up, then constant learning rate
    grad_clip: float = 0.0         # max gradient norm (0 = off)
    patience: int = 10             # stop after this many validations without improvement
    eval_every: int = 1            # epochs between validations
    metric: str = "ndcg@10"        # validation metric that selects the checkpoint
    valid_users: int = 0           # 0 = all validation examples; N = a fixed random subset (for slow decoders)
    max_minutes: float = 0.0       # wall-clock budget for training (0 = none); stops after the current epoch
    session_minutes: float = 0.0   # wall-clock budget of *this* invocation: after the epoch that exceeds it, keep the
    #                                checkpoint and raise TrainingPaused (resume later); 0 = none
    eval_batch_size: int = 256
    threads: int = 0               # torch.set_num_threads (0 = leave torch's default)
    progress: bool = True

    def __post_init__(self):
        self.betas = tuple(float(b) for b in self.betas)
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1 or self.eval_every < 1:
            raise LlmrecError("epochs, batch_size, patience and eval_every must be >= 1 "
                              f"(got {self.epochs}, {self.batch_size}, {self.patience}, {self.eval_every})")
        if not self.lr > 0:
            raise LlmrecError(f"lr must be > 0, got {self.lr}")


def split_config(config: dict, model_cls, name: str) -> tuple[Any, TrainConfig, bool]:
    """Split a flat option mapping (YAML) into the model's dataclass, a :class:`TrainConfig` and ``resume``.

    Unknown keys are an error that lists the valid ones, so a typo never silently trains the default."""
    config = dict(config or {})
    resume = bool(config.pop("resume", False))
    mk = {f.name for f in dataclasses.fields(model_cls)}
    tk = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = sorted(set(config) - mk - tk)
    if bad:
        raise LlmrecError(f"{name}: unknown config key(s) {bad}; model options: {sorted(mk)}; "
                          f"training options: {sorted(tk)}")
    try:
        mcfg = model_cls(**{k: v for k, v in config.items() if k in mk})
        tcfg = TrainConfig(**{k: v for k, v in config.items() if k in tk and k not in mk})
    except TypeError as e:
        raise LlmrecError(f"{name}: bad config value ({e})") from None
    return mcfg, tcfg, resume


# --------------------------------------------------------------------------------------------------------
# batching for next-item models
# --------------------------------------------------------------------------------------------------------

def pad_left(seqs: list, max_len: int, dtype=np.int64) -> np.ndarray:
    """The last ``max_len`` entries of each sequence, right-aligned in a ``[B, W]`` array (0 = padding),
    ``W`` = the longest kept length. Right alignment puts every sequence's newest item in the last column."""
    seqs = [np.asarray(s)[-max_len:] if max_len > 0 else np.asarray(s)[:0] for s in seqs]
    width = max(1, max((len(s) for s in seqs), default=1))
    out = np.zeros((len(seqs), width), dtype=dtype)
    for i, s in enumerate(seqs):
        if len(s):
            out[i, width - len(s):] = s
    return out


class NextItemData:
    """Training examples for causal next-item models: per user, inputs ``s[:-1]`` and targets ``s[1:]`` (the last
    ``max_len`` positions), with their timestamps. Every position with a target contributes to the loss.

    Sequences longer than ``max_len + 1`` are cut into extra windows when ``windows`` is set (default: only the
    newest window, as SASRec does)."""

    def __init__(self, sequences: list, times: list | None, max_len: int, windows: bool = False):
        self.max_len = max_len
        self.inputs, self.targets, self.ts, self.next_ts = [], [], [], []
        times = times if times is not None else [np.zeros(len(s), np.int64) for s in sequences]
        for s, t in zip(sequences, times):
            s = np.asarray(s, np.int64)
            t = np.asarray(t, np.int64)
            if len(s) < 2:
                continue
            ends = [len(s)]
            if windows:
                ends = list(range(len(s), 1, -max_len))
            for e in ends:
                lo = max(0, e - max_len - 1)
                self.inputs.append(s[lo:e - 1])
                self.targets.append(s[lo + 1:e])
                self.ts.append(t[lo:e - 1])
                self.next_ts.append(t[lo + 1:e])
        if not self.inputs:
            raise LlmrecError("no training sequence has 2 or more items; nothing to learn from")

    def __len__(self) -> int:
        return len(self.inputs)

    def batch(self, idx) -> dict:
        """A left-padded batch: ``items``/``targets``/``ts``/``next_ts`` ``[B, W]`` tensors (targets 0 = no loss)."""
        return {"items": torch.from_numpy(pad_left([self.inputs[i] for i in idx], self.max_len)),
                "targets": torch.from_numpy(pad_left([self.targets[i] for i in idx], self.max_len)),
                "ts": torch.from_numpy(pad_left([self.ts[i] for i in idx], self.max_len)),
                "next_ts": torch.from_numpy(pad_left([self.next_ts[i] for i in idx], self.max_len))}

    def batches(self, batch_size: int, bucket: int = 50):
        """``batches(epoch, rng)`` for :func:`train`: a shuffled pass over all sequences.

        With ``bucket`` > 0, each random chunk of ``bucket * batch_size`` sequences is sorted by length before it
        is cut into batches (and the batches are shuffled), so a batch is padded to similar lengths: several times
        less work on short-history data such as Amazon reviews, at the same randomness between epochs."""
        lengths = np.array([len(x) for x in self.inputs])

        def make(epoch: int, rng: np.random.Generator):
            order = rng.permutation(len(self))
            if bucket > 0:
                chunk = bucket * batch_size
                parts = [order[s: s + chunk] for s in range(0, len(order), chunk)]
                order = np.concatenate([p[np.argsort(lengths[p], kind="stable")] for p in parts])
                cuts = [order[s: s + batch_size] for s in range(0, len(order), batch_size)]
                return _Batches(self, order, batch_size, cuts=[cuts[i] for i in rng.permutation(len(cuts))])
            return _Batches(self, order, batch_size)
        return make


class _Batches:
    def __init__(self, data: NextItemData, order: np.ndarray, batch_size: int, cuts: list | None = None):
        self.data = data
        self.cuts = cuts if cuts is not None else [order[s: s + batch_size] for s in range(0, len(order), batch_size)]

    def __len__(self) -> int:
        return len(self.cuts)

    def __iter__(self):
        for idx in self.cuts:
            yield self.data.batch(idx), len(idx)


def history_batch(examples: pd.DataFrame, max_len: int, with_time: bool = False) -> dict:
    """Left-padded ``items`` (and ``ts``) of evaluation examples' histories (the newest ``max_len`` items)."""
    out = {"items": torch.from_numpy(pad_left(list(examples["history"]), max_len))}
    if with_time:
        out["ts"] = torch.from_numpy(pad_left(list(examples["history_ts"]), max_len))
    return out


# --------------------------------------------------------------------------------------------------------
# negatives and losses
# --------------------------------------------------------------------------------------------------------

def sample_negatives(positives: torch.Tensor, n_items: int, n: int, generator: torch.Generator | None = None
                     ) -> torch.Tensor:
    """``[*positives.shape, n]`` item ids drawn uniformly from ``1..n_items`` *without* the positive.

    Draw ``r`` from ``1..n_items-1`` and shift it past the positive (``r >= pos -> r + 1``): the result is uniform
    over the other items and can never equal the positive (no masking, no rejection loop)."""
    if n_items < 2:
        raise LlmrecError("sampled losses need at least 2 items")
    r = torch.randint(1, n_items, (*positives.shape, n), generator=generator)
    return r + (r >= positives.unsqueeze(-1)).long()


def sample_shared_negatives(n_items: int, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` distinct item ids drawn uniformly from ``1..n_items``, shared by every position of a batch."""
    if n_items < 2:
        raise LlmrecError("sampled losses need at least 2 items")
    return torch.randperm(n_items, generator=generator)[: min(n, n_items)] + 1


def sampled_logits(h: torch.Tensor, pos: torch.Tensor, item_emb: Callable[[torch.Tensor], torch.Tensor],
                   n_items: int, n_negatives: int, negatives: str = "batch",
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``[P, 1 + N]`` scores of the positive (column 0) and N uniform negatives for outputs ``h`` ``[P, d]``.

    ``negatives="position"``: N negatives per position, never the positive (:func:`sample_negatives`).
    ``negatives="batch"``: one set of N distinct negatives shared by the whole batch; where a negative happens to
    be a position's positive its score is ``-inf``, so it never acts as a negative. Sharing turns the
    ``[P, N, d]`` gather into one ``[P, d] x [d, N]`` product: several times faster on CPU at equal N."""
    if negatives == "position":
        neg = sample_negatives(pos, n_items, n_negatives, generator)
        e = item_emb(torch.cat([pos[:, None], neg], dim=1))    # [P, 1 + N, d]
        return torch.einsum("pd,pnd->pn", h, e)
    if negatives != "batch":
        raise LlmrecError(f"negatives must be 'batch' or 'position', got {negatives!r}")
    neg = sample_shared_negatives(n_items, n_negatives, generator)
    lp = (h * item_emb(pos)).sum(-1, keepdim=True)
    ln = h @ item_emb(neg).T
    ln = ln.masked_fill(neg[None, :] == pos[:, None], -torch.inf)
    return torch.cat([lp, ln], dim=1)


def sampled_softmax_loss(h: torch.Tensor, pos: torch.Tensor, item_emb: Callable[[torch.Tensor], torch.Tensor],
                         n_items: int, n_negatives: int, temperature: float = 1.0, negatives: str = "batch",
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """Softmax over the positive and ``n_negatives`` uniform negatives per position (see :func:`sampled_logits`).
    ``h``: ``[P, d]`` outputs, ``pos``: ``[P]`` targets, ``item_emb(ids)`` -> embeddings."""
    logits = sampled_logits(h, pos, item_emb, n_items, n_negatives, negatives, generator) / temperature
    return F.cross_entropy(logits, torch.zeros(len(pos), dtype=torch.long))


def bce_loss(h: torch.Tensor, pos: torch.Tensor, item_emb: Callable, n_items: int, n_negatives: int = 1,
             negatives: str = "position", generator: torch.Generator | None = None) -> torch.Tensor:
    """SASRec's original loss: binary cross-entropy of the positive against ``n_negatives`` uniform negatives
    (the paper: one per position)."""
    logits = sampled_logits(h, pos, item_emb, n_items, n_negatives, negatives, generator)
    lp, ln = logits[:, 0], logits[:, 1:]
    ok = torch.isfinite(ln)
    return 0.5 * F.binary_cross_entropy_with_logits(lp, torch.ones_like(lp)) + \
        0.5 * F.binary_cross_entropy_with_logits(ln[ok], torch.zeros_like(ln[ok]))


def full_softmax_loss(h: torch.Tensor, pos: torch.Tensor, weight: torch.Tensor, temperature: float = 1.0
                      ) -> torch.Tensor:
    """Cross-entropy over the whole catalog (``weight``: ``[n_items + 1, d]``, row 0 = padding, never a class)."""
    logits = h @ weight[1:].T / temperature
    return F.cross_entropy(logits, pos - 1)


# --------------------------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------------------------

def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Model weights as safetensors (tied weights handled), written atomically."""
    from safetensors.torch import save_model
    tmp = path.with_name(f".{path.name}.tmp")
    save_model(model, str(tmp))
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    from safetensors.torch import load_model
    if not Path(path).is_file():
        raise LlmrecError(f"{path}: checkpoint not found")
    load_model(model, str(path))


def _save_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    from safetensors.torch import save_file
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{pid}.{k}"] = v.contiguous()
            else:
                scalars[f"{pid}.{k}"] = v
    save_file(tensors, str(folder / "optimizer.safetensors"))
    write_json(folder / "optimizer.json", {"param_groups": sd["param_groups"], "scalars": scalars})


def _load_optimizer(opt: torch.optim.Optimizer, folder: Path) -> None:
    from safetensors.torch import load_file
    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = read_json(folder / "optimizer.json")
    state: dict = {}
    for key, v in list(tensors.items()) + list(meta["scalars"].items()):
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def config_fingerprint(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------------------
# the loop
# --------------------------------------------------------------------------------------------------------

class TrainingPaused(LlmrecError):
    """Raised when ``session_minutes`` runs out: the epoch-boundary checkpoint is kept, nothing is scored, and the
    same call with ``resume=True`` continues exactly where this one stopped (for shared or preemptible machines)."""

    def __init__(self, message: str, epoch: int = 0, checkpoint: Path | None = None):
        super().__init__(message)
        self.epoch, self.checkpoint = epoch, checkpoint


@dataclass
class TrainResult:
    valid: Any                      # EvalResult of the best checkpoint on all validation examples
    test: Any                       # EvalResult of the best checkpoint on the test examples
    history: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


def metric_ks(ks, metric: str) -> tuple:
    """The evaluation cut-offs ``ks`` plus the one the selection ``metric`` (e.g. ``ndcg@10``) needs, so a run
    with ``--ks 5,20`` does not fail after its first epoch."""
    from llmrec.eval import parse_ks

    try:
        need = int(metric.split("@")[1])
    except (IndexError, ValueError):
        raise LlmrecError(f"metric {metric!r}: expected NAME@K, e.g. ndcg@10") from None
    return tuple(sorted(set(parse_ks(ks)) | {need}))


def train(model: torch.nn.Module, *, batches: Callable[[int, np.random.Generator], Iterable],
          loss_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
          evaluate: Callable[[torch.nn.Module, pd.DataFrame, str], Any],
          valid: pd.DataFrame, test: pd.DataFrame, cfg: TrainConfig, workdir: str | Path | None = None,
          seed: int = 0, resume: bool = False, fingerprint: dict | None = None, name: str = "model",
          parameters: Iterable | None = None) -> TrainResult:
    """Train ``model`` until validation ``cfg.metric`` stops improving; return the best checkpoint's valid/test
    results. ``batches(epoch, rng)`` yields ``(batch, n_sequences)``; ``loss_fn(model, batch)`` returns a scalar;
    ``evaluate(model, examples, desc)`` returns an :class:`llmrec.eval.EvalResult` (called in eval mode).

    ``workdir`` gets ``model.safetensors`` (best), ``history.json``, ``learning_curve.png`` and, while training,
    ``checkpoint/`` (removed at the end). ``resume=True`` continues from ``checkpoint/`` if it is there and was made
    with the same ``fingerprint`` (model + training config)."""
    from tqdm.auto import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    work = Path(workdir) if workdir is not None else None
    if work is not None:
        work.mkdir(parents=True, exist_ok=True)
    # what shapes the training path; budget and stopping options may change between sessions of one run
    fp = config_fingerprint({"fingerprint": fingerprint, "seed": seed, "train": {
        k: v for k, v in dataclasses.asdict(cfg).items()
        if k not in ("epochs", "patience", "max_minutes", "session_minutes", "progress", "threads",
                     "eval_batch_size")}})
    params = [p for p in (parameters if parameters is not None else model.parameters()) if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=cfg.betas)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / cfg.warmup_steps) if cfg.warmup_steps else 1.0)

    metric = cfg.metric
    vsub = valid
    if cfg.valid_users and cfg.valid_users < len(valid):
        pick = np.sort(np.random.default_rng(seed).choice(len(valid), cfg.valid_users, replace=False))
        vsub = valid.iloc[pick]

    state = {"epoch": 0, "step": 0, "best": -math.inf, "best_epoch": 0, "bad": 0, "history": [],
             "train_seconds": 0.0, "train_cpu_seconds": 0.0, "eval_seconds": 0.0, "sequences": 0,
             "fingerprint": fp}
    ck = work / CHECKPOINT if work is not None else None
    if ck is not None and (ck / "state.json").is_file():
        if not resume:
            raise LlmrecError(f"{ck}: an interrupted run is there; pass resume (--resume) to continue it or "
                              "remove the folder to start over")
        saved = read_json(ck / "state.json")
        if saved.get("fingerprint") != fp:
            raise LlmrecError(f"{ck}: checkpoint was made with a different model/training config or seed; "
                              "remove it to start over")
        load_weights(model, ck / "model.safetensors")
        _load_optimizer(opt, ck)
        sched.last_epoch = saved["step"]
        state = saved
        log.info("%s: resumed after epoch %d (best %s %.4f at epoch %d)", name, state["epoch"], metric,
                 state["best"], state["best_epoch"])

    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in params)
    say = tqdm.write if cfg.progress else log.info
    t_start = time.perf_counter()
    stopped = "max_epochs"
    ran = 0  # epochs trained in this session (a session always trains at least one)
    while state["epoch"] < cfg.epochs:
        epoch = state["epoch"] + 1
        if state["bad"] >= cfg.patience:
            stopped = "early_stopping"
            break
        if cfg.max_minutes and state["train_seconds"] + state["eval_seconds"] >= cfg.max_minutes * 60:
            stopped = "time_budget"
            break
        if cfg.session_minutes and ran and time.perf_counter() - t_start >= cfg.session_minutes * 60:
            if ck is None:
                raise LlmrecError("session_minutes needs a work folder to keep the checkpoint in")
            raise TrainingPaused(f"{name}: paused after epoch {state['epoch']} (session_minutes="
                                 f"{cfg.session_minutes}); the checkpoint is in {ck}: run the same command with "
                                 "--resume to continue", epoch=state["epoch"], checkpoint=ck)
        torch.manual_seed(seed * 1_000_003 + epoch)
        rng = np.random.default_rng([seed, epoch])
        model.train()
        it = batches(epoch, rng)
        t0, c0 = time.perf_counter(), time.process_time()
        total, n_b, n_seq = 0.0, 0, 0
        bar = tqdm(it, total=len(it) if hasattr(it, "__len__") else None, desc=f"{name} epoch {epoch}",
                   unit="step", disable=not cfg.progress, leave=False)
        for batch, n in bar:
            loss = loss_fn(model, batch)
            if not torch.isfinite(loss):
                raise LlmrecError(f"{name}: loss became {loss.item()} at epoch {epoch}, step {state['step']}; "
                                  "lower lr or check the data")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            sched.step()
            state["step"] += 1
            total += loss.detach().item()
            n_b += 1
            n_seq += n
            if n_b % 10 == 0:
                bar.set_postfix(loss=f"{total / n_b:.4f}")
        bar.close()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        state["train_seconds"] += dt
        state["train_cpu_seconds"] += dc
        state["sequences"] += n_seq
        rec = {"epoch": epoch, "step": state["step"], "loss": total / max(n_b, 1), "train_s": round(dt, 2),
               "train_seq_per_s": round(n_seq / dt, 1) if dt else None}
        if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
            te = time.perf_counter()
            model.eval()
            with torch.inference_mode():
                res = evaluate(model, vsub, f"{name} valid")
            state["eval_seconds"] += time.perf_counter() - te
            val = float(res.metrics[metric])
            rec.update({f"valid_{k}": float(v) for k, v in res.metrics.items()
                        if "@" in k and k.split("@")[0] in ("recall", "ndcg", "mrr") and int(k.split("@")[1]) <= 20})
            rec["eval_s"] = round(time.perf_counter() - te, 2)
            if val > state["best"]:
                state.update(best=val, best_epoch=epoch, bad=0)
                if work is not None:
                    save_weights(model, work / BEST)
            else:
                state["bad"] += 1
            say(f"{name} epoch {epoch}: loss {rec['loss']:.4f}  valid {metric} {val:.4f}  "
                f"(best {state['best']:.4f} @ {state['best_epoch']})  {dt:.1f}s")
        state["history"].append(rec)
        state["epoch"] = epoch
        ran += 1
        if work is not None:
            with atomic_dir(ck, overwrite=True) as tmp:
                save_weights(model, tmp / "model.safetensors")
                _save_optimizer(opt, tmp)
                write_json(tmp / "state.json", state)
            write_json(work / "history.json", state["history"])
    if stopped == "max_epochs" and state["bad"] >= cfg.patience:
        stopped = "early_stopping"

    if state["best_epoch"] == 0:  # never validated (epochs < eval_every): keep the last weights
        if work is not None:
            save_weights(model, work / BEST)
    elif work is not None:
        load_weights(model, work / BEST)
    model.eval()
    with torch.inference_mode():
        tv = time.perf_counter()
        vres = evaluate(model, valid, f"{name} valid (best)")
        tv = time.perf_counter() - tv
        tt, tc = time.perf_counter(), time.process_time()
        tres = evaluate(model, test, f"{name} test (best)")
        tt, tc = time.perf_counter() - tt, time.process_time() - tc
    info = {
        "epochs_run": state["epoch"], "best_epoch": state["best_epoch"], "stopped": stopped,
        f"best_valid_{metric}": state["best"] if state["best_epoch"] else None,
        "valid_examples_for_selection": len(vsub),
        "train_seconds": round(state["train_seconds"], 1), "train_cpu_seconds": round(state["train_cpu_seconds"], 1),
        "eval_seconds": round(state["eval_seconds"], 1),
        "train_sequences_per_s": round(state["sequences"] / state["train_seconds"], 1)
        if state["train_seconds"] else None,
        "train_sequences_per_cpu_s": round(state["sequences"] / state["train_cpu_seconds"], 1)
        if state["train_cpu_seconds"] else None,
        "inference_users_per_s": round(len(test) / tt, 1) if tt else None,
        "inference_users_per_cpu_s": round(len(test) / tc, 1) if tc else None,
        "test_eval_seconds": round(tt, 2), "valid_eval_seconds": round(tv, 2),
        "steps": state["step"], "n_parameters": int(n_params), "n_trainable_parameters": int(n_train),
        "torch_threads": torch.get_num_threads(),
        "session_seconds": round(time.perf_counter() - t_start, 1),
    }
    if work is not None:
        write_json(work / "history.json", state["history"])
        write_json(work / "train_info.json", info)
        plot_learning_curve(state["history"], work / "learning_curve.png", title=name, metric=metric)
        shutil.rmtree(ck, ignore_errors=True)
    return TrainResult(vres, tres, state["history"], info)


def plot_learning_curve(history: list, path: Path, title: str = "", metric: str = "ndcg@10") -> None:
    """Training loss and validation ``metric`` per epoch (PNG)."""
    pts = [(h["epoch"], h.get(f"valid_{metric}")) for h in history if h.get(f"valid_{metric}") is not None]
    if not history:
        return
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([h["epoch"] for h in history], [h["loss"] for h in history], color="tab:gray", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    if pts:
        ax2 = ax.twinx()
        ax2.plot(*zip(*pts), color="tab:blue", marker=".", label=f"valid {metric}")
        ax2.set_ylabel(f"valid {metric}")
        best = max(pts, key=lambda p: p[1])
        ax2.axvline(best[0], color="tab:blue", ls=":", lw=1)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------------------------------------
# glue for full-ranking next-item models (SASRec, GPT-2, HSTU, HSTU-SID)
# --------------------------------------------------------------------------------------------------------

def fit_next_item_model(model: torch.nn.Module, *, name: str, split, model_cfg, train_cfg: TrainConfig,
                        workdir: str | Path | None, seed: int, resume: bool = False, with_time: bool = False,
                        windows: bool = False, ks=None, exclude_history: bool = False,
                        extra_info: dict | None = None) -> dict:
    """Train a model that has ``loss(batch) -> scalar`` and ``score(batch) -> [B, n_items + 1]`` on the split's
    training sequences; return ``{"valid", "test", "info"}`` as :func:`llmrec.models.baselines.train_baseline`
    expects. ``model_cfg.max_len`` bounds the history."""
    from llmrec.eval import evaluate_scores

    ks = metric_ks(ks, train_cfg.metric)
    _, seqs = split.train_sequences()
    times = split.train_time_sequences() if with_time else None
    data = NextItemData(seqs, times, model_cfg.max_len, windows=windows)

    def evaluate(m, examples, desc, exclude=exclude_history):
        # score histories of similar length together (less padding), then restore the examples' order
        lengths = np.minimum(examples["history"].map(len).to_numpy(), model_cfg.max_len)
        order = np.argsort(lengths, kind="stable")
        res = evaluate_scores(lambda b: m.score(history_batch(b, model_cfg.max_len, with_time)),
                              examples.iloc[order], split.n_items, ks=ks, exclude_history=exclude,
                              batch_size=train_cfg.eval_batch_size, progress=train_cfg.progress, desc=desc)
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        res.per_user = res.per_user.iloc[inv].reset_index(drop=True)
        if res.topk is not None:
            res.topk = res.topk[inv]
        return res

    mc = dataclasses.asdict(model_cfg)
    if workdir is not None:
        Path(workdir).mkdir(parents=True, exist_ok=True)
        write_json(Path(workdir) / "model_config.json", {"model": name, **mc, "n_items": split.n_items})
    res = train(model, batches=data.batches(train_cfg.batch_size), loss_fn=lambda m, b: m.loss(b),
                evaluate=evaluate, valid=split.valid, test=split.test, cfg=train_cfg, workdir=workdir, seed=seed,
                resume=resume, fingerprint={"model": name, **mc, "exclude_history": exclude_history,
                             "n_items": split.n_items}, name=name)
    model.eval()
    with torch.inference_mode():  # the same best checkpoint under the other history rule, for comparison
        alt = evaluate(model, split.test, f"{name} test (exclude_history={not exclude_history})",
                       exclude=not exclude_history).metrics
    info = {**res.info, "train_sequences": len(data), **(extra_info or {}),
            "test_other_history_rule": {k: v for k, v in alt.items() if "@" in k or k == "exclude_history"}}
    return {"valid": res.valid, "test": res.test, "info": info, "history": res.history}
