"""Prompt templates shared by instruction data (training) and recommendation / chat (inference).

A model is only as good as the match between the prompts it was trained on and the prompts it is asked with,
so both sides render through this module: :func:`render_messages` builds chat messages for a task and template,
and :func:`prompt_text` turns messages into the exact string the model sees (the tokenizer's chat template with
the generation prompt, thinking disabled for Qwen3-style templates).
"""

from __future__ import annotations

from typing import Sequence

SYSTEM_PROMPT = ("You are a recommender system for an online shop. Every item has a semantic ID made of special "
                 "tokens such as <a_12><b_7><c_201>. Answer with item semantic IDs or titles exactly as asked.")

# task -> paraphrased user templates. Template 0 of each task is the one inference uses.
TEMPLATES: dict[str, list[str]] = {
    "seqrec": [
        "The user has interacted with these items in order: {history}. Recommend the next item the user will "
        "interact with.",
        "Here is a user's purchase history, oldest first: {history}. Which item will they buy next?",
        "Given the items this user bought, {history}, predict the item they are most likely to buy next.",
        "A shopper's recent items are {history}. What should we recommend to them next?",
    ],
}


def format_history(items: Sequence[str], sep: str = ", ") -> str:
    """Join rendered items (SIDs or quoted titles) oldest first."""
    return sep.join(items)


def render_messages(task: str, template: int = 0, system: str | None = SYSTEM_PROMPT, **fields) -> list[dict]:
    """System + user messages for ``task`` using paraphrase number ``template``."""
    if task not in TEMPLATES:
        raise KeyError(f"unknown task {task!r}; known: {sorted(TEMPLATES)}")
    text = TEMPLATES[task][template % len(TEMPLATES[task])].format(**fields)
    msgs = [{"role": "system", "content": system}] if system else []
    msgs.append({"role": "user", "content": text})
    return msgs


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The exact prompt string for ``messages`` (generation prompt added, Qwen3 thinking turned off).

    Tokenizers without a chat template get a plain ``role: content`` rendering ending in ``assistant:``.
    """
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 enable_thinking=False)
        except TypeError:  # templates that do not accept enable_thinking
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "
