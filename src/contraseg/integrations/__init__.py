"""Bridges from contraseg to other training frameworks.

Each integration is a subpackage that imports its framework; importing
``contraseg.integrations`` itself imports none of them.

- ``contraseg.integrations.mmseg``: the losses and embedding decode heads in
  mmsegmentation's ``MODELS`` registry (``pip install 'contraseg[mmseg]'``).
"""
