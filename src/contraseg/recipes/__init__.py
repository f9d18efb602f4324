"""The papers' headline training recipes: the manifest of released values, the comparison
with contraseg's resolved recipe configs and the generated docs/recipes.md.

==========================  ==================================================================
``load_manifest``           read and check ``configs/recipes/released/<experiment>.yaml``
``manifest_paths``          every manifest of a checkout
``resolve_recipe``          a recipe config resolved by contraseg's loaders (adapt included)
``compare_item``            one item: equal to the released value / its recorded difference
``check_manifest``          every item of one manifest
``render_recipes``          the text of docs/recipes.md
==========================  ==================================================================

Command: ``python -m contraseg.recipes [--root DIR] [--output docs/recipes.md] [--check]``
(``benchmarks/recipes_table.py`` is the same).
"""

from .compare import NORMALISERS, ItemResult, compare_item, lookup, resolve_recipe, same_value
from .manifest import Check, Item, Manifest, load_manifest, manifest_paths
from .table import PROAC_SUPERVISED, check_manifest, render_recipes

__all__ = ["NORMALISERS", "PROAC_SUPERVISED", "Check", "Item", "ItemResult", "Manifest", "check_manifest",
           "compare_item", "load_manifest", "lookup", "manifest_paths", "render_recipes", "resolve_recipe",
           "same_value"]
