"""The metadata every exported PINet ONNX file carries: export builds the runtime's typed
:class:`pinet_runtime.metadata.ModelMetadata` and writes its ``to_props()``; the runtime reads it
back with ``ModelMetadata.from_props``. No key is written or parsed anywhere else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timezone

from pinet import __version__
from pinet_runtime import metadata as keys
from pinet_runtime.errors import ModelFileError
from pinet_runtime.metadata import ModelMetadata
from pinet_runtime.preprocess import Preprocessing


def count_parameters(model_config) -> int:
    """Parameters of the stage-2 (scoring) network of this config, built on torch's meta device."""
    import torch

    from pinet.models import create_model
    from pinet.model_cost import count_parameters as count

    with torch.device("meta"):
        return count(create_model(model_config, stage=2))


def build_metadata(model_config, prep: Preprocessing, precision: str, source_sha256: str,
                   calibration: dict | None = None, parameters: int | None = None) -> ModelMetadata:
    """The typed metadata of an export; ``calibration`` is None for fp32/fp16 ("none" in the file)
    and ``parameters`` is counted from ``model_config`` when not given."""
    return ModelMetadata(
        preprocessing=prep, model_config=json.loads(model_config.to_json()), variant=model_config.variant,
        precision=precision, source_sha256=source_sha256, pinet_version=__version__,
        export_date=datetime.now(timezone.utc).replace(microsecond=0).isoformat(), calibration=calibration,
        parameters=count_parameters(model_config) if parameters is None else parameters,
    )


def set_metadata(model_proto, values: ModelMetadata | Mapping[str, str]) -> None:
    """Replace the given keys in ``model_proto.metadata_props``, keeping any others.

    ``values`` is a ModelMetadata (all its keys) or a dict of key -> string (e.g. the INT8
    quantizer's new precision and calibration). When the result holds every PINet key it must
    parse as ModelMetadata: a file the runtime would refuse is never written.
    """
    if isinstance(values, ModelMetadata):
        values = values.to_props()
    bad = [key for key, value in values.items() if not (isinstance(key, str) and isinstance(value, str))]
    if bad:
        raise TypeError(f"metadata values must be strings; not for {bad}")
    kept = [(p.key, p.value) for p in model_proto.metadata_props if p.key not in values]
    merged = dict([*kept, *values.items()])
    if all(merged.get(key) for key in keys.REQUIRED_KEYS):
        try:
            ModelMetadata.from_props(merged, "<model being written>")
        except ModelFileError as err:
            raise ValueError(f"refusing to write invalid PINet metadata: {err}") from None
    del model_proto.metadata_props[:]
    for key, value in [*kept, *values.items()]:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def drop_metadata_prefix(model_proto, prefix: str) -> None:
    kept = [(p.key, p.value) for p in model_proto.metadata_props if not p.key.startswith(prefix)]
    del model_proto.metadata_props[:]
    for key, value in kept:
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(model_proto) -> dict[str, str]:
    return {p.key: p.value for p in model_proto.metadata_props}


def read_typed_metadata(model_proto, path="<model>") -> ModelMetadata:
    """The file's metadata through the runtime's schema (ModelFileError naming the problem)."""
    return ModelMetadata.from_props(read_metadata(model_proto), path)
