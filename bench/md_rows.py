"""Puts a benchmark example's markdown table into a report between its `<!-- rows -->` and
`<!-- /rows -->` markers, marking every row whose last cell (the cores other processes used
meanwhile) is above 0.3 as INVALID: a row measured beside other work is not comparable.

    python3 -m bench.md_rows REPORT.md TABLE_FILE COLUMNS
"""

from __future__ import annotations

import sys

MAX_OTHER_CORES = 0.3


def mark(table: list[str], columns: int) -> list[str]:
    rows = []
    for line in table:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == columns and cells[-1].replace(".", "").isdigit():
            if float(cells[-1]) > MAX_OTHER_CORES:
                line = line.rstrip(" |") + f" (INVALID: other processes used more than {MAX_OTHER_CORES} cores) |"
        rows.append(line)
    return rows


def main(argv: list[str]) -> int:
    report, table, columns = argv[0], open(argv[1]).read().splitlines(), int(argv[2])
    text = open(report).read()
    start = text.index("<!-- rows -->") + len("<!-- rows -->\n")
    end = text.index("<!-- /rows -->")
    open(report, "w").write(text[:start] + "\n".join(mark(table, columns)) + "\n" + text[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
