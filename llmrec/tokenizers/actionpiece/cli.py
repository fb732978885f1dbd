"""``llmrec sid-actionpiece ...``: build and inspect ActionPiece tokenizers.

``llmrec sid build --method actionpiece`` uses the same options and :func:`main` (``add_arguments(...,
common=False)`` adds only what the generic SID parser lacks); both commands write the same folder.
"""

from __future__ import annotations

import argparse

from llmrec.errors import LlmrecError

_COMMON = ("out", "dataset", "embeddings", "overwrite", "seed")


def add_arguments(parser: argparse.ArgumentParser, common: bool = True) -> None:
    """ActionPiece build options (``common=False``: leave out ``--out``, ``--embeddings``, ``--overwrite``,
    ``--seed`` and ``--no-plots``, which ``llmrec sid build`` already has, and make ``--vocab-size`` optional
    there since the other methods do not take it)."""
    if not common:
        parser.add_argument("--dataset", help="actionpiece: dataset folder (training sequences of its split; items "
                                              "for --embeddings / --categorical)")
    if common:
        parser.add_argument("--out", required=True, help="output folder (merges.json, vocab.json, ...)")
        parser.add_argument("--dataset", help="dataset folder: training sequences of its split, and items for "
                                              "--embeddings / --categorical")
        parser.add_argument("--embeddings", help="item embeddings .npy (row = item id) or a folder with "
                                                 "embeddings.npy: features = OPQ codes + a hash digit")
        parser.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
        parser.add_argument("--seed", type=int, default=0, help="seed of the quantiser and the hash digit")
    g = parser.add_argument_group("ActionPiece" if common else "ActionPiece (--method actionpiece)")
    g.add_argument("--vocab-size", type=int, required=common, metavar="Q",
                   help="target vocabulary size, initial feature tokens included (e.g. 10000-40000)")
    g.add_argument("--protocol", default="loo", choices=("loo", "temporal"),
                   help="split whose training sequences are counted (with --dataset)")
    g.add_argument("--features", metavar="FEATURES.json",
                   help='precomputed item features {"item_id": ["feature", ...]} (position = index)')
    g.add_argument("--sequences", metavar="SEQUENCES.json",
                   help="precomputed training sequences [[item_id, ...], ...] (instead of the dataset's split)")
    g.add_argument("--categorical", metavar="FIELDS",
                   help="comma-separated item metadata columns used as features (instead of embeddings)")
    g.add_argument("--n-codebooks", type=int, default=4, help="OPQ codebooks (features from embeddings)")
    g.add_argument("--codebook-size", type=int, default=256, help="codes per OPQ codebook (power of two)")
    g.add_argument("--hash-buckets", type=int, default=None,
                   help="add a disambiguation digit with N buckets (default: 128 for --embeddings/--categorical, "
                        "none for --features)")
    g.add_argument("--check-every", type=int, default=0, metavar="K",
                   help="debug: verify every pair count against a full recount after every K-th merge")
    if common:
        g.add_argument("--no-plots", action="store_true", help="skip actionpiece.png")


def main(args: argparse.Namespace) -> int:
    from llmrec.tokenizers.actionpiece.run import run_actionpiece

    if args.vocab_size is None:
        raise LlmrecError("--method actionpiece needs --vocab-size Q (the target vocabulary size)")
    if args.vocab_size <= 0:
        raise LlmrecError(f"--vocab-size must be positive, got {args.vocab_size}")

    cat = getattr(args, "categorical", None)
    ap = run_actionpiece(
        args.out, vocab_size=args.vocab_size, dataset=getattr(args, "dataset", None), protocol=args.protocol,
        embeddings=getattr(args, "embeddings", None), features=args.features, sequences=args.sequences,
        categorical=[c.strip() for c in cat.split(",") if c.strip()] if cat else None,
        n_codebooks=args.n_codebooks, codebook_size=args.codebook_size, hash_buckets=args.hash_buckets,
        seed=getattr(args, "seed", 0), check_every=args.check_every, overwrite=getattr(args, "overwrite", False),
        plots=not args.no_plots)
    s = ap.stats
    print(f"{args.out}: {ap.vocab_size} tokens ({ap.n_init} initial + {len(ap.merges)} merges) for {ap.n_items} "
          f"items; {s['n_sequences']} sequences; merges learned in {s['total_seconds']:.1f}s")
    return 0


def _show(args: argparse.Namespace) -> int:
    from llmrec.tokenizers.actionpiece.tokenizer import ActionPiece

    ap = ActionPiece.load(args.dir)
    conv = (lambda x: int(x)) if all(isinstance(i, int) for i in ap.item_ids[:1]) else str
    print(f"{args.dir}: {ap.vocab_size} tokens = {ap.n_init} initial features ({ap.n_positions} positions: "
          f"{', '.join(ap.position_names)}) + {len(ap.merges)} merges; {ap.n_items} items")
    for it in args.item or []:
        it = conv(it)
        toks = ap.item_tokens(it)
        print(f"item {it}: {''.join(toks)}")
        for t in toks:
            print(f"  {t} = " + " ".join(f"{ap.position_names[p]}:{v}" for p, v in ap.token_features(t)))
    if args.history:
        hist = [conv(x) for x in args.history]
        for i, toks in enumerate(ap.history_variants(hist, args.q, seed=args.seed)):
            print(f"history segmentation {i}: {''.join(toks)}")
    if args.decode:
        it = ap.decode_text(args.decode)
        print(f"decode {args.decode!r}: {'rejected' if it is None else f'item {it}'}")
    return 0


def register(sub) -> None:
    from llmrec.cli import add_group

    g = add_group(sub, "sid-actionpiece", "ActionPiece item tokenizer: build a vocabulary, inspect it")
    b = g.add_parser("build", help="learn an ActionPiece vocabulary",
                     description="Learn ActionPiece merges (weighted co-occurrence within and across adjacent "
                                 "items) from a dataset's training sequences and item embeddings, or from "
                                 "precomputed --features/--sequences JSON. Writes DIR/merges.json "
                                 "([left, right, new_token, weight] in merge order), vocab.json, "
                                 "item_features.json, targets.json, report.json, manifest.json.")
    add_arguments(b)
    b.set_defaults(func=main)
    s = g.add_parser("show", help="print items' target tokens, history segmentations, or decode tokens")
    s.add_argument("dir", help="ActionPiece folder")
    s.add_argument("--item", nargs="*", help="item ids whose target tokens to print")
    s.add_argument("--history", nargs="*", help="item ids of a history to segment")
    s.add_argument("--q", type=int, default=3, help="number of history segmentations")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--decode", help="a token string such as '<ap_1200><ap_77>' to decode")
    s.set_defaults(func=_show)

