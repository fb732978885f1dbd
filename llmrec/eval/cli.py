"""``llmrec eval``: score a predictions JSONL file."""

from __future__ import annotations

from llmrec.errors import LlmrecError


def register(sub) -> None:
    p = sub.add_parser("eval", help="score ranked predictions (JSONL) with HR/Recall/NDCG/MRR@K",
                       description="Score a JSONL file whose lines are {\"user\": ..., \"target\": item_id, "
                                   "\"ranked\": [item_id, ...]}. Prints a table; --json writes the metrics.")
    p.add_argument("--predictions", required=True, help="JSONL predictions file")
    p.add_argument("--ks", default="5,10,20,50,100", help="cut-offs (default 5,10,20,50,100)")
    p.add_argument("--json", dest="json_out", help="write metrics JSON here")
    p.add_argument("--dataset", help="dataset folder: ids outside its catalog count as invalid")
    p.add_argument("--n-items", type=int, help="catalog size (ids 1..N valid), instead of --dataset")
    p.add_argument("--sids", help="SID folder: also report per-level SID prefix accuracy of the top-1 item")
    p.add_argument("--per-user", help="write per-example metrics (Parquet) here")
    p.set_defaults(func=run)


def run(args) -> int:
    from llmrec.eval.metrics import format_table
    from llmrec.eval.protocol import evaluate_ranked_lists, parse_ks, read_predictions

    ks = parse_ks(args.ks)
    n_items = args.n_items
    if args.dataset:
        from llmrec.data_builders.dataset import load_dataset
        n_items = load_dataset(args.dataset).n_items
    codes = None
    if args.sids:
        try:
            from llmrec.tokenizers import load_sid_codes
        except ImportError:
            raise LlmrecError("--sids needs the item tokenizers (llmrec.tokenizers)") from None
        codes = load_sid_codes(args.sids)
    users, targets, ranked = read_predictions(args.predictions)
    res = evaluate_ranked_lists(targets, ranked, ks=ks, n_items=n_items, users=users, sid_codes=codes)
    print(format_table(res.metrics, ks, title=f"{args.predictions}"))
    if args.json_out:
        res.to_json(args.json_out)
    if args.per_user:
        res.per_user.to_parquet(args.per_user, index=False)
    return 0
