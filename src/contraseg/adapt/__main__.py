"""``python -m contraseg.adapt CONFIG ...``: the ``contraseg adapt`` command.

A launcher, not part of the library: it runs :mod:`contraseg.commands.adapt` as the
main module (by name, as ``python -m contraseg.commands.adapt`` would), so the
``adapt`` package itself never imports the command layer above it.
"""

import runpy

runpy.run_module("contraseg.commands.adapt", run_name="__main__", alter_sys=True)
