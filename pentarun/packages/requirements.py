"""requirements.txt: plain requirement lines only. Pure.

Options (`-r`, `--index-url`, `-e` ...), URLs, paths and direct references are refused: a
package must not choose where its code comes from; the server's configured index or
wheelhouse does.
"""

from __future__ import annotations

import re

from .problems import Problem

FILE = "requirements.txt"
REQUIREMENT = re.compile(
    r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
    r"(?:\[[A-Za-z0-9._-]+(?:\s*,\s*[A-Za-z0-9._-]+)*\])?"
    r"\s*(?P<spec>(?:(?:===|==|>=|<=|~=|!=|<|>)\s*[A-Za-z0-9.*+!_-]+\s*,?\s*)*)"
    r"(?:;\s*(?P<marker>[^#]*))?\Z"
)


def parse_requirements(text: str) -> tuple[list[str], list[Problem]]:
    lines: list[str] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        path = f"{FILE}:{number}"
        if line.startswith("-"):
            problems.append(
                Problem("requirements.option", path, f"options are not allowed: {line!r}")
            )
        elif "://" in line or "@" in line or line.startswith((".", "/")):
            problems.append(
                Problem(
                    "requirements.direct_reference",
                    path,
                    f"URLs, paths and direct references are not allowed: {line!r}",
                )
            )
        elif not REQUIREMENT.fullmatch(line):
            problems.append(
                Problem(
                    "requirements.invalid_line",
                    path,
                    f"not a requirement such as 'name>=1.0': {line!r}",
                )
            )
        else:
            lines.append(line)
    return lines, problems
