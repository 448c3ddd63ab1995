"""No product function is graded D or worse by radon's cyclomatic complexity.

A function past grade C (complexity above 20) is one nobody can review with confidence:
split it into named steps. The same check as `radon cc -n D` over the package.
"""

from __future__ import annotations

from pathlib import Path

from radon.complexity import cc_rank, cc_visit

ROOT = Path(__file__).resolve().parents[1]
SKIP = {"tests", "build", "demo-night"}


def _product_files() -> list[Path]:
    return [
        p
        for p in sorted(ROOT.rglob("*.py"))
        if not (set(p.relative_to(ROOT).parts[:-1]) & SKIP)
        and not p.relative_to(ROOT).parts[0].startswith(".")
        and "data" not in p.relative_to(ROOT).parts[:-1]
    ]


def test_no_function_is_graded_d_or_worse():
    graded = []
    for path in _product_files():
        for block in cc_visit(path.read_text(encoding="utf-8")):
            if cc_rank(block.complexity) >= "D":
                graded.append(f"{path.relative_to(ROOT)}:{block.lineno} {block.fullname} {block.complexity}")
    assert graded == []


def test_the_grader_sees_a_complex_function(tmp_path):
    body = "".join(f"    if x == {i}:\n        return {i}\n" for i in range(25))
    (blocks,) = cc_visit(f"def f(x):\n{body}    return -1\n")
    assert cc_rank(blocks.complexity) >= "D"
