"""Prompt templates shared by instruction data (training) and recommendation / chat (inference).

A model is only as good as the match between the prompts it was trained on and the prompts it is asked with,
so both sides render through this module: :func:`render_messages` builds chat messages for a task and template,
:func:`prompt_text` turns messages into the exact string the model sees (the tokenizer's chat template with
the generation prompt, thinking disabled for Qwen3-style templates), and :func:`completion_text` gives the text
the model is trained to produce after that prompt (the answer plus the template's end-of-turn marker).

Tasks (LC-Rec style; ``answer`` is what the assistant says):

===============  =============================================  ====================  ===========================
task             user message fields                            answer                item fields needed
===============  =============================================  ====================  ===========================
seqrec           ``history`` (SIDs, oldest first)               next item's SID       -
title2sid        ``title``                                      the item's SID        title
desc2sid         ``description``                                the item's SID        description
titledesc2sid    ``title``, ``description``                     the item's SID        title, description
sid2title        ``sid``                                        the item's title      title
seq2title        ``history`` (SIDs)                             next item's title     title
titleseq2sid     ``history`` (quoted titles)                    next item's SID       title
itemsearch       ``query`` (built from item metadata)           the item's SID        title or description
prefsearch       ``history`` (SIDs), ``query``                  next item's SID       title or description
===============  =============================================  ====================  ===========================

Template 0 of each task is the canonical one: ``seqrec`` 0 is what ``llmrec recommend`` asks, ``itemsearch`` 0
and ``prefsearch`` 0 are what ``llmrec chat`` asks (without / with liked items).
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
    "title2sid": [
        "Which item has the title \"{title}\"? Answer with its semantic ID.",
        "Give the semantic ID of the product titled \"{title}\".",
        "The product \"{title}\" is in our catalog. What is its item ID?",
        "Find the item whose title is \"{title}\".",
    ],
    "desc2sid": [
        "An item is described as follows: {description} Which item is it? Answer with its semantic ID.",
        "Which product matches this description? {description}",
        "Here is a product description: {description} Give the item's semantic ID.",
    ],
    "titledesc2sid": [
        "Which item is titled \"{title}\" and described as: {description} Answer with its semantic ID.",
        "Product: \"{title}\". Description: {description} What is its semantic ID?",
        "Give the semantic ID of the item \"{title}\", described as: {description}",
    ],
    "sid2title": [
        "What is the title of item {sid}?",
        "Tell me the name of the product {sid}.",
        "Which product does the semantic ID {sid} stand for? Answer with its title.",
        "Item {sid} is in our catalog. What is it called?",
    ],
    "seq2title": [
        "The user has interacted with these items in order: {history}. What is the title of the next item the "
        "user will interact with?",
        "Here is a user's purchase history, oldest first: {history}. Name the product they will buy next.",
        "Given the items this user bought, {history}, give the title of the item they are most likely to buy "
        "next.",
    ],
    "titleseq2sid": [
        "The user has bought these products in order: {history}. Recommend the next item the user will buy.",
        "A shopper bought {history}, oldest first. Which item should we recommend next? Answer with its semantic "
        "ID.",
        "Given this purchase history: {history}, predict the next item and give its semantic ID.",
    ],
    "itemsearch": [
        "I am looking for {query}. Which item do you recommend?",
        "Find a product for this request: {query}.",
        "A shopper searches for {query}. Which item best matches the search?",
        "Recommend an item that fits this description: {query}.",
    ],
    "prefsearch": [
        "I liked these items: {history}. Now I am looking for {query}. Which item do you recommend?",
        "A shopper who bought {history} now searches for {query}. Which item best matches?",
        "Given my past purchases {history}, recommend {query}.",
    ],
}

# What each task answers with: the target item's SID or its title.
ANSWER_KIND: dict[str, str] = {
    "seqrec": "sid", "title2sid": "sid", "desc2sid": "sid", "titledesc2sid": "sid", "sid2title": "title",
    "seq2title": "title", "titleseq2sid": "sid", "itemsearch": "sid", "prefsearch": "sid",
}


def format_history(items: Sequence[str], sep: str = ", ") -> str:
    """Join rendered items (SIDs or quoted titles) oldest first."""
    return sep.join(items)


def quote_title(title: str) -> str:
    """How a title appears inside a prompt (a history of titles, a sid2title answer is the bare title)."""
    return f"\"{title}\""


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

    A trailing assistant message (a training example) is left out: the prompt is what precedes the answer.
    Tokenizers without a chat template get a plain ``role: content`` rendering ending in ``assistant:``.
    """
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if getattr(tokenizer, "chat_template", None):
        try:
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
                                                 enable_thinking=False)
        except TypeError:  # templates that do not accept enable_thinking
            return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return "".join(f"{m['role']}: {m['content']}\n" for m in messages) + "assistant: "


def completion_text(tokenizer, messages: list[dict]) -> str:
    """What the model learns to write after :func:`prompt_text`: the answer and the end-of-turn marker.

    ``messages`` ends with the assistant answer. With a chat template, the full conversation is rendered and
    the prompt is cut off its front, so the end-of-turn text is exactly the template's (``<|im_end|>\\n`` for
    Qwen). When the template renders the last turn differently from a generation prompt (not the case for
    Qwen2.5/Qwen3), the answer + the tokenizer's EOS token is used instead, so training never sees a prompt that
    inference would not produce.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("completion_text needs messages ending with an assistant answer")
    answer = messages[-1]["content"]
    eos = tokenizer.eos_token or ""
    if getattr(tokenizer, "chat_template", None):
        prompt = prompt_text(tokenizer, messages)
        try:
            full = tokenizer.apply_chat_template(messages, tokenize=False, enable_thinking=False)
        except TypeError:
            full = tokenizer.apply_chat_template(messages, tokenize=False)
        if full.startswith(prompt) and full[len(prompt):].startswith(answer):
            return full[len(prompt):]
    return answer + eos
