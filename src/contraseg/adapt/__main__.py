"""``python -m contraseg.adapt CONFIG ...``: see :mod:`contraseg.adapt.command`."""

import sys

from .command import main

sys.exit(main())
