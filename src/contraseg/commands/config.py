"""``contraseg config CONFIG [--set key=value ...]``

Prints the fully resolved config as YAML: the file with its ``_base_`` includes merged,
the ``--set`` overrides applied (the same parsing as ``train`` and ``adapt``) and every
default filled in, checked as ``train`` checks it (as mmsegmentation's ``print_config``
does). A config with an ``adapt:`` section has that section resolved too. A bad key or
value is a one-line error naming it. The output loads back as a config: ``contraseg config
A.yaml --set optim.lr=0.02 > B.yaml`` then ``contraseg train B.yaml`` trains the same.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser", "resolved_yaml", "run"]


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``config``."""
    parser = subparsers.add_parser("config", help="print the fully resolved config as YAML",
                                   description=" ".join(__doc__.split("\n\n")[1].split()))
    parser.add_argument("config", help="YAML config file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=0.02 or data.val[0].options.length=4 "
                             "(repeatable)")
    parser.set_defaults(func=run)


def resolved_yaml(path: str, overrides: list[str]) -> str:
    """The resolved config of ``path`` with ``overrides`` as YAML text (adapt section included)."""
    import yaml

    from ..engine.config import config_to_dict
    from ..engine.config_io import load_config

    cfg = load_config(path, overrides)
    data: dict[str, Any] = config_to_dict(cfg)
    if cfg.adapt is not None:
        from ..adapt.config import adapt_config_to_dict, load_adapt_config

        _, adapt = load_adapt_config(path, overrides)
        data["adapt"] = adapt_config_to_dict(adapt)
    return yaml.safe_dump(data, sort_keys=False)


def run(args: argparse.Namespace) -> int:
    """Print the resolved config."""
    print(resolved_yaml(args.config, args.overrides), end="", flush=True)
    return 0
