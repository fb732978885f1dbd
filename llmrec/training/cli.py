"""``llmrec train RECIPE.yaml``: run a training recipe in this process (multi-GPU: ``accelerate launch``)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("train", help="train a SID language model from a recipe (SFT: full, LoRA, QLoRA)",
                       description="Run a recipe YAML in this process. For several GPUs/processes use "
                                   "`accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m llmrec.train "
                                   "RECIPE.yaml`; see docs/llm.md.")
    p.add_argument("recipe", help="recipe YAML (see recipes/)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. sft.max_steps=20")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and exit")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from llmrec.train import main

    return main([args.recipe, *args.overrides] + (["--dry-run"] if args.dry_run else []))
