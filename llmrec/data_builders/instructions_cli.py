"""``llmrec instructions ...``: build and preview LC-Rec-style instruction data."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from llmrec.errors import LlmrecError

log = logging.getLogger(__name__)


def register(sub) -> None:
    from llmrec.cli import add_group
    from llmrec.data_builders.instructions import ALL_TASKS, DEFAULT_RATIOS

    g = add_group(sub, "instructions", "build and preview instruction data (chat-format SFT examples)")
    tasks_help = ("comma-separated tasks (default: all): " + ", ".join(ALL_TASKS) +
                  ". Tasks whose item fields the dataset lacks are skipped with a note.")

    def data_args(p, required: bool):
        p.add_argument("--data", required=required, help="dataset folder (from `llmrec data build`)")
        p.add_argument("--split", required=required, help="split protocol under DATA/splits (loo, temporal, ...)")
        p.add_argument("--sids", required=required, help="SID folder (sids.parquet) or an LC-Rec/MiniOneRec "
                                                         "*.index.json")
        p.add_argument("--tasks", help=tasks_help)
        p.add_argument("--ratio", action="append", default=[], metavar="TASK=R",
                       help="expected copies per source example (repeatable); defaults: " +
                            ", ".join(f"{k}={v:g}" for k, v in DEFAULT_RATIOS.items()))
        p.add_argument("--max-history", type=int, default=20, help="history length cap (default 20)")
        p.add_argument("--min-history", type=int, default=1, help="shortest history for a sequence example")
        p.add_argument("--windows", choices=("all", "last"), default="all",
                       help="sequence tasks: every prefix of each training sequence (default) or only its last window")
        p.add_argument("--template-mode", choices=("random", "first"), default="random",
                       help="random paraphrase per example (default) or template 0 only")
        p.add_argument("--no-system-prompt", action="store_true", help="leave the system message out (shorter "
                                                                      "prompts; inference must do the same)")
        p.add_argument("--item-scope", choices=("all", "train"), default="all",
                       help="item tasks over all catalog items (default) or only items seen in training")
        p.add_argument("--wrap", action="store_true", help="write SIDs as <|sid_begin|>...<|sid_end|> (for models "
                                                           "extended with `llmrec model extend --wrap`)")
        p.add_argument("--seed", type=int, default=0)

    b = g.add_parser("build", help="build an instruction dataset folder",
                     description="Render the instruction tasks into a Hugging Face datasets DatasetDict "
                                 "(train/valid) saved under OUT/data, with OUT/instructions.json (manifest, counts, "
                                 "skipped tasks, leakage check) and the SID table. Sequence tasks use only the "
                                 "split's training interactions.")
    data_args(b, required=True)
    b.add_argument("--out", required=True, help="output folder")
    b.add_argument("--overwrite", action="store_true")
    b.set_defaults(func=_build)

    p = g.add_parser("preview", help="print a few rendered examples with a model's chat template",
                     description="Print examples exactly as the model sees them: prompt (chat template, generation "
                                 "prompt) and completion, with token counts. Reads an instruction folder, or builds "
                                 "one on the fly from --data/--split/--sids.")
    p.add_argument("instructions", nargs="?", help="instruction folder (from `llmrec instructions build`)")
    data_args(p, required=False)
    p.add_argument("--tokenizer", help="tokenizer or model folder / hub name (default: plain role: text rendering)")
    p.add_argument("-n", type=int, default=1, help="examples per task (default 1)")
    p.set_defaults(func=_preview)


def _config(args):
    from llmrec.data_builders.instructions import InstructionConfig

    ratios = {}
    for r in args.ratio:
        if "=" not in r:
            raise LlmrecError(f"--ratio {r!r}: expected TASK=R, e.g. seq2title=0.5")
        k, v = r.split("=", 1)
        try:
            ratios[k.strip()] = float(v)
        except ValueError:
            raise LlmrecError(f"--ratio {r!r}: {v!r} is not a number") from None
    kw = dict(ratios=ratios, max_history=args.max_history, min_history=args.min_history, windows=args.windows,
              template_mode=args.template_mode, item_scope=args.item_scope, wrap=args.wrap, seed=args.seed)
    if args.tasks:
        kw["tasks"] = tuple(t.strip() for t in args.tasks.split(",") if t.strip())
    if args.no_system_prompt:
        kw["system_prompt"] = None
    return InstructionConfig(**kw)


def _build(args) -> int:
    from llmrec.data_builders.instructions import build_instructions, load_instructions

    out = build_instructions(args.data, args.split, args.sids, args.out, _config(args), overwrite=args.overwrite)
    _, m = load_instructions(out)
    print(f"{out}: {m['n_train']:,} training / {m['n_valid']:,} validation examples")
    for t, n in m["counts"].items():
        print(f"  {t:14} {n:>9,}")
    for t, why in m["skipped"].items():
        print(f"  {t:14} skipped: {why}")
    return 0


def _preview(args) -> int:
    from llmrec.data_builders.instructions import build_instructions

    if args.instructions:
        return preview(args.instructions, args.tokenizer, args.n)
    if not (args.data and args.split and args.sids):
        raise LlmrecError("give an instruction folder, or --data, --split and --sids to build one on the fly")
    with tempfile.TemporaryDirectory() as tmp:
        out = build_instructions(args.data, args.split, args.sids, Path(tmp) / "instr", _config(args))
        return preview(out, args.tokenizer, args.n)


def load_preview_tokenizer(name: str | None, sid_vocabulary: list[str]):
    """A tokenizer for previews: the given one, with the SID tokens added if it lacks them (as extension does)."""
    if not name:
        return None
    from transformers import AutoTokenizer
    try:
        tok = AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        raise LlmrecError(f"--tokenizer {name}: cannot load a tokenizer ({e})") from None
    missing = [t for t in sid_vocabulary if t not in tok.get_vocab()]
    if missing:
        tok.add_tokens(missing)
        print(f"(note: {name} has no SID tokens; {len(missing)} were added for this preview, as "
              "vocabulary extension does)")
    return tok


def preview(folder, tokenizer: str | None = None, n: int = 1) -> int:
    from llmrec.data_builders.instructions import load_instructions
    from llmrec.data_builders.prompts import completion_text, prompt_text
    from llmrec.tokenizers.sid_table import SidTable

    dd, m = load_instructions(folder)
    tok = load_preview_tokenizer(tokenizer, SidTable.load(folder).vocabulary())
    train = dd["train"]
    tasks = train["task"]
    first: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
        if len(first.setdefault(t, [])) < n:
            first[t].append(i)
    for t, idx in first.items():
        for i in idx:
            msgs = train[i]["messages"]
            if tok is None:
                p = "".join(f"{x['role']}: {x['content']}\n" for x in msgs[:-1]) + "assistant: "
                c = msgs[-1]["content"]
                counts = ""
            else:
                p, c = prompt_text(tok, msgs), completion_text(tok, msgs)
                counts = (f"  [{len(tok(p, add_special_tokens=False).input_ids)} prompt + "
                          f"{len(tok(c, add_special_tokens=False).input_ids)} completion tokens]")
            print(f"===== {t} (template {train[i]['template']}){counts}")
            print(p + "\033[1m" + c + "\033[0m" if _tty() else p + c)
    print(f"\n{m['n_train']:,} training examples: " + ", ".join(f"{k} {v:,}" for k, v in m["counts"].items()))
    if m.get("skipped"):
        print("skipped: " + "; ".join(f"{k} ({v})" for k, v in m["skipped"].items()))
    return 0


def _tty() -> bool:
    import sys
    return sys.stdout.isatty()
