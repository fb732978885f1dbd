"""LC-Rec-style instruction data: the supervised tasks that teach a language model to speak item SIDs.

One call, :func:`build_instructions`, turns a dataset folder + a split + a SID table into a Hugging Face
``datasets.DatasetDict`` saved on disk (``train`` and ``valid``), plus ``instructions.json`` (the manifest):

* sequence tasks (``seqrec``, ``seq2title``, ``titleseq2sid``, ``prefsearch``) use sliding-window prefixes of the
  users' **training** sequences only (``load_split(...).train``): every position ``t >= min_history`` gives
  (the previous ``<= max_history`` items -> item ``t``). Validation and test targets therefore never appear as
  training targets, nor in a training history: that is the no-leakage rule, checked by
  :func:`check_no_leakage`.
* item tasks (``title2sid``, ``desc2sid``, ``titledesc2sid``, ``sid2title``, ``itemsearch``) cover the catalog
  (every item with the needed text, or only items seen in training with ``item_scope="train"``). They align
  item text with SIDs and carry no user behaviour.
* ``valid`` holds one ``seqrec`` example per validation user (the split's history -> target) for an evaluation
  loss; constrained-beam evaluation reads the split itself.

Every row: ``task``, ``template`` (paraphrase index), ``messages`` (system?, user, assistant), ``user`` (-1 for
item tasks), ``history`` (item ids), ``target`` (item id). Rendering goes through
:mod:`llmrec.data_builders.prompts` only, so training prompts equal inference prompts.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from llmrec.artifacts import atomic_dir, file_hashes, make_manifest, read_json, write_json
from llmrec.data_builders.dataset import Dataset, load_dataset
from llmrec.data_builders.prompts import (ANSWER_KIND, SYSTEM_PROMPT, TEMPLATES, format_history, quote_title,
                                          render_messages)
from llmrec.data_builders.splits import Split, load_split
from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)

MANIFEST = "instructions.json"
SEQUENCE_TASKS = ("seqrec", "seq2title", "titleseq2sid", "prefsearch")
ITEM_TASKS = ("title2sid", "desc2sid", "titledesc2sid", "sid2title", "itemsearch")
ALL_TASKS = SEQUENCE_TASKS + ITEM_TASKS
# SID wrappers, as llmrec.models.vocab adds them with --wrap (kept equal by a test)
SID_BEGIN, SID_END = "<|sid_begin|>", "<|sid_end|>"
# Item text fields a task cannot do without (``any`` of the tuple is enough for the search tasks).
NEEDS: dict[str, tuple[str, ...]] = {
    "seqrec": (), "seq2title": ("title",), "titleseq2sid": ("title",), "prefsearch": ("title", "description"),
    "title2sid": ("title",), "desc2sid": ("description",), "titledesc2sid": ("title", "description"),
    "sid2title": ("title",), "itemsearch": ("title", "description"),
}
_NEEDS_ALL = {"titledesc2sid"}  # needs every field listed, the others need any of them

# Default sampling ratios: expected copies per source example (1 = each once; 0.3 = a 30 % sample; 2 = twice,
# each copy with its own random template).
DEFAULT_RATIOS = {"seqrec": 1.0, "seq2title": 0.2, "titleseq2sid": 0.2, "prefsearch": 0.1, "title2sid": 1.0,
                  "desc2sid": 0.5, "titledesc2sid": 0.5, "sid2title": 1.0, "itemsearch": 1.0}

_WORD = re.compile(r"[A-Za-z][A-Za-z0-9'\-]+")
_STOP = frozenset("""a an and are as at be by for from has have in is it its of on or that the this to was were
will with your you our we can not no all any each more most other some such only own same so than too very just
new pack set pcs piece pieces inch inches oz ounce ounces fl count size""".split())


@dataclass
class InstructionConfig:
    """What :func:`build_instructions` makes. Every field is recorded in the manifest."""

    tasks: tuple[str, ...] = ALL_TASKS
    ratios: dict[str, float] = field(default_factory=dict)   # task -> ratio; missing tasks use DEFAULT_RATIOS
    max_history: int = 20          # cap on history items (the most recent are kept)
    min_history: int = 1           # shortest prefix that yields a sequence example
    windows: str = "all"           # "all": every prefix (sliding windows); "last": each user's last window only
    template_mode: str = "random"  # "random": a random paraphrase per example; "first": template 0 only
    system_prompt: str | None = SYSTEM_PROMPT
    item_scope: str = "all"        # item tasks over "all" catalog items or only items in training interactions
    max_text_words: int = 48       # descriptions are cut to this many words
    wrap: bool = False             # write SIDs as <|sid_begin|>...<|sid_end|> (models extended with --wrap)
    seed: int = 0

    def __post_init__(self):
        self.tasks = tuple(self.tasks)
        bad = [t for t in self.tasks if t not in ALL_TASKS]
        if bad:
            raise LlmrecError(f"unknown instruction task(s) {bad}; known: {', '.join(ALL_TASKS)}")
        bad = [t for t in self.ratios if t not in ALL_TASKS]
        if bad:
            raise LlmrecError(f"ratios for unknown task(s) {bad}; known: {', '.join(ALL_TASKS)}")
        if any(float(r) < 0 for r in self.ratios.values()):
            raise LlmrecError(f"ratios must be >= 0, got {self.ratios}")
        if self.windows not in ("all", "last"):
            raise LlmrecError(f"windows must be 'all' or 'last', got {self.windows!r}")
        if self.template_mode not in ("random", "first"):
            raise LlmrecError(f"template_mode must be 'random' or 'first', got {self.template_mode!r}")
        if self.item_scope not in ("all", "train"):
            raise LlmrecError(f"item_scope must be 'all' or 'train', got {self.item_scope!r}")
        if self.max_history < 1 or self.min_history < 1:
            raise LlmrecError("max_history and min_history must be >= 1")

    def ratio(self, task: str) -> float:
        return float(self.ratios.get(task, DEFAULT_RATIOS[task]))


# --------------------------------------------------------------------------------------------------------------
# SIDs
# --------------------------------------------------------------------------------------------------------------
def load_sids(sids, dataset: Dataset):
    """A :class:`SidTable` from a SID folder (``sids.parquet``) or an LC-Rec/MiniOneRec ``*.index.json``
    (matched to the dataset by original item ids), checked against the dataset's catalog. An ActionPiece
    tokenizer (object or folder from ``llmrec sid build --method actionpiece``) is accepted too."""
    from llmrec.models.vocab import is_actionpiece
    from llmrec.tokenizers.sid_table import SidTable

    if is_actionpiece(sids) or (not isinstance(sids, SidTable) and Path(sids).is_dir()
                                and (Path(sids) / "vocab.json").is_file()
                                and not (Path(sids) / "sids.parquet").is_file()):
        from llmrec.tokenizers.actionpiece.tokenizer import ActionPiece

        ap = sids if is_actionpiece(sids) else ActionPiece.load(sids)
        if sorted(ap.item_ids, key=str) != sorted(range(1, dataset.n_items + 1), key=str):
            raise LlmrecError(f"ActionPiece tokenizer covers {ap.n_items} items, dataset {dataset.path} has items "
                              f"1..{dataset.n_items}; build it from this dataset (llmrec sid build --method "
                              "actionpiece --dataset ...)")
        return ap
    if isinstance(sids, SidTable):
        table = sids
    else:
        p = Path(sids)
        if p.is_file() and p.suffix == ".json":
            orig = np.empty(dataset.n_items + 1, dtype=object)
            orig[0] = ""
            orig[dataset.items["item"].to_numpy()] = dataset.items["original_id"].astype(str).to_numpy()
            table = SidTable.from_index_json(p, original_ids=orig)
        else:
            table = SidTable.load(p)
    if table.n_items != dataset.n_items:
        raise LlmrecError(f"SID table has {table.n_items} items but dataset {dataset.path} has {dataset.n_items}; "
                          "build the SIDs from this dataset's item embeddings")
    n_unique = table.n_unique()
    if n_unique < table.n_items:
        log.warning("SID table: %d items share a SID with another item (%d unique SIDs for %d items); targets of "
                    "those items are ambiguous. Build SIDs with a disambiguation level.",
                    table.n_items - n_unique, n_unique, table.n_items)
    return table


# --------------------------------------------------------------------------------------------------------------
# item text helpers
# --------------------------------------------------------------------------------------------------------------
def _field(ds: Dataset, name: str) -> np.ndarray:
    """``[n_items + 1]`` strings of an item column ('' where missing or absent)."""
    out = np.full(ds.n_items + 1, "", dtype=object)
    if name in ds.items.columns:
        vals = ds.items[name].fillna("").astype(str).str.strip().to_numpy()
        out[ds.items["item"].to_numpy()] = vals
    return out


def _cut_words(text: str, n: int) -> str:
    words = text.split()
    return text if len(words) <= n else " ".join(words[:n]) + " ..."


def _keywords(text: str, exclude: set[str]) -> list[str]:
    seen, out = set(), []
    for w in _WORD.findall(text):
        lw = w.lower()
        if lw in _STOP or lw in exclude or lw in seen or len(lw) < 3:
            continue
        seen.add(lw)
        out.append(lw)
    return out


def build_query(rng: np.random.Generator, title: str, description: str = "", brand: str = "",
                category: str = "") -> str | None:
    """A short search query from item metadata: category + brand + a few key words, in a random phrasing.

    Key words come from the title (and description), lower-cased, stop words and brand words removed, so a
    query is never the title itself. Returns ``None`` when the item has no usable text.
    """
    brand_words = {w.lower() for w in _WORD.findall(brand)}
    kw = _keywords(title, brand_words)
    if len(kw) < 3 and description:
        kw += [w for w in _keywords(description, brand_words) if w not in kw]
    cat = category.split(",")[-1].strip().lower() if category else ""
    if not kw and not cat:
        return None
    k = min(len(kw), int(rng.integers(2, 5)))
    words = " ".join(kw[i] for i in sorted(rng.choice(len(kw), size=k, replace=False).tolist())) if k else ""
    by = brand if brand and rng.random() < 0.7 else ""
    style = int(rng.integers(3))
    if style == 0:    # "waterproof mascara black eye makeup from Maybelline"
        parts = (words, cat, f"from {by}" if by else "")
    elif style == 1:  # "a eye makeup from Maybelline with waterproof mascara"
        parts = (f"a {cat}" if cat else "something", f"from {by}" if by else "", f"with {words}" if words else "")
    else:             # "waterproof mascara, eye makeup, brand Maybelline"
        parts = (words, cat, f"brand {by}" if by else "")
    sep = ", " if style == 2 else " "
    return sep.join(p for p in parts if p)


# --------------------------------------------------------------------------------------------------------------
# building
# --------------------------------------------------------------------------------------------------------------
def _copies(rng: np.random.Generator, ratio: float, n: int) -> np.ndarray:
    """Copies per source example so that the expected count is ``ratio * n``."""
    base = math.floor(ratio)
    return base + (rng.random(n) < (ratio - base)).astype(np.int64)


def _available(task: str, fields: dict[str, np.ndarray]) -> tuple[bool, str]:
    need = NEEDS[task]
    if not need:
        return True, ""
    present = {f: int((fields[f][1:] != "").sum()) for f in need}
    ok = all(present.values()) if task in _NEEDS_ALL else any(present.values())
    if ok:
        return True, ""
    missing = [f for f, n in present.items() if n == 0]
    return False, f"no item has a {' / '.join(missing)} (the dataset's items.parquet lacks it)"


class _Builder:
    def __init__(self, ds: Dataset, split: Split, table, cfg: InstructionConfig):
        self.ds, self.split, self.table, self.cfg = ds, split, table, cfg
        self.rng = np.random.default_rng(cfg.seed)
        from llmrec.models.vocab import is_actionpiece

        self.ap = is_actionpiece(table)
        if self.ap and cfg.wrap:
            raise LlmrecError("ActionPiece item tokens are not wrapped (wrap: false)")
        # ActionPiece histories: a set-permutation segmentation per example (its own generator, so that the
        # other random draws stay those of a SID build)
        self.seg_rng = np.random.default_rng([cfg.seed, 1])
        b, e = (SID_BEGIN, SID_END) if cfg.wrap else ("", "")
        self.sid = np.asarray([""] + [f"{b}{table.item_sid(i)}{e}" for i in range(1, table.n_items + 1)],
                              dtype=object)
        self.fields = {f: _field(ds, f) for f in ("title", "description", "brand", "categories")}
        self.fields["description"] = np.asarray([_cut_words(t, cfg.max_text_words) if t else ""
                                                 for t in self.fields["description"]], dtype=object)
        self.rows: dict[str, list] = {k: [] for k in ("task", "template", "messages", "user", "history", "target")}

    def history(self, hist, train: bool = True) -> str:
        """Prompt text of a history: SIDs joined by ", ", or (ActionPiece) the whole history segmented, with
        set-permutation regularisation for training examples and the deterministic segmentation otherwise."""
        if self.ap:
            return "".join(self.table.history_tokens([int(x) for x in hist],
                                                     rng=self.seg_rng if train else None))
        return format_history(self.sid[hist])

    def template(self, task: str) -> int:
        if self.cfg.template_mode == "first":
            return 0
        return int(self.rng.integers(len(TEMPLATES[task])))

    def answer(self, task: str, item: int) -> str:
        return self.sid[item] if ANSWER_KIND[task] == "sid" else self.fields["title"][item]

    def add(self, task: str, user: int, hist_ids, target: int, **fields) -> None:
        tpl = self.template(task)
        msgs = render_messages(task, tpl, system=self.cfg.system_prompt, **fields)
        msgs.append({"role": "assistant", "content": self.answer(task, target)})
        r = self.rows
        r["task"].append(task)
        r["template"].append(tpl)
        r["messages"].append(msgs)
        r["user"].append(int(user))
        r["history"].append([int(x) for x in hist_ids])
        r["target"].append(int(target))

    def sequence_task(self, task: str, users, seqs) -> int:
        cfg, title = self.cfg, self.fields["title"]
        n0 = len(self.rows["task"])
        for u, seq in zip(users, seqs):
            n = len(seq)
            if n <= cfg.min_history:
                continue
            pos = np.arange(cfg.min_history, n) if cfg.windows == "all" else np.array([n - 1])
            for t, c in zip(pos, _copies(self.rng, cfg.ratio(task), len(pos))):
                target = int(seq[t])
                hist = seq[max(0, t - cfg.max_history): t]
                for _ in range(c):
                    if task == "seqrec":
                        self.add(task, u, hist, target, history=self.history(hist))
                    elif task == "seq2title":
                        if not title[target]:
                            break
                        self.add(task, u, hist, target, history=self.history(hist))
                    elif task == "titleseq2sid":
                        h = [quote_title(title[i]) for i in hist if title[i]]
                        if not h:
                            break
                        self.add(task, u, hist, target, history=format_history(h))
                    elif task == "prefsearch":
                        q = self.query(target)
                        if q is None:
                            break
                        self.add(task, u, hist, target, history=self.history(hist), query=q)
        return len(self.rows["task"]) - n0

    def query(self, item: int) -> str | None:
        f = self.fields
        return build_query(self.rng, f["title"][item], f["description"][item], f["brand"][item],
                           f["categories"][item])

    def item_task(self, task: str, items: np.ndarray) -> int:
        f = self.fields
        n0 = len(self.rows["task"])
        for item, c in zip(items, _copies(self.rng, self.cfg.ratio(task), len(items))):
            item = int(item)
            for _ in range(c):
                if task == "title2sid":
                    if not f["title"][item]:
                        break
                    self.add(task, -1, [], item, title=f["title"][item])
                elif task == "desc2sid":
                    if not f["description"][item]:
                        break
                    self.add(task, -1, [], item, description=f["description"][item])
                elif task == "titledesc2sid":
                    if not (f["title"][item] and f["description"][item]):
                        break
                    self.add(task, -1, [], item, title=f["title"][item], description=f["description"][item])
                elif task == "sid2title":
                    if not f["title"][item]:
                        break
                    self.add(task, -1, [], item, sid=self.sid[item])
                elif task == "itemsearch":
                    q = self.query(item)
                    if q is None:
                        break
                    self.add(task, -1, [], item, query=q)
        return len(self.rows["task"]) - n0


def build_instructions(dataset: str | Path, protocol: str, sids, out: str | Path,
                       config: InstructionConfig | None = None, overwrite: bool = False) -> Path:
    """Build the instruction dataset (``datasets.DatasetDict`` with ``train``/``valid``) into ``out``.

    ``sids``: a SID folder, an ``*.index.json`` file or a :class:`SidTable`. Tasks whose item fields the dataset
    lacks (Beauty has titles only) are skipped with a logged note and listed in the manifest.
    """
    import datasets as hfds

    cfg = config or InstructionConfig()
    ds = load_dataset(dataset)
    split = load_split(dataset, protocol)
    table = load_sids(sids, ds)
    b = _Builder(ds, split, table, cfg)

    users, seqs = split.train_sequences()
    if any(t in SEQUENCE_TASKS for t in cfg.tasks) and len(split.train) == 0:
        raise LlmrecError(f"{split.path}: the split has no training interactions, so sequence tasks "
                          f"({', '.join(t for t in cfg.tasks if t in SEQUENCE_TASKS)}) cannot be built; use "
                          "another split or only item tasks (--tasks title2sid,...)")
    if cfg.item_scope == "train":
        items = np.unique(split.train["item"].to_numpy())
    else:
        items = np.arange(1, ds.n_items + 1)

    counts, skipped = {}, {}
    for task in cfg.tasks:
        ok, why = _available(task, b.fields)
        if not ok:
            log.info("instructions: skipping task %s: %s", task, why)
            skipped[task] = why
            continue
        if cfg.ratio(task) == 0:
            skipped[task] = "ratio 0"
            continue
        counts[task] = (b.sequence_task(task, users, seqs) if task in SEQUENCE_TASKS
                        else b.item_task(task, items))
        log.info("instructions: %s: %d examples", task, counts[task])
    if not b.rows["task"]:
        raise LlmrecError("no instruction examples were built (every task skipped or empty): "
                          f"{skipped or 'check the split and ratios'}")

    # validation: template-0 seqrec prompts of the split's validation examples (what evaluation asks)
    vrows = {k: [] for k in b.rows}
    for u, hist, target in zip(split.valid["user"], split.valid["history"], split.valid["target"]):
        hist = np.asarray(hist, dtype=np.int64)[-cfg.max_history:]
        msgs = render_messages("seqrec", 0, system=cfg.system_prompt, history=b.history(hist, train=False))
        msgs.append({"role": "assistant", "content": b.sid[int(target)]})
        for k, v in zip(vrows, ("seqrec", 0, msgs, int(u), hist.tolist(), int(target))):
            vrows[k].append(v)

    order = np.random.default_rng(cfg.seed + 1).permutation(len(b.rows["task"]))
    train = hfds.Dataset.from_dict({k: [v[i] for i in order] for k, v in b.rows.items()})
    valid = hfds.Dataset.from_dict(vrows) if vrows["task"] else hfds.Dataset.from_dict(
        {k: [] for k in vrows}, features=train.features)
    dd = hfds.DatasetDict({"train": train, "valid": valid})
    report = check_no_leakage(b.rows, split)

    inputs = file_hashes([Path(dataset) / "items.parquet", split.path / "train.parquet"])
    is_path = isinstance(sids, (str, Path))
    if is_path:
        from llmrec.models.vocab import item_tokenizer_files

        inputs.update(file_hashes([sids] if Path(sids).is_file() else item_tokenizer_files(sids)))
    shape = (dict(item_tokenizer="actionpiece", sid_levels=table.n_positions, sid_codebook_sizes=[],
                  actionpiece_vocab_size=table.vocab_size) if b.ap else
             dict(item_tokenizer="rq", sid_levels=table.levels, sid_codebook_sizes=list(table.codebook_sizes)))
    manifest = make_manifest(
        "instructions", config={**asdict(cfg), "dataset": str(dataset), "protocol": protocol,
                                "sids": str(sids) if is_path else f"<{type(table).__name__}>"},
        inputs=inputs, seed=cfg.seed,
        counts=counts, skipped=skipped, n_train=len(train), n_valid=len(valid), **shape, sid_wrap=cfg.wrap,
        system_prompt=cfg.system_prompt, leakage_check=report)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        dd.save_to_disk(str(tmp / "data"))
        table.save(tmp)  # the SID table travels with the data it was rendered with
        write_json(tmp / MANIFEST, manifest)
    log.info("instructions: %d train / %d valid examples -> %s", len(train), len(valid), out)
    return Path(out)


def load_instructions(path: str | Path):
    """``(DatasetDict, manifest)`` of a folder written by :func:`build_instructions`."""
    import datasets as hfds

    path = Path(path)
    if not (path / MANIFEST).is_file() or not (path / "data").is_dir():
        raise LlmrecError(f"{path}: not an instruction folder (expected data/ and {MANIFEST}; build it with "
                          "`llmrec instructions build`)")
    return hfds.load_from_disk(str(path / "data")), read_json(path / MANIFEST)


def check_no_leakage(train, split: Split) -> dict:
    """Check that no training example reveals a held-out interaction; raise :class:`LlmrecError` if one does.

    For every sequence-task example, ``history + [target]`` must be a contiguous window of that user's
    *training* sequence, so neither the target nor any history item can be a validation/test interaction.
    Item-task examples carry no user. Returns counts for the manifest.
    """
    users, seqs = split.train_sequences()
    by_user = {int(u): s.tolist() for u, s in zip(users, seqs)}
    checked = 0
    cols = train if isinstance(train, dict) else train.select_columns(["task", "user", "history", "target"]).to_dict()
    seq_tasks = set(SEQUENCE_TASKS)
    for k, (task, u, hist, target) in enumerate(zip(cols["task"], cols["user"], cols["history"], cols["target"])):
        if task not in seq_tasks:
            continue
        seq = by_user.get(int(u))
        window = list(hist) + [target]
        n = len(window)
        if seq is None or not any(seq[s: s + n] == window for s in _starts(seq, window[0], n)):
            raise LlmrecError(f"leakage: training example {k} (task {task}, user {u}, target {target}) is not "
                              "a window of the user's training sequence")
        checked += 1
    return {"sequence_examples_checked": checked, "rule": "history + target is a window of the user's training "
            "sequence", "ok": True}


def _starts(seq: list, first: int, n: int):
    return (s for s in range(len(seq) - n + 1) if seq[s] == first)
