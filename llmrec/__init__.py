"""llmrec: LLM-aligned generative recommendation with Semantic IDs.

Stages (one subpackage each, data flows one way):
``data_builders`` -> ``tokenizers`` (item SIDs) -> ``models`` -> ``training`` -> ``inference`` -> ``eval``.
"""

__version__ = "0.1.0"

from llmrec.errors import LlmrecError  # noqa: E402,F401
