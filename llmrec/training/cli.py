"""``llmrec train RECIPE.yaml`` (SFT) and ``llmrec rl RECIPE.yaml`` (GRPO / DPO / S-DPO) in this process.

For several GPUs/processes use ``accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m llmrec.train``
(or ``-m llmrec.rl``) ``RECIPE.yaml``; these subcommands run the same entry points in one process.
"""

from __future__ import annotations

import importlib


def _add(sub, name: str, module: str, help: str, description: str, what: str, example: str) -> None:
    p = sub.add_parser(name, help=help, description=description)
    p.add_argument("recipe", help=what)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help=f"dotted overrides, e.g. {example}")
    p.add_argument("--dry-run", action="store_true", help="print the resolved recipe and exit")
    p.set_defaults(func=lambda args: importlib.import_module(module).main(
        [args.recipe, *args.overrides] + (["--dry-run"] if args.dry_run else [])))


def register(sub) -> None:
    _add(sub, "train", "llmrec.train", "train a SID language model from a recipe (SFT: full, LoRA, QLoRA)",
         "Run a recipe YAML in this process. For several GPUs/processes use `accelerate launch --config_file "
         "recipes/accelerate/<cfg>.yaml -m llmrec.train RECIPE.yaml`; see docs/llm.md.",
         "recipe YAML (see recipes/)", "sft.max_steps=20")
    _add(sub, "rl", "llmrec.rl", "align a SID language model with GRPO, DPO or softmax-DPO (recipe YAML)",
         "Run an RL / preference recipe (method: grpo | dpo | sdpo) in this process, from an SFT'd model folder. "
         "For several GPUs/processes use `accelerate launch --config_file recipes/accelerate/<cfg>.yaml -m "
         "llmrec.rl RECIPE.yaml`; see docs/rl.md.", "RL recipe YAML (see recipes/ and docs/rl.md)",
         "grpo.max_steps=20")
