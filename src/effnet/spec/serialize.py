"""NetworkSpec <-> plain dicts (JSON-ready), for weights metadata, config files and `--json`."""
from __future__ import annotations

import dataclasses
from typing import Any

from effnet.errors import SpecError
from effnet.spec.types import HeadSpec, NetworkSpec, ScalingPolicy, StageSpec, StemSpec


def spec_to_dict(spec: NetworkSpec) -> dict[str, Any]:
    """A JSON-ready dict; `spec_from_dict` inverts it exactly."""
    data = dataclasses.asdict(spec)
    data["stages"] = [dict(stage) for stage in data["stages"]]
    return data


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SpecError(f"{where} must be a mapping, got {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise SpecError(f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**data)
    except TypeError as error:  # a missing required field
        raise SpecError(f"{where}: {error}") from None
    except SpecError as error:
        raise SpecError(f"{where}.{error}" if where != "spec" else str(error)) from None


def spec_from_dict(data: dict[str, Any]) -> NetworkSpec:
    """Rebuild a spec from `spec_to_dict` output or a hand-written config; errors name the field."""
    if not isinstance(data, dict):
        raise SpecError(f"spec must be a mapping, got {type(data).__name__}")
    fields = dict(data)
    if "stages" not in fields:
        raise SpecError("spec: missing field stages")
    stages = fields["stages"]
    if not isinstance(stages, (list, tuple)):
        raise SpecError("stages must be a list")
    fields["stages"] = tuple(_build(StageSpec, s, f"stages[{i}]") for i, s in enumerate(stages))
    if "stem" in fields:
        fields["stem"] = _build(StemSpec, fields["stem"], "stem")
    if "head" in fields:
        fields["head"] = _build(HeadSpec, fields["head"], "head")
    if "scaling" in fields:
        fields["scaling"] = _build(ScalingPolicy, fields["scaling"], "scaling")
    return _build(NetworkSpec, fields, "spec")
