"""``llmrec data ...``: build, split, describe, synthesize datasets."""

from __future__ import annotations

from llmrec.errors import LlmrecError


def register(sub) -> None:
    from llmrec.cli import add_group
    from llmrec.data_builders.build import FORMATS

    g = add_group(sub, "data", "build, split and inspect datasets")

    b = g.add_parser("build", help="read a raw dataset into the normalized format",
                     description="Read raw interactions (+ item metadata) and write DIR/interactions.parquet, "
                                 "items.parquet, users.parquet and dataset.json. With no filtering options, "
                                 "nothing is filtered.")
    b.add_argument("--format", required=True, choices=FORMATS)
    b.add_argument("--path", help="reviews/interactions file or source folder (not needed with --download)")
    b.add_argument("--items", help="item metadata file (Amazon meta_*.json.gz, a CSV/Parquet, LC-Rec item.json)")
    b.add_argument("--columns", help="column mapping for csv/parquet: user=COL,item=COL,time=COL,rating=COL,"
                                     "title=COL[,meta_item=COL]")
    b.add_argument("--text-fields", help="item fields composed into `text`, comma-separated "
                                         "(default: title,brand,categories,description when present)")
    b.add_argument("--min-rating", type=float, help="keep interactions with rating >= R")
    b.add_argument("--core", type=int, help="iterative N-core: users and items with >= N interactions")
    b.add_argument("--user-core", type=int, help="N-core for users only (overrides --core)")
    b.add_argument("--item-core", type=int, help="N-core for items only (overrides --core)")
    b.add_argument("--dedup-consecutive", action="store_true",
                   help="drop a user's consecutive repeats of the same item")
    b.add_argument("--missing-items", choices=("drop", "fail", "keep"), default="drop",
                   help="interactions whose item has no metadata: drop with a warning (default), fail, or keep")
    b.add_argument("--download", metavar="NAME", help="download a public dataset first (see `llmrec data "
                                                      "download --list`)")
    b.add_argument("--cache", default=None, help="download folder (default ~/.cache/llmrec)")
    b.add_argument("--out", required=True, help="output dataset folder")
    b.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    b.set_defaults(func=_build)

    s = g.add_parser("split", help="write a leave-one-out or global temporal split",
                     description="Write DIR/splits/<protocol>/{train,valid,test}.parquet and split.json.")
    s.add_argument("dataset", help="dataset folder")
    s.add_argument("--protocol", required=True, choices=("loo", "temporal"))
    s.add_argument("--test-frac", type=float, default=0.1, help="temporal: share of interactions in the test period")
    s.add_argument("--valid-frac", type=float, default=0.1,
                   help="temporal: share of the remaining interactions in the validation period")
    s.set_defaults(func=_split)

    i = g.add_parser("info", help="print a dataset's manifest summary")
    i.add_argument("dataset")
    i.set_defaults(func=_info)

    y = g.add_parser("synthetic", help="generate the embedded synthetic shop as a dataset folder")
    y.add_argument("--users", type=int, default=1500)
    y.add_argument("--items", type=int, default=400)
    y.add_argument("--seed", type=int, default=0)
    y.add_argument("--out", required=True)
    y.add_argument("--overwrite", action="store_true")
    y.set_defaults(func=_synthetic)

    d = g.add_parser("download", help="download a public dataset (resumable, checksum-verified)")
    d.add_argument("name", nargs="?", help="dataset name")
    d.add_argument("--list", action="store_true", help="list known datasets")
    d.add_argument("--cache", default=None, help="download folder (default ~/.cache/llmrec)")
    d.set_defaults(func=_download)


def _build(args) -> int:
    from llmrec.data_builders.build import build_dataset
    from llmrec.data_builders.preprocess import PreprocessConfig

    path = args.path
    items = args.items
    if args.download:
        from llmrec.data_builders.download import fetch_dataset
        got = fetch_dataset(args.download, cache=args.cache)
        path = path or got["path"]
        items = items or got.get("items")
    if not path:
        raise LlmrecError("--path is required (or --download NAME)")
    cfg = PreprocessConfig(min_rating=args.min_rating, core=args.core, user_core=args.user_core,
                           item_core=args.item_core, dedup_consecutive=args.dedup_consecutive,
                           missing_items=args.missing_items,
                           text_fields=tuple(x.strip() for x in args.text_fields.split(",")) if args.text_fields
                           else None)
    out = build_dataset(args.format, path, args.out, items=items, columns=args.columns, config=cfg,
                        overwrite=args.overwrite)
    _print_info(out)
    return 0


def _print_info(path) -> None:
    from llmrec.data_builders.dataset import load_dataset
    ds = load_dataset(path)
    m = ds.meta
    print(f"{path}: {m['n_users']:,} users, {m['n_items']:,} items, {m['n_interactions']:,} interactions"
          f"{'' if m.get('has_timestamps', True) else ' (no timestamps: order only)'}")


def _split(args) -> int:
    from llmrec.data_builders.splits import describe_split, split_dataset
    from llmrec.artifacts import read_json
    out = split_dataset(args.dataset, args.protocol, test_frac=args.test_frac, valid_frac=args.valid_frac)
    print(f"{out}")
    print(describe_split(read_json(out / "split.json")))
    return 0


def _info(args) -> int:
    _print_info(args.dataset)
    from llmrec.data_builders.dataset import load_dataset
    import json
    ds = load_dataset(args.dataset)
    print(json.dumps({k: ds.meta[k] for k in ("stats", "config") if k in ds.meta}, indent=2))
    return 0


def _synthetic(args) -> int:
    from llmrec.data_builders.synthetic import SyntheticConfig, build_synthetic
    out = build_synthetic(args.out, SyntheticConfig(n_users=args.users, n_items=args.items, seed=args.seed),
                          overwrite=args.overwrite)
    _print_info(out)
    return 0


def _download(args) -> int:
    from llmrec.data_builders.download import REGISTRY, fetch_dataset
    if args.list or not args.name:
        for name, spec in REGISTRY.items():
            print(f"{name:24} --format {spec['format']:11} {spec['note']}")
        return 0
    got = fetch_dataset(args.name, cache=args.cache)
    print(got["path"])
    return 0
