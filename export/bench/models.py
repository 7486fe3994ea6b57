"""The models `pinet bench` measures: each input (variant, checkpoint or ONNX file) resolved to
a BenchModel with the file each precision runs from; checkpoints and variants are exported on
the fly by the `pinet export` pipeline, ONNX files are measured as they are."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from pinet_export.bench.exports import export_checkpoint
from pinet_export.bench.settings import BenchError, BenchSettings, ProgressCallback
from pinet_runtime.preprocess import Preprocessing


@dataclass
class BenchModel:
    """One model under test and the files each precision runs from."""

    name: str
    source: str                              # what the user gave: a variant, a checkpoint or an ONNX file
    kind: str                                # "variant" | "checkpoint" | "onnx"
    variant: str
    preprocessing: Preprocessing
    model_config: dict
    checkpoint: Path | None = None
    files: dict[str, Path] = field(default_factory=dict)          # precision -> ONNX file
    unavailable: dict[str, str] = field(default_factory=dict)     # precision -> why it is skipped
    export_failures: dict[str, str] = field(default_factory=dict)  # precision -> why its export failed
    flops_per_crop: int | None = None
    notes: list[str] = field(default_factory=list)


def torch_problem() -> str | None:
    """None when torch imports, else the note every torch row carries."""
    try:
        import torch  # noqa: F401
    except ImportError as err:
        return (f"skipped: PyTorch is not importable ({err}); torch rows need the 'export' or 'train' "
                "extra: pip install 'pinet-iqa[export]'")
    return None


def flops_at_crop_size(model_config: dict, crop_size: int) -> int:
    """FLOPs of one crop at the contract's crop size (the network is fully convolutional)."""
    from pinet.config import ModelConfig
    from pinet.model_cost import flops_per_crop

    config = dataclasses.replace(ModelConfig.from_dict(model_config), input_size=crop_size)
    return flops_per_crop(config)


def classify_input(item: str, variants: list[str]) -> str:
    path = Path(item)
    if path.exists():
        if not path.is_file():
            raise BenchError(f"{item}: not a regular file")
        return "onnx" if path.suffix.lower() == ".onnx" else "checkpoint"
    if item in variants:
        return "variant"
    raise BenchError(f"{item}: no such file, and not a PINet variant ({', '.join(variants)})")


def _safe_name(text: str, taken: set[str]) -> str:
    base = "".join(c if c.isalnum() or c in "-_." else "_" for c in text) or "model"
    name, index = base, 2
    while name in taken:
        name, index = f"{base}-{index}", index + 1
    taken.add(name)
    return name


def _variant_checkpoint(variant: str, folder: Path, progress: ProgressCallback) -> tuple[Path, str]:
    """A stage-2 checkpoint of the variant (reused when an earlier run left one)."""
    from pinet.checkpoint import save_checkpoint
    from pinet.models import auto_init, create_model, default_preprocessing

    path = folder / "checkpoint.safetensors"
    init, _ = auto_init(variant)      # ImageNet only where it is on this machine: a bench never downloads
    if path.is_file():
        return path, f"reused {path} from an earlier run"
    try:
        model = create_model(variant, stage=2, init=init)
    except RuntimeError as err:  # ImageNet weights need the 'lite' extra
        progress(f"{variant}: {err}; using random weights")
        init = "random"
        model = create_model(variant, stage=2, init=init)
    save_checkpoint(path, model, default_preprocessing(variant), training={"bench": f"{init} init, untrained"})
    return path, (f"{init}-initialised, untrained weights: latency, memory and size do not depend on "
                  "the weight values")


def prepare_models(inputs: list[str], variants: list[str], settings: BenchSettings,
                   progress: ProgressCallback) -> list[BenchModel]:
    """Resolve every input to a BenchModel with its ONNX files (exporting checkpoints on the fly)."""
    from pinet_runtime.model_file import read_model_info

    known_variants = _known_variants()
    models, taken = [], set()
    unknown = [v for v in variants if v not in known_variants]
    if unknown:
        raise BenchError(f"{', '.join(unknown)}: not a PINet variant ({', '.join(known_variants) or 'none: install torch'})")
    for item, kind in [*((i, classify_input(i, known_variants)) for i in inputs), *((v, "variant") for v in variants)]:
        name = _safe_name(Path(item).stem if kind != "variant" else item, taken)
        folder = settings.out_dir / "models" / name
        folder.mkdir(parents=True, exist_ok=True)
        if kind == "onnx":
            info = read_model_info(item)  # ModelFileError names the file
            model = BenchModel(name, item, kind, info.variant, info.preprocessing, info.model_config)
            model.files[info.precision] = Path(item)
            model.notes.append("torch rows rebuild the architecture from the file's metadata with random "
                               "weights (latency does not depend on the weight values)")
        else:
            checkpoint, note = (_variant_checkpoint(item, folder, progress) if kind == "variant"
                                else (Path(item), None))
            from pinet.checkpoint import read_header

            header = read_header(checkpoint)  # CheckpointError names the file
            if header.stage != 2:
                raise BenchError(f"{item}: a stage-{header.stage} checkpoint; only stage-2 (scoring) "
                                 "models can be benchmarked")
            model = BenchModel(name, item, kind, header.model_config.variant, header.preprocessing,
                               header.model_config.to_dict(), checkpoint=checkpoint)
            if note:
                model.notes.append(note)
            exported = export_checkpoint(checkpoint, folder, settings, name, progress)
            model.files.update(exported.files)
            model.export_failures.update(exported.failures)
            if exported.note:
                model.notes.append(exported.note)
        _mark_unavailable(model, settings)
        if torch_problem() is None:
            model.flops_per_crop = flops_at_crop_size(model.model_config, model.preprocessing.crop_size)
        else:
            model.notes.append("FLOPs per crop need PyTorch (pinet.model_cost); not computed")
        models.append(model)
    return models


def _known_variants() -> list[str]:
    try:
        from pinet.models import list_models
    except ImportError:
        return []
    return list_models()


def _mark_unavailable(model: BenchModel, settings: BenchSettings) -> None:
    missing_torch = torch_problem()
    for precision in settings.precisions:
        if precision == "torch":
            if missing_torch:
                model.unavailable[precision] = missing_torch
        elif precision == "fp16" and settings.provider != "cuda":
            model.unavailable[precision] = ("skipped: FP16 rows need --provider cuda (onnxruntime has few FP16 "
                                            "CPU kernels, so a CPU FP16 figure would mislead)")
        elif precision not in model.files and precision not in model.export_failures:  # an ONNX input
            model.unavailable[precision] = (f"skipped: the input is an ONNX {', '.join(model.files)} file; pass "
                                            "a checkpoint or variant to bench other precisions")


