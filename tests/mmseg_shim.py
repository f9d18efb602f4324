"""TEST-ONLY shim: lets ``import mmseg.models`` succeed under ``mmcv-lite``.

mmsegmentation imports a few names from ``mmcv.ops`` at module level
(``point_sample``, ``sigmoid_focal_loss``, ...). ``mmcv-lite`` (the pure-Python mmcv
on PyPI, used in CI because the full ``mmcv`` is a 38-minute source build) has no
compiled ``mmcv._ext``, so ``import mmcv.ops`` fails and with it every mmseg model.

:func:`stub_mmcv_ops_if_uncompiled` puts a stand-in ``mmcv.ops`` module in
``sys.modules`` *only* when the real one cannot import for that reason. Every name
looked up on the stand-in is a placeholder that raises as soon as it is called, so a
test that reaches a compiled op fails loudly instead of computing something else. The
models the integration tests build (ResNet, FCN / ASPP / DeepLabV3+ heads,
cross-entropy) are pure PyTorch and never call them.

This module is not part of contraseg: ``contraseg.integrations.mmseg`` imports mmseg as
is and works with a full mmcv, as users install it.
"""

from __future__ import annotations

import sys
import types

STUB_NAME = "mmcv.ops (contraseg test stub: no compiled ops)"


class _CompiledOpPlaceholder:
    """Stands for one compiled mmcv op; importable, unusable."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(
            f"mmcv.ops.{self._name} needs mmcv's compiled ops; tests/mmseg_shim.py only lets mmseg import"
        )

    def __repr__(self) -> str:
        return f"<placeholder for compiled mmcv.ops.{self._name}>"


def _stub_module() -> types.ModuleType:
    module = types.ModuleType("mmcv.ops", STUB_NAME)

    def __getattr__(name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _CompiledOpPlaceholder(name)

    module.__getattr__ = __getattr__  # PEP 562: any ``from mmcv.ops import X`` resolves
    module.__contraseg_test_stub__ = True
    return module


def stub_mmcv_ops_if_uncompiled() -> bool:
    """Install the stand-in ``mmcv.ops`` if, and only if, mmcv's compiled ops are missing.

    Returns:
        True if the stub was installed (mmcv-lite), False if the real ``mmcv.ops`` imports.
    """
    existing = sys.modules.get("mmcv.ops")
    if existing is not None:
        return bool(getattr(existing, "__contraseg_test_stub__", False))
    try:
        import mmcv.ops  # noqa: F401
    except ModuleNotFoundError as error:
        if error.name != "mmcv._ext":
            raise
    else:
        return False
    import mmcv

    # A failed package import can leave its already-imported submodules behind.
    for name in [n for n in sys.modules if n.startswith("mmcv.ops.")]:
        del sys.modules[name]
    stub = _stub_module()
    sys.modules["mmcv.ops"] = stub
    mmcv.ops = stub
    return True
