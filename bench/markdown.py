"""The one Markdown table writer of the bench tools."""


def table(header, rows):
    """header [str], rows [[cell]] -> a Markdown table (cells formatted with str)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)
