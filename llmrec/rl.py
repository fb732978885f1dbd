"""Entry point for RL / preference recipes: ``accelerate launch [...] -m llmrec.rl RECIPE.yaml [key=value ...]``.

The recipe's ``method`` picks the trainer: ``grpo`` (:mod:`llmrec.training.grpo`), ``dpo`` or ``sdpo``
(:mod:`llmrec.training.dpo`). Also runs without accelerate (``python -m llmrec.rl RECIPE.yaml``, one process) and
as ``llmrec rl RECIPE.yaml``. Overrides use dotted keys, e.g. ``grpo.max_steps=20 output_dir=runs/try``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="llmrec.rl", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("recipe", help="RL recipe YAML (see recipes/ and docs/rl.md)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. grpo.max_steps=20")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and exit")
    return p


def run(recipe: dict):
    """Train ``recipe`` (a loaded RL recipe); returns the final model folder."""
    if recipe["method"] == "grpo":
        from llmrec.training.grpo import train_grpo

        return train_grpo(recipe)
    from llmrec.training.dpo import train_preference

    return train_preference(recipe)


def main(argv: list[str] | None = None) -> int:
    from llmrec.errors import LlmrecError

    args = build_parser().parse_args(argv)
    rank = int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))
    logging.basicConfig(level=logging.INFO if rank == 0 else logging.WARNING,
                        format=f"%(asctime)s [rank {rank}] %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # bitsandbytes (imported by peft/transformers when installed) warns on every CPU import about optional kernels
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    try:
        from llmrec.training.rl_common import load_rl_recipe

        recipe = load_rl_recipe(args.recipe, args.overrides)
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


if __name__ == "__main__":
    raise SystemExit(main())
