"""Print the largest modules and functions of the package (lines), e.g. before/after a refactor.

    python benchmarks/code_size.py [SRC_DIR] [--top N]

Run it on two checkouts (`git worktree add /tmp/old <rev>`) to compare.
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path


def sizes(src: Path) -> tuple[list[tuple[int, str]], list[tuple[int, str]]]:
    modules, functions = [], []
    for path in sorted(src.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        name = str(path.relative_to(src))
        modules.append((text.count("\n"), name))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                functions.append((lines, f"{name}:{node.name}"))
    return sorted(modules, reverse=True), sorted(functions, reverse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", nargs="?", default="src/aiflywheel")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    modules, functions = sizes(Path(args.src))
    total = sum(n for n, _ in modules)
    print(f"{len(modules)} modules, {total:,} lines; largest modules:")
    for n, name in modules[: args.top]:
        print(f"  {n:6,}  {name}")
    print("largest functions:")
    for n, name in functions[: args.top]:
        print(f"  {n:6,}  {name}")


if __name__ == "__main__":
    main()
