"""Sub-commands of the ``contraseg`` CLI, one module each (see contraseg.cli)."""
