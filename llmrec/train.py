"""Entry point for training recipes: ``accelerate launch [...] -m llmrec.train RECIPE.yaml [key=value ...]``.

Also runs without accelerate (``python -m llmrec.train RECIPE.yaml``, one process) and as ``llmrec train``.
Overrides use dotted keys, e.g. ``sft.max_steps=20 output_dir=runs/try eval.at=[0.5,1.0]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser(prog: str = "llmrec.train", doc: str | None = __doc__, what: str = "recipe YAML (see recipes/ "
                 "and docs/llm.md)", example: str = "sft.max_steps=20") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help=what)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"dotted overrides, e.g. {example}")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and exit")
    return p


def run_entry(args: argparse.Namespace, load, run) -> int:
    """Shared by ``llmrec.train`` and ``llmrec.rl``: rank-aware logging, ``load(recipe, overrides)``, then
    ``run(recipe) -> final folder``; an LlmrecError becomes one line on stderr and exit status 2."""
    from llmrec.errors import LlmrecError

    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # bitsandbytes (imported by peft/transformers when installed) warns on every CPU import about optional kernels
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        recipe = load(args.recipe, args.overrides)
        if args.dry_run:
            import yaml
            print(yaml.safe_dump({k: v for k, v in recipe.items() if not k.startswith("_")}, sort_keys=False))
            return 0
        final = run(recipe)
        if rank == 0:
            print(f"trained model: {final}")
        return 0
    except LlmrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _train(recipe: dict):
    from llmrec.training.sft import train

    return train(recipe)


def main(argv: list[str] | None = None) -> int:
    from llmrec.training.recipe import load_recipe

    return run_entry(build_parser().parse_args(argv), load_recipe, _train)


if __name__ == "__main__":
    raise SystemExit(main())
