"""``llmrec rl RECIPE.yaml``: run a GRPO / DPO / S-DPO recipe in this process (multi-GPU: ``accelerate launch``)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("rl", help="align a SID language model with GRPO, DPO or softmax-DPO (recipe YAML)",
                       description="Run an RL / preference recipe (method: grpo | dpo | sdpo) in this process, from "
                                   "an SFT'd model folder. For several GPUs/processes use `accelerate launch "
                                   "--config_file recipes/accelerate/<cfg>.yaml -m llmrec.rl RECIPE.yaml`; see "
                                   "docs/rl.md.")
    p.add_argument("recipe", help="RL recipe YAML (see recipes/ and docs/rl.md)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted overrides, e.g. grpo.max_steps=20")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and exit")
    p.set_defaults(func=_run)


def _run(args) -> int:
    from llmrec.rl import main

    return main([args.recipe, *args.overrides] + (["--dry-run"] if args.dry_run else []))
