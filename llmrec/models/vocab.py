"""Vocabulary extension: teach a Hugging Face causal LM the Semantic-ID tokens of an item tokenizer.

:func:`extend_model` adds one token per (level, code) of a :class:`~llmrec.tokenizers.SidTable`
(``<a_12>``, ``<b_7>``, ...) and optionally the wrappers ``<|sid_begin|>`` / ``<|sid_end|>``, resizes the
embeddings and initialises the new rows; :func:`save_extended` writes a normal ``save_pretrained`` folder with
everything recommendation needs inside it, so one path loads it all (:func:`load_extended`)::

    MODEL/
      config.json, model.safetensors, generation_config.json   the model (save_pretrained)
      tokenizer.json, tokenizer_config.json, ...                the tokenizer with the SID tokens
      sid/sids.parquet, sid/sid_table.json                      the item <-> SID table (SidTable.save)
      items.parquet                                             item, original_id, title (when known)
      llmrec.json                                               token format, levels, prompt template, base
      manifest.json                                             make_manifest: config, versions, inputs

Why the tokens are *normal* added tokens (``special_tokens=False``): TRL and most generation code decode with
``skip_special_tokens=True``; special SID tokens would vanish from completions (and from GRPO rewards). Normal
added tokens are still matched whole by the tokenizer, so each SID token is exactly one token id.

Initialisation of the new embedding rows (``init=``):

``mean``      every new row is the mean of the existing token rows (Hewitt, 2021): the extended model's output
              distribution over the old vocabulary is nearly unchanged and no new token starts as an outlier.
``text``      the row of SID token (level l, code c) is the mean, over the items whose level-l code is c, of the
              item's text vector in the model's own space (the mean input-embedding row of the item's title
              tokens). Tokens that share items start close together, so the model starts with semantics.
``codebook``  the SID codebook vectors (``codebooks.safetensors`` in the SID folder, one ``[K_l, d]`` matrix per
              level) are mapped into the model's space by a ridge least-squares projection ``W`` fitted on the
              items: ``x_i`` = sum of the item's codebook vectors (its quantised embedding), ``y_i`` = its text
              vector in the model's space (as for ``text``); token (l, c) gets ``mean(y) + (C_l[c] - mean_l) W``.
              Levels without a codebook (a disambiguation digit) fall back to ``text``.

ActionPiece (:class:`~llmrec.tokenizers.actionpiece.ActionPiece`) can stand in for the SID table everywhere here:
its ``<ap_N>`` tokens are added the same way (``init="mean"``; ``sid/`` then holds the ActionPiece folder and
``llmrec.json`` says ``item_tokenizer: actionpiece``). :func:`load_item_tokenizer` reads either kind.

For ``text`` and ``codebook`` the rows' deviations from the mean row are rescaled so that their average norm
equals that of the existing rows (averaging shrinks them). Untied output embeddings (``lm_head``) are
initialised the same way from their own matrix. Rows added only to pad the matrix to a multiple of 64 get the
mean row.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from llmrec.artifacts import atomic_dir, file_hashes, make_manifest, read_json, write_json
from llmrec.errors import LlmrecError
from llmrec.tokenizers.sid_table import SidTable

log = logging.getLogger(__name__)

SID_BEGIN = "<|sid_begin|>"
SID_END = "<|sid_end|>"
INIT_METHODS = ("mean", "text", "codebook")
INFO_FILE = "llmrec.json"
SID_SUBDIR = "sid"
ITEMS_FILE = "items.parquet"
FORMAT = "llmrec-sid-lm"
FORMAT_VERSION = 1
DEFAULT_BASE = "Qwen/Qwen3-0.6B"
# Files that make a folder an llmrec model besides the HF ones; copied along by copy_llmrec_files.
LLMREC_FILES = (INFO_FILE, SID_SUBDIR, ITEMS_FILE)


@dataclass
class LmInfo:
    """What ``llmrec.json`` records: how SIDs are written and prompted for this model.

    ``prompt`` names the template family in :mod:`llmrec.data_builders.prompts` the model is (to be) trained
    with; inference renders the same template. Training code updates it (e.g. ``max_history``) before saving.
    """

    base_model: str
    levels: int
    codebook_sizes: list[int]
    letters: str
    n_items: int
    wrap: bool = False
    sid_begin: str | None = None
    sid_end: str | None = None
    token_format: str = "<{letter}_{code}>"
    init: str = "mean"
    prompt: dict = field(default_factory=lambda: {"task": "seqrec", "template": 0, "max_history": 20,
                                                  "system": "default"})
    vocab: dict = field(default_factory=dict)      # tokenizer_len_before/after, embedding_rows, n_added, ...
    format: str = FORMAT
    version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)
    item_tokenizer: str = "rq"                     # "rq" (a SidTable) or "actionpiece"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict, path: str | Path = INFO_FILE) -> "LmInfo":
        if d.get("format") != FORMAT:
            raise LlmrecError(f"{path}: not an llmrec model description (format {d.get('format')!r}, "
                              f"expected {FORMAT!r})")
        known = {f for f in cls.__dataclass_fields__}
        missing = [k for k in ("base_model", "levels", "codebook_sizes", "letters", "n_items") if k not in d]
        if missing:
            raise LlmrecError(f"{path}: missing field(s) {missing}")
        return cls(**{k: v for k, v in d.items() if k in known})

    def item_text(self, sid_table: SidTable, item: int) -> str:
        """How item ``item`` is written in prompts and answers: its SID tokens, wrapped if ``wrap``."""
        s = sid_table.item_sid(item)
        return f"{self.sid_begin}{s}{self.sid_end}" if self.wrap else s

    def item_tokens(self, sid_table: SidTable, item: int) -> list[str]:
        """The token strings the model generates for ``item`` (wrappers included)."""
        toks = sid_table.item_tokens(item)
        return [self.sid_begin, *toks, self.sid_end] if self.wrap else toks

    def history_text(self, sid_table, items, rng=None) -> str:
        """How a history (item ids, oldest first) is written in a prompt.

        SIDs: the items' SIDs joined by ``", "``. ActionPiece: the history segmented as one sequence (tokens may
        span two adjacent items), no separators; ``rng`` (a seed or Generator) draws a set-permutation
        segmentation, ``None`` the deterministic one.
        """
        if is_actionpiece(sid_table):
            return "".join(sid_table.history_tokens(list(items), rng=rng))
        from llmrec.data_builders.prompts import format_history

        return format_history([self.item_text(sid_table, i) for i in items])


def is_actionpiece(table) -> bool:
    """Whether ``table`` is an ActionPiece tokenizer (else a :class:`SidTable`)."""
    from llmrec.tokenizers.actionpiece.tokenizer import ActionPiece

    return isinstance(table, ActionPiece)


def load_item_tokenizer(path: str | os.PathLike):
    """The item tokenizer stored in ``path``: a :class:`SidTable` (``sids.parquet``) or an ActionPiece folder
    (``vocab.json`` of format ``llmrec-actionpiece``, from ``llmrec sid build --method actionpiece``)."""
    path = Path(path)
    if (path / "vocab.json").is_file() and not (path / "sids.parquet").is_file():
        from llmrec.tokenizers.actionpiece.tokenizer import ActionPiece

        return ActionPiece.load(path)
    return SidTable.load(path)


def item_tokenizer_files(path: str | os.PathLike) -> list[Path]:
    """The files that define the item tokenizer in ``path`` (for manifests' input hashes)."""
    path = Path(path)
    if (path / "sids.parquet").is_file():
        return [path / "sids.parquet"]
    return [p for p in (path / "vocab.json", path / "item_features.json") if p.is_file()]


def sid_vocabulary(sid_table: SidTable, wrap: bool = False) -> list[str]:
    """Tokens to add: every (level, code) token of ``sid_table`` and, with ``wrap``, the two wrappers."""
    toks = sid_table.vocabulary()
    return toks + [SID_BEGIN, SID_END] if wrap else toks


def add_sid_tokens(tokenizer, tokens: Sequence[str]) -> list[int]:
    """Add ``tokens`` as normal (non-special) tokens and return their ids, checking each is one token.

    Tokens already in the vocabulary keep their id (so extending twice is harmless). Raises if the tokenizer
    does not encode a token to exactly its own single id (e.g. a slow tokenizer that splits on ``_``).
    """
    tokenizer.add_tokens(list(tokens), special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    unk = getattr(tokenizer, "unk_token_id", None)
    bad = [t for t, i in zip(tokens, ids) if i is None or (unk is not None and i == unk)]
    if bad:
        raise LlmrecError(f"the tokenizer did not accept the tokens {bad[:5]}")
    # Encode all tokens glued together (how SIDs appear in text) and check the split is one token each.
    probe = tokenizer("".join(tokens), add_special_tokens=False)["input_ids"]
    if list(probe) != list(ids):
        first = next((t for t, i in zip(tokens, ids) if tokenizer(t, add_special_tokens=False)["input_ids"] != [i]),
                     None)
        raise LlmrecError(f"SID tokens are not single tokens in this tokenizer (e.g. {first!r}); "
                          "use a fast (tokenizers-backed) tokenizer")
    return list(ids)


def _text_vectors(weight, tokenizer, texts: Sequence[str], batch: int = 4096):
    """Mean embedding row of each text's tokens (``[n, H]``, float32); empty texts give NaN rows."""
    import torch

    out = torch.full((len(texts), weight.shape[1]), float("nan"))
    w = weight.detach().float()
    for s in range(0, len(texts), batch):
        chunk = [str(t or "") for t in texts[s: s + batch]]
        enc = tokenizer(chunk, add_special_tokens=False)["input_ids"]
        lens = torch.tensor([len(e) for e in enc])
        flat = torch.tensor([i for e in enc for i in e], dtype=torch.long)
        if len(flat) == 0:
            continue
        offsets = torch.cat([torch.zeros(1, dtype=torch.long), lens.cumsum(0)[:-1]])
        vec = torch.nn.functional.embedding_bag(flat, w, offsets, mode="mean")
        ok = lens > 0
        out[s: s + len(chunk)][ok] = vec[ok]
    return out


def _rescale(rows, mu, ref_norm: float):
    """Scale deviations of ``rows`` from ``mu`` to an average norm of ``ref_norm``."""
    dev = rows - mu
    norm = dev.norm(dim=1).mean()
    return mu + dev * (ref_norm / norm) if norm > 0 else rows


def load_codebooks(sid_dir: str | Path) -> list:
    """Per-level codebook matrices from ``SID_DIR/codebooks.safetensors``.

    Accepted layouts: tensors named ``codebook.0``, ``codebook.1``, ... (what ``llmrec sid build`` writes; also
    ``level_0`` / ``codebook_0``), ``[K_l, d]`` each (levels without one, e.g. a disambiguation digit, have no
    codebook), or one ``codebooks`` tensor ``[L, K, d]``. Other tensors (encoder weights, scales) are ignored.
    Returns a list with one entry per level up to the last stored one (``None`` where missing).
    """
    import re

    from safetensors.numpy import load_file

    path = Path(sid_dir) / "codebooks.safetensors"
    if not path.is_file():
        raise LlmrecError(f"{path}: not found; --init codebook needs the codebooks of the SID build "
                          "(use --init text or mean for SIDs read from an index.json)")
    tensors = load_file(str(path))
    if "codebooks" in tensors:
        arr = tensors["codebooks"]
        if arr.ndim != 3:
            raise LlmrecError(f"{path}: 'codebooks' must be [levels, K, d], got shape {arr.shape}")
        return [arr[l] for l in range(arr.shape[0])]
    pat = re.compile(r"(?:level|codebook|codebooks)[._](\d+)")
    levels = sorted((int(m.group(1)), v) for k, v in tensors.items() if (m := pat.fullmatch(k)))
    if not levels:
        raise LlmrecError(f"{path}: expected tensors codebook.0, codebook.1, ... or 'codebooks'; "
                          f"got {sorted(tensors)[:8]}")
    out: list = [None] * (levels[-1][0] + 1)
    for l, v in levels:
        if v.ndim != 2:
            raise LlmrecError(f"{path}: level_{l} must be a [K, d] matrix, got shape {v.shape}")
        out[l] = v
    return out


def _init_rows(weight, new_ids, n_old: int, method: str, sid_table: SidTable, token_level_code: dict,
               tokenizer, item_texts, codebooks) -> None:
    """Write initial values into ``weight[new_ids]`` (in place, under no_grad)."""
    import torch

    W = weight.data
    old = W[:n_old].float()
    mu = old.mean(0)
    ref_norm = float((old - mu).norm(dim=1).mean())
    rows = mu.expand(len(new_ids), -1).clone()
    if method in ("text", "codebook"):
        # Item text vectors in the model's own space, from the (old) embedding rows of this matrix.
        vec = _text_vectors(W[:n_old], tokenizer, list(item_texts[1:]))
        valid = ~torch.isnan(vec).any(1)
        codes = torch.as_tensor(sid_table.codes[1:])
        proj = None
        if method == "codebook":
            books = codebooks
            x = torch.zeros(len(codes), next(b for b in books if b is not None).shape[1])
            for l, b in enumerate(books[: sid_table.levels]):
                if b is not None:
                    bt = torch.as_tensor(np.asarray(b), dtype=torch.float32)
                    if codes[:, l].max() >= len(bt):
                        raise LlmrecError(f"codebook of level {l} has {len(bt)} rows, SIDs use code "
                                          f"{int(codes[:, l].max())}")
                    x += bt[codes[:, l]]
            xs, ys = x[valid], vec[valid]
            xm, ym = xs.mean(0), ys.mean(0)
            xc, yc = xs - xm, ys - ym
            lam = 1e-3 * float((xc * xc).sum()) / max(1, xc.shape[1])
            A = xc.T @ xc + lam * torch.eye(xc.shape[1])
            proj = (torch.linalg.solve(A, xc.T @ yc), ym)
        lvl_rows: dict[tuple[int, int], torch.Tensor] = {}
        for l in range(sid_table.levels):
            book = None
            if proj is not None and l < len(codebooks) and codebooks[l] is not None:
                book = torch.as_tensor(np.asarray(codebooks[l]), dtype=torch.float32)
            if book is not None:
                used = torch.unique(codes[:, l])
                centred = book - book[used].mean(0)
                mapped = proj[1] + centred @ proj[0]
                for c in range(sid_table.codebook_sizes[l]):
                    if c < len(book):
                        lvl_rows[(l, c)] = mapped[c]
            else:
                col = codes[:, l][valid]
                v = vec[valid]
                sums = torch.zeros(sid_table.codebook_sizes[l], v.shape[1]).index_add_(0, col, v)
                cnt = torch.bincount(col, minlength=sid_table.codebook_sizes[l])
                for c in torch.nonzero(cnt).flatten().tolist():
                    lvl_rows[(l, c)] = sums[c] / cnt[c]
        idx, vals = [], []
        for j, tid in enumerate(new_ids):
            lc = token_level_code.get(tid)
            if lc is not None and lc in lvl_rows:
                idx.append(j)
                vals.append(lvl_rows[lc])
        if vals:
            rows[idx] = _rescale(torch.stack(vals), mu, ref_norm)
    elif method != "mean":
        raise LlmrecError(f"unknown init method {method!r}; choose from {INIT_METHODS}")
    with torch.no_grad():
        W[torch.as_tensor(new_ids)] = rows.to(W.dtype)


def extend_model(model, tokenizer, sid_table: SidTable, wrap: bool = False, init: str = "mean",
                 item_texts: Sequence[str] | None = None, codebooks: list | None = None,
                 pad_to_multiple_of: int = 64, base_model: str | None = None) -> LmInfo:
    """Add the SID tokens of ``sid_table`` to ``tokenizer`` and ``model`` in place and initialise them.

    ``item_texts[item]`` (row 0 unused) is needed for ``init="text"``/``"codebook"``; ``codebooks`` (see
    :func:`load_codebooks`) for ``"codebook"``. Returns the :class:`LmInfo` to save with the model.
    """
    if init not in INIT_METHODS:
        raise LlmrecError(f"unknown init method {init!r}; choose from {', '.join(INIT_METHODS)}")
    ap = is_actionpiece(sid_table)
    if ap and init != "mean":
        raise LlmrecError(f"--init {init} is for SID tables; ActionPiece tokens are initialised with --init mean")
    if ap and wrap:
        raise LlmrecError("ActionPiece histories have no item boundaries; extend without --wrap")
    if model.config.is_encoder_decoder:
        raise LlmrecError("vocabulary extension is for decoder-only causal LMs (got an encoder-decoder model)")
    # Validate everything before touching the tokenizer or the model.
    if init in ("text", "codebook"):
        if item_texts is None:
            raise LlmrecError(f"--init {init} needs item texts (pass the dataset with --data)")
        if len(item_texts) != sid_table.n_items + 1:
            raise LlmrecError(f"{len(item_texts) - 1} item texts for {sid_table.n_items} items in the SID table")
    if init == "codebook" and (not codebooks or all(b is None for b in codebooks)):
        raise LlmrecError("--init codebook needs the SID codebooks (codebooks.safetensors of the SID build)")
    n_before = len(tokenizer)
    tokens = sid_vocabulary(sid_table, wrap)
    ids = add_sid_tokens(tokenizer, tokens)
    n_after = len(tokenizer)
    emb = model.get_input_embeddings()
    rows_before = emb.weight.shape[0]
    if n_before > rows_before:
        raise LlmrecError(f"the tokenizer has {n_before} tokens but the model only {rows_before} embedding rows; "
                          "are they from the same checkpoint?")
    mult = max(1, int(pad_to_multiple_of or 1))
    rows = max(rows_before, math.ceil(n_after / mult) * mult)
    if rows != rows_before:
        model.resize_token_embeddings(rows, mean_resizing=False)
    # New token ids plus the padding rows beyond the tokenizer (never produced by it, but must not be garbage).
    new_ids = sorted(set(i for i in ids if i >= n_before) | set(range(n_after, rows)))
    # token id -> (level, code); ``ids`` follows sid_vocabulary(): level by level, code by code.
    pairs = [] if ap else [(l, c) for l, k in enumerate(sid_table.codebook_sizes) for c in range(k)]
    level_code = dict(zip(ids, pairs))
    if new_ids:
        _init_rows(model.get_input_embeddings().weight, new_ids, n_before, init, sid_table, level_code, tokenizer,
                   item_texts, codebooks)
        out = model.get_output_embeddings()
        if out is not None and out.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            _init_rows(out.weight, new_ids, n_before, init, sid_table, level_code, tokenizer, item_texts,
                       codebooks)
            if getattr(out, "bias", None) is not None:
                out.bias.data[new_ids] = out.bias.data[:n_before].mean()
    for cfg in (model.config, model.generation_config):
        if getattr(cfg, "pad_token_id", None) is None and tokenizer.pad_token_id is not None:
            cfg.pad_token_id = tokenizer.pad_token_id
    log.info("added %d SID tokens (%d new ids), embedding rows %d -> %d, init %s", len(tokens), n_after - n_before,
             rows_before, rows, init)
    base = base_model or getattr(model.config, "_name_or_path", "") or getattr(tokenizer, "name_or_path", "")
    if ap:  # levels = feature positions; no codebooks
        shape = dict(levels=sid_table.n_positions, codebook_sizes=[], letters="", item_tokenizer="actionpiece",
                     token_format="<ap_{id}>")
    else:
        shape = dict(levels=sid_table.levels, codebook_sizes=list(sid_table.codebook_sizes),
                     letters=sid_table.letters[: sid_table.levels])
    return LmInfo(base_model=str(base), **shape, n_items=sid_table.n_items, wrap=wrap,
                  sid_begin=SID_BEGIN if wrap else None, sid_end=SID_END if wrap else None, init=init,
                  vocab={"tokenizer_len_before": n_before, "tokenizer_len": n_after, "n_sid_tokens": len(tokens),
                         "n_added": n_after - n_before, "embedding_rows_before": rows_before,
                         "embedding_rows": rows, "pad_to_multiple_of": mult,
                         "first_sid_token_id": int(min(ids)), "last_sid_token_id": int(max(ids))})


def save_extended(out: str | os.PathLike, model, tokenizer, sid_table: SidTable, info: LmInfo,
                  items=None, overwrite: bool = False, config: dict | None = None,
                  inputs: dict | None = None, seed: int | None = None) -> Path:
    """Write the one-folder model (layout in the module docstring) atomically.

    ``items`` is a DataFrame with ``item``, ``original_id``, ``title`` (what ``recommend``/``chat`` print).
    """
    out = Path(out)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / SID_SUBDIR).mkdir()
        sid_table.save(tmp / SID_SUBDIR)
        if items is not None:
            cols = [c for c in ("item", "original_id", "title") if c in items.columns]
            items[cols].to_parquet(tmp / ITEMS_FILE, index=False)
        write_json(tmp / INFO_FILE, info.to_dict())
        write_json(tmp / "manifest.json", make_manifest("sid-lm", config=config or {}, inputs=inputs or {},
                                                        seed=seed, llmrec=info.to_dict()))
    return out


def copy_llmrec_files(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy ``llmrec.json``, ``sid/`` and ``items.parquet`` from model folder ``src`` to ``dst``.

    Trainers call this on every checkpoint / final folder they write with ``save_pretrained`` so each of them
    loads with :func:`load_extended`.
    """
    src, dst = Path(src), Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    for name in LLMREC_FILES:
        p = src / name
        if p.is_dir():
            shutil.copytree(p, dst / name, dirs_exist_ok=True)
        elif p.is_file():
            shutil.copy2(p, dst / name)


def read_info(path: str | os.PathLike) -> LmInfo:
    path = Path(path)
    if not (path / INFO_FILE).is_file():
        raise LlmrecError(f"{path}: no {INFO_FILE}; is it a folder written by `llmrec model extend` "
                          "(or a training run of one)?")
    return LmInfo.from_dict(read_json(path / INFO_FILE), path / INFO_FILE)


def load_items(path: str | os.PathLike):
    """``items.parquet`` of a model folder (``None`` when the model was extended without a dataset)."""
    import pandas as pd

    p = Path(path) / ITEMS_FILE
    return pd.read_parquet(p) if p.is_file() else None


def load_extended(path: str | os.PathLike, device: str | None = None, dtype="auto",
                  trust_remote_code: bool = False):
    """``(model, tokenizer, sid_table, info)`` from one folder written by :func:`save_extended` or a trainer.

    A folder holding a PEFT adapter (``adapter_config.json``) is loaded on its base and merged. The model is
    returned in eval mode on ``device`` (default: CUDA when available, else CPU).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    info = read_info(path)
    if not (path / SID_SUBDIR).is_dir():
        raise LlmrecError(f"{path}: no {SID_SUBDIR}/ folder with the SID table")
    sid_table = load_item_tokenizer(path / SID_SUBDIR)
    if is_actionpiece(sid_table) != (info.item_tokenizer == "actionpiece"):
        raise LlmrecError(f"{path}: {SID_SUBDIR}/ holds {'an ActionPiece' if is_actionpiece(sid_table) else 'a SID'} "
                          f"tokenizer but {INFO_FILE} says item_tokenizer={info.item_tokenizer!r}")
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code)
    if (path / "adapter_config.json").is_file():
        try:
            from peft import AutoPeftModelForCausalLM
        except ImportError:
            raise LlmrecError(f"{path} holds a PEFT adapter: install peft") from None
        model = AutoPeftModelForCausalLM.from_pretrained(str(path), dtype=dtype,
                                                         trust_remote_code=trust_remote_code).merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=trust_remote_code)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    ids = tokenizer.convert_tokens_to_ids(sid_vocabulary(sid_table, info.wrap))
    if any(i is None or i >= model.get_input_embeddings().weight.shape[0] for i in ids):
        raise LlmrecError(f"{path}: the tokenizer/model do not contain all SID tokens of {SID_SUBDIR}/")
    if not is_actionpiece(sid_table) and (sid_table.levels != info.levels
                                          or list(sid_table.codebook_sizes) != list(info.codebook_sizes)):
        raise LlmrecError(f"{path}: {SID_SUBDIR}/ ({sid_table.levels} levels) does not match {INFO_FILE} "
                          f"({info.levels} levels)")
    return model, tokenizer, sid_table, info


def extend_pretrained(base: str, sid_dir: str | os.PathLike, out: str | os.PathLike, init: str = "mean",
                      wrap: bool = False, data: str | os.PathLike | None = None, dtype: str = "auto",
                      pad_to_multiple_of: int = 64, overwrite: bool = False,
                      trust_remote_code: bool = False, tokenizer: str | None = None) -> Path:
    """``llmrec model extend``: load ``base`` (hub name or folder), extend it with ``SID_DIR``, save to ``out``.

    ``data`` (a dataset folder) supplies item titles/texts: needed for ``init`` text/codebook and stored as
    ``items.parquet`` so recommendations show titles. ``base="tiny-qwen3"`` builds a small Qwen3-architecture
    model from a config (offline; ``tokenizer`` names the tokenizer folder, else a fallback BPE is trained).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sid_dir = Path(sid_dir)
    sid_table = load_item_tokenizer(sid_dir)
    items = texts = None
    if data is not None:
        from llmrec.data_builders.dataset import load_dataset

        ds = load_dataset(data)
        if ds.n_items != sid_table.n_items:
            raise LlmrecError(f"{data} has {ds.n_items} items but {sid_dir} has SIDs for {sid_table.n_items}")
        items = ds.items
        texts = [ds.titles[i] or ds.texts[i] for i in range(ds.n_items + 1)]
    elif init != "mean":
        raise LlmrecError(f"--init {init} needs --data DATASET (the item texts)")
    codebooks = load_codebooks(sid_dir) if init == "codebook" else None
    if base == "tiny-qwen3":
        from llmrec.models.tiny import tiny_lm

        model, tok = tiny_lm(tokenizer, texts=texts[1:] if texts is not None else None)
    else:
        try:
            tok = AutoTokenizer.from_pretrained(tokenizer or base, trust_remote_code=trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(base, dtype=dtype, trust_remote_code=trust_remote_code)
        except OSError as e:
            raise LlmrecError(f"cannot load base model {base!r}: {e}") from None
    info = extend_model(model, tok, sid_table, wrap=wrap, init=init, item_texts=texts, codebooks=codebooks,
                        pad_to_multiple_of=pad_to_multiple_of, base_model=base)
    inputs = file_hashes(item_tokenizer_files(sid_dir) + [p for p in [sid_dir / "sid_table.json"] if p.is_file()])
    cfg = {"base": base, "sid_dir": str(sid_dir), "init": init, "wrap": wrap, "data": str(data) if data else None,
           "pad_to_multiple_of": pad_to_multiple_of, "tokenizer": tokenizer}
    return save_extended(out, model, tok, sid_table, info, items=items, overwrite=overwrite, config=cfg,
                         inputs=inputs)
