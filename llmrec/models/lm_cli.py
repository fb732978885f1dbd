"""``llmrec model ...``: language models that speak Semantic IDs (vocabulary extension)."""

from __future__ import annotations


def register(sub) -> None:
    from llmrec.cli import add_group
    from llmrec.models.vocab import DEFAULT_BASE, INIT_METHODS

    g = add_group(sub, "model", "language models with SID tokens (vocabulary extension)")
    p = g.add_parser(
        "extend", help="add a SID table's tokens to a Hugging Face causal LM and save one folder",
        description="Add one token per (level, code) of the SID table (e.g. <a_12><b_7><c_201>) to the tokenizer "
                    "and model as normal added tokens, resize the embeddings (padded to a multiple of 64), "
                    "initialise the new rows and save a save_pretrained folder with sid/, items.parquet and "
                    "llmrec.json inside. `llmrec recommend --model OUT` and training recipes load it by path.")
    p.add_argument("--base", default=DEFAULT_BASE,
                   help=f"hub name or folder of the base model (default {DEFAULT_BASE}); 'tiny-qwen3' builds a "
                        "small Qwen3-architecture model from a config, offline")
    p.add_argument("--sids", required=True, help="SID folder (sids.parquet + sid_table.json)")
    p.add_argument("--out", required=True, help="output model folder")
    p.add_argument("--data", help="dataset folder: item titles (shown by recommend/chat; needed by text/codebook init)")
    p.add_argument("--init", default="mean", choices=INIT_METHODS,
                   help="new-row initialisation: mean of existing rows (default), item text vectors, or SID "
                        "codebooks projected into the model's space (see docs/inference.md)")
    p.add_argument("--wrap", action="store_true", help="also add <|sid_begin|> / <|sid_end|> around every SID")
    p.add_argument("--tokenizer", help="tokenizer folder/name if not the base's (for tiny-qwen3: the Qwen "
                                       "tokenizer files; default a locally trained BPE)")
    p.add_argument("--dtype", default="auto", help="dtype to load and save the base in (auto, bfloat16, float32)")
    p.add_argument("--pad-to-multiple-of", type=int, default=64)
    p.add_argument("--trust-remote-code", action="store_true", help="allow custom model code from the hub")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=_extend)


def _extend(args) -> int:
    from llmrec.models.vocab import extend_pretrained, read_info

    out = extend_pretrained(args.base, args.sids, args.out, init=args.init, wrap=args.wrap, data=args.data,
                            dtype=args.dtype, pad_to_multiple_of=args.pad_to_multiple_of, overwrite=args.overwrite,
                            trust_remote_code=args.trust_remote_code, tokenizer=args.tokenizer)
    info = read_info(out)
    v = info.vocab
    print(f"added {v['n_added']} tokens ({info.levels} levels, sizes {info.codebook_sizes}"
          f"{', wrapped' if info.wrap else ''}); tokenizer {v['tokenizer_len_before']} -> {v['tokenizer_len']}, "
          f"embedding rows {v['embedding_rows_before']} -> {v['embedding_rows']}; init {info.init}")
    print(f"wrote {out}")
    return 0
