"""``python -m contraseg.recipes``: write (or ``--check``) docs/recipes.md."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..engine.config_schema import ConfigError
from .table import render_recipes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contraseg.recipes", description=__doc__)
    parser.add_argument("--root", default=".", help="the repository checkout (default: .)")
    parser.add_argument("--output", default=None, help="default: <root>/docs/recipes.md")
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is not up to date")
    args = parser.parse_args(argv)
    root = Path(args.root)
    output = Path(args.output) if args.output else root / "docs" / "recipes.md"
    try:
        text = render_recipes(root)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.check:
        current = output.read_text() if output.is_file() else ""
        if current != text:
            print(f"{output} is out of date; run python benchmarks/recipes_table.py", file=sys.stderr)
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
