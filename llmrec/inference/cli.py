"""``llmrec recommend`` (batch) and ``llmrec chat`` (one-shot or interactive)."""

from __future__ import annotations

import sys

from llmrec.errors import LlmrecError


def _model_args(p) -> None:
    p.add_argument("--model", required=True, help="model folder (llmrec model extend / a training run)")
    p.add_argument("--k", type=int, default=10, help="items per answer (default 10)")
    p.add_argument("--num-beams", type=int, help="beams (default k; must be >= k)")
    p.add_argument("--device", help="cuda, cuda:1, cpu (default: cuda when available)")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16, float32")
    p.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                   help="hf: transformers (CPU/GPU); vllm: vLLM engine, same trie and ranking (GPU, the gpu extra)")
    p.add_argument("--lora", help="with --backend vllm: a LoRA adapter folder to serve on top of --model")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85,
                   help="with --backend vllm: share of GPU memory vLLM may take (default 0.85)")


def register(sub) -> None:
    p = sub.add_parser(
        "recommend", help="recommend items for histories (JSONL in, JSONL out) by constrained beam search",
        description="Each input line is {\"user\": ..., \"history\": [item_id, ...]} (other fields, e.g. target, "
                    "are copied). Each output line adds ranked (item ids, best first), scores (log-probabilities "
                    "of the items under the model restricted to the catalog) and titles. With --data and "
                    "--split the input is the split's examples and carries the target, so `llmrec eval "
                    "--predictions OUTPUT` scores it. Reruns resume after the last finished chunk.")
    _model_args(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="JSONL requests")
    src.add_argument("--data", help="dataset folder: recommend for the examples of --split/--part")
    p.add_argument("--split", default="loo", help="split protocol with --data (default loo)")
    p.add_argument("--part", default="test", choices=("valid", "test"), help="split part with --data")
    p.add_argument("--limit", type=int, help="only the first N examples (with --data)")
    p.add_argument("--output", required=True, help="JSONL output")
    p.add_argument("--batch-size", type=int, help="prompts per beam-search batch (default 16; 256 with --backend "
                   "vllm, which schedules all their beams itself)")
    p.add_argument("--exclude-history", action="store_true", help="never recommend items of the history")
    p.add_argument("--no-resume", action="store_true", help="start over even if OUTPUT.partial exists")
    p.add_argument("--ks", default="5,10,20", help="cut-offs of the metrics printed when targets are known")
    p.set_defaults(func=_recommend)

    c = sub.add_parser(
        "chat", help="ask for items in natural language (one-shot with --message, else interactive)",
        description="Answers a request (optionally with items you liked) with catalog items, decoded under the "
                    "same trie constraint as `llmrec recommend` and prompted with the templates the model was "
                    "trained on. Interactive commands: /like N (add the N-th item of the last answer), "
                    "/like item:ID, /liked, /reset, /k N, /quit.")
    _model_args(c)
    c.add_argument("--message", "-m", help="one request; prints the answer and exits")
    c.add_argument("--liked", default="", help="comma-separated item ids the user liked")
    c.add_argument("--json", action="store_true", help="one-shot: print the answer as JSON")
    c.set_defaults(func=_chat)


def _recommend(args) -> int:
    from llmrec.inference.recommend import read_requests, recommend_file, requests_from_split

    reqs = read_requests(args.input) if args.input else requests_from_split(args.data, args.split, args.part,
                                                                           args.limit)
    bs = args.batch_size or (256 if args.backend == "vllm" else 16)
    rec = _load(args, batch_size=bs)
    out = recommend_file(args.model, reqs, args.output, k=args.k, num_beams=args.num_beams,
                         batch_size=bs, resume=not args.no_resume,
                         exclude_history=args.exclude_history, recommender=rec)
    print(f"wrote {len(reqs)} recommendations to {out}")
    if all("target" in r for r in reqs):
        from llmrec.eval import evaluate_ranked_lists, format_table, parse_ks, read_predictions

        users, targets, ranked = read_predictions(out)
        ks = tuple(k for k in parse_ks(args.ks) if k <= args.k) or (args.k,)
        res = evaluate_ranked_lists(targets, ranked, ks=ks, n_items=rec.sid_table.n_items, users=users)
        print(format_table(res.metrics, ks, title=f"{args.model} on {len(reqs)} requests"))
    return 0


def _load(args, **kw):
    """The Recommender the model arguments ask for (transformers or vLLM)."""
    from llmrec.inference.recommend import Recommender

    if args.backend == "vllm":
        if args.device not in (None, "cuda"):
            raise LlmrecError("--backend vllm runs on the GPU(s) vLLM sees (CUDA_VISIBLE_DEVICES), not --device")
        return Recommender.from_pretrained(args.model, dtype=args.dtype, backend="vllm", lora=args.lora,
                                           num_beams=args.num_beams, gpu_memory_utilization=args.gpu_memory_utilization,
                                           max_beams=max(50, args.num_beams or 0), **kw)
    if args.lora:
        raise LlmrecError("--lora needs --backend vllm (for transformers, pass the adapter's merged folder or the "
                          "adapter folder itself as --model)")
    return Recommender.from_pretrained(args.model, device=args.device, dtype=args.dtype, **kw)


def _parse_ids(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise LlmrecError(f"--liked: expected comma-separated item ids, got {text!r}") from None


def _show(rec, res) -> None:
    if not res.items:
        print("(no items)")
    for j, (item, score) in enumerate(zip(res.items, res.scores), start=1):
        print(f"{j:3d}. {rec.describe(item)}  score {score:.3f}")


def _chat(args) -> int:
    import json

    rec = _load(args)
    liked = _parse_ids(args.liked)
    k = args.k
    if args.message is not None:
        res = rec.chat(args.message, liked=liked, k=k, num_beams=args.num_beams)
        if args.json:
            print(json.dumps({"request": args.message, "liked": liked, **res.to_dict()}, ensure_ascii=False))
        else:
            _show(rec, res)
        return 0
    print(f"llmrec chat: {rec.sid_table.n_items} items. Ask for something; /like N to keep an item, /quit to stop.")
    last = None
    while True:
        try:
            line = input("you> ").strip()
        except EOFError:
            print()
            return 0
        if not line:
            continue
        if line in ("/quit", "/exit", "/q"):
            return 0
        try:
            if line.startswith("/like"):
                arg = line[5:].strip()
                if arg.startswith("item:"):
                    liked += rec._check_items([int(arg[5:])], "item")
                elif arg.isdigit() and last is not None and 1 <= int(arg) <= len(last.items):
                    liked.append(last.items[int(arg) - 1])
                else:
                    print("usage: /like N (N-th item of the last answer) or /like item:ID")
                    continue
                print(f"liked: {', '.join(rec.describe(i) for i in liked)}")
            elif line == "/liked":
                print("\n".join(rec.describe(i) for i in liked) or "(none)")
            elif line == "/reset":
                liked, last = [], None
                print("forgot liked items")
            elif line.startswith("/k "):
                k = max(1, int(line[3:]))
            elif line.startswith("/"):
                print("commands: /like N, /like item:ID, /liked, /reset, /k N, /quit")
            else:
                last = rec.chat(line, liked=liked, k=k, num_beams=args.num_beams)
                _show(rec, last)
        except LlmrecError as e:
            print(f"error: {e}", file=sys.stderr)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
