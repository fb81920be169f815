"""Package attributes imported on first use (PEP 562), so that importing a package does not import
torch before a name that needs it is used."""
from __future__ import annotations

import importlib
import importlib.util
from typing import Any, Callable


def exports(package: str, names: dict[str, str], namespace: dict[str, Any]) -> tuple[Callable, Callable]:
    """A package's `__getattr__` and `__dir__` for `names` (attribute -> the module defining it); a name
    once imported is stored in the package's `namespace`, so later lookups are plain attribute reads."""

    def __getattr__(name: str) -> Any:
        if name not in names:
            # A submodule, as `import package.name` would bind it: `effnet.fast.memory.enable_memory_saving`
            # after `import effnet` alone.
            if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
                return importlib.import_module(f"{package}.{name}")  # the import binds it in `namespace`
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(names))

    return __getattr__, __dir__
