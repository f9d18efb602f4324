"""Write docs/recipes.md: every item of each paper's headline recipe, released value
(repository file:line) next to contraseg's resolved value, equal or differs-because.

Usage: python benchmarks/recipes_table.py [--check]   (same as python -m contraseg.recipes)
"""

import sys
from pathlib import Path

from contraseg.recipes.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["--root", str(Path(__file__).resolve().parents[1]), *sys.argv[1:]]))
