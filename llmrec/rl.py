"""Entry point for RL / preference recipes: ``accelerate launch [...] -m llmrec.rl RECIPE.yaml [key=value ...]``.

The recipe's ``method`` picks the trainer: ``grpo`` (:mod:`llmrec.training.grpo`), ``dpo`` or ``sdpo``
(:mod:`llmrec.training.dpo`). Also runs without accelerate (``python -m llmrec.rl RECIPE.yaml``, one process) and
as ``llmrec rl RECIPE.yaml``. Overrides use dotted keys, e.g. ``grpo.max_steps=20 output_dir=runs/try``.
"""

from __future__ import annotations


def build_parser():
    from llmrec.train import build_parser as parser

    return parser("llmrec.rl", __doc__, "RL recipe YAML (see recipes/ and docs/rl.md)", "grpo.max_steps=20")


def run(recipe: dict):
    """Train ``recipe`` (a loaded RL recipe); returns the final model folder."""
    if recipe["method"] == "grpo":
        from llmrec.training.grpo import train_grpo

        return train_grpo(recipe)
    from llmrec.training.dpo import train_preference

    return train_preference(recipe)


def main(argv: list[str] | None = None) -> int:
    from llmrec.train import run_entry
    from llmrec.training.rl_common import load_rl_recipe

    return run_entry(build_parser().parse_args(argv), load_rl_recipe, run)


if __name__ == "__main__":
    raise SystemExit(main())
