"""One exception type for every user-facing failure.

The CLI prints ``error: <message>`` on one line and exits non-zero, so messages must name the file,
line or field and say what was expected.
"""


class LlmrecError(Exception):
    """Bad input or configuration that the user can fix; the message says how."""


def where(path, line=None, field=None) -> str:
    """Format a location prefix such as ``data.csv, line 12, field 'timestamp'``."""
    parts = [str(path)]
    if line is not None:
        parts.append(f"line {line}")
    if field is not None:
        parts.append(f"field {field!r}")
    return ", ".join(parts)
