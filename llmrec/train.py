"""Entry point for training recipes: ``accelerate launch [...] -m llmrec.train RECIPE.yaml [key=value ...]``.

Also runs without accelerate (``python -m llmrec.train RECIPE.yaml``, one process) and as ``llmrec train``.
Overrides use dotted keys, e.g. ``sft.max_steps=20 output_dir=runs/try eval.at=[0.5,1.0]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmrec.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="recipe YAML (see recipes/ and docs/llm.md)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. sft.max_steps=20")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    from llmrec.errors import LlmrecError

    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        from llmrec.training.recipe import load_recipe

        recipe = load_recipe(args.recipe, args.overrides)
        if args.dry_run:
            import yaml
            print(yaml.safe_dump({k: v for k, v in recipe.items() if not k.startswith("_")}, sort_keys=False))
            return 0
        from llmrec.training.sft import train

        final = train(recipe)
        if rank == 0:
            print(f"trained model: {final}")
        return 0
    except LlmrecError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
