"""Batch scoring on a Ray cluster with Ray Data (the ``ray`` extra): the local ``Scorer``, many times over.

    import ray
    from pinet_runtime.ray import score_dataset

    ds = ray.data.from_items([{"path": p} for p in paths])
    scored = score_dataset(ds, model="model.onnx", workers=8)   # adds score, error, crops, seconds
    scored.write_parquet("scores/")

Each actor of the pool holds one :class:`pinet_runtime.Scorer` (the model is loaded once per actor,
with ``threads`` onnxruntime threads = the CPUs the actor reserves) and scores its batches with
``Scorer.score_many``, so per-item errors (unreadable file, non-finite score) are the local path's
own, word for word, and scores are bit-for-bit the same computation. The actors read the image
files themselves, in parallel: the paths must be visible on every node (the same path on a shared
filesystem). The model file is read once by the caller and shipped to the actors, so it need not.

``ray`` is imported inside the functions only: ``pinet_runtime`` works without the extra.
"""

from __future__ import annotations

import logging
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from pinet_runtime.errors import PinetError

if TYPE_CHECKING:  # type names only; ray is optional
    import ray.data

RESULT_COLUMNS = ("score", "error", "crops", "seconds")
INDEX_COLUMN = "index"


class RayEngineError(PinetError):
    """Ray cannot run the job (no cluster at the address, bad options); the message says which."""


class _ScoringActor:
    """One actor of the pool: one Scorer for its whole life, called once per batch."""

    def __init__(self, model_name: str, model_ref: list, providers: str, threads: int, batch_size: int,
                 path_column: str):
        import ray

        from pinet_runtime.scorer import Scorer

        # The model's bytes sit once in the object store; the reference is wrapped in a list so Ray
        # passes it as is (an actor whose own arguments live there cannot be restarted safely).
        model_bytes = ray.get(model_ref[0])
        # Written under the model's own file name, so that a model-side message names the same file,
        # and removed as soon as the session is built (onnxruntime has read it all by then): Ray ends
        # actors without running finalizers, so a folder kept for the actor's life would be left behind.
        with tempfile.TemporaryDirectory(prefix="pinet-ray-model-") as folder:
            local = Path(folder) / model_name
            local.write_bytes(model_bytes)
            self.scorer = Scorer(local, providers=providers, threads=threads)
        self.batch_size = batch_size
        self.path_column = path_column

    def __call__(self, batch):
        import pyarrow as pa

        column = batch.column(self.path_column)
        # Paths given as bytes (os.fsencode) round-trip names that are not valid UTF-8; their
        # error messages then come back as bytes too (surrogateescape), as the names in them.
        as_bytes = pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)
        paths = [os.fsdecode(value) if as_bytes else value for value in column.to_pylist()]
        results = list(self.scorer.score_many(paths, batch_size=self.batch_size))
        errors = [None if r.error is None else (r.error.encode("utf-8", "surrogateescape") if as_bytes else r.error)
                  for r in results]
        return (batch.append_column("score", pa.array([r.score for r in results], pa.float64()))
                .append_column("error", pa.array(errors, pa.binary() if as_bytes else pa.string()))
                .append_column("crops", pa.array([r.crops for r in results], pa.int64()))
                .append_column("seconds", pa.array([r.seconds for r in results], pa.float64())))


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 (the Data library is a separate part of the ray package)
    except ImportError as err:
        raise RayEngineError("ray", f"not installed ({err}); install the extra: pip install 'pinet-iqa[ray]'") \
            from None
    return ray


def cluster_cpus() -> int:
    """CPUs of the connected Ray cluster (at least 1)."""
    ray = _import_ray()
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def actor_gpus(providers, gpus_per_worker: float | None = None) -> float:
    """GPUs each scoring actor reserves from Ray: ``gpus_per_worker`` when given, else 1 when the
    provider request is CUDA (an explicit list naming CUDAExecutionProvider included), else 0. Ray
    then places CUDA actors only on nodes with a free GPU and sets their CUDA_VISIBLE_DEVICES."""
    if gpus_per_worker is not None:
        if gpus_per_worker < 0:
            raise RayEngineError("ray engine", "gpus_per_worker must be >= 0")
        return float(gpus_per_worker)
    if isinstance(providers, str):
        return 1.0 if providers.lower() == "cuda" else 0.0
    names = [item[0] if isinstance(item, (tuple, list)) else item for item in providers]
    return 1.0 if "CUDAExecutionProvider" in names else 0.0


def score_dataset(ds: "ray.data.Dataset", model: str | os.PathLike | None = None, *, workers: int | None = None,
                  threads: int = 1, batch_size: int = 8, providers: str = "cpu",
                  path_column: str = "path", gpus_per_worker: float | None = None) -> "ray.data.Dataset":
    """``ds`` with the columns ``score`` (float64, null on error), ``error`` (null when scored),
    ``crops`` and ``seconds`` added, scored by a pool of ``workers`` actors (default: the cluster's
    CPUs // ``threads``, or its GPUs // GPUs per actor), each reserving ``threads`` CPUs (and, for
    CUDA, ``actor_gpus`` GPUs) and running onnxruntime on that many threads.

    ``path_column`` holds image paths as strings (or as bytes from ``os.fsencode``). ``model`` is an
    exported PINet ONNX file (None: the bundled default, chosen as ``Scorer()`` chooses it).
    Lazy, like every Ray Dataset: nothing runs until it is consumed or written.
    """
    ray = _import_ray()
    if threads < 1 or batch_size < 1 or (workers is not None and workers < 1):
        raise RayEngineError("ray engine", "workers, threads and batch_size must be >= 1")
    if path_column not in ds.columns():
        raise RayEngineError("ray engine", f"the dataset has no {path_column!r} column (columns: {ds.columns()})")
    gpus = actor_gpus(providers, gpus_per_worker)
    if gpus:
        # An actor asking for a GPU the cluster does not have would wait forever: say so instead.
        cluster_gpus = float(ray.cluster_resources().get("GPU", 0))
        if cluster_gpus < gpus:
            raise RayEngineError("ray engine", f"each actor reserves {gpus:g} GPU for providers={providers!r}, "
                                 f"but the Ray cluster has {cluster_gpus:g}; use providers='cpu' or a GPU node")
    from pinet_runtime.scorer import Scorer

    # Opened here once: a bad model fails before any actor starts, and the file the default choice
    # settles on (INT8, or FP32 where INT8 is unsafe) is the one shipped.
    chosen = Scorer(model, providers=providers, threads=1).info.path
    if workers is None:
        workers = max(1, cluster_cpus() // threads)
        if gpus:
            workers = max(1, min(workers, int(cluster_gpus // gpus)))
    return ds.map_batches(
        _ScoringActor, batch_format="pyarrow", batch_size=batch_size, num_cpus=threads, num_gpus=gpus,
        compute=ray.data.ActorPoolStrategy(size=workers),
        fn_constructor_kwargs={"model_name": Path(chosen).name, "model_ref": [ray.put(Path(chosen).read_bytes())],
                               "providers": providers, "threads": threads, "batch_size": batch_size,
                               "path_column": path_column})


def _utf8(path: str) -> bool:
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:     # a name that is not valid UTF-8 reaches Python with lone surrogates
        return False
    return True


def paths_dataset(paths: Sequence[str | os.PathLike]) -> "ray.data.Dataset":
    """A Dataset of ``index`` (input position) and ``path``: strings, or bytes (``os.fsencode``)
    when some file name is not valid UTF-8, so that every name survives the round trip."""
    ray = _import_ray()
    paths = [os.fspath(p) for p in paths]
    as_bytes = not all(_utf8(p) for p in paths)
    return ray.data.from_items([{INDEX_COLUMN: i, "path": os.fsencode(p) if as_bytes else p}
                                for i, p in enumerate(paths)])


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, quiet: bool = True) -> Iterator[None]:
    """Use the Ray instance already connected, else connect to ``address`` (``auto``,
    ``ray://HOST:PORT``), else start a local instance (``num_cpus`` CPUs, default all) and shut it
    down at the end, even when the body fails."""
    ray = _import_ray()
    if ray.is_initialized():
        yield
        return
    if address is not None and num_cpus is not None:
        raise RayEngineError("ray engine", "num_cpus applies to a local instance only, not to --ray-address")
    level = logging.WARNING if quiet else logging.INFO
    try:
        ray.init(address=address, num_cpus=num_cpus, include_dashboard=False, logging_level=level,
                 log_to_driver=not quiet)
    except ConnectionError as err:
        raise RayEngineError(address or "ray", f"cannot connect to a Ray cluster ({err})") from None
    if quiet:
        # Ray Data's own notices (execution plans, "progress bars disabled") are not the user's business.
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


def score_paths(paths: Iterable[str | os.PathLike], model: str | os.PathLike | None = None, *,
                workers: int | None = None, threads: int = 1, batch_size: int = 8,
                providers: str = "cpu") -> Iterator[tuple[int, str, float | None, str | None, int, float]]:
    """Score ``paths`` on the connected Ray instance, yielding ``(index, path, score, error, crops,
    seconds)`` in input order as results stream in (call inside :func:`ray_session`)."""
    ray = _import_ray()
    paths = [os.fspath(p) for p in paths]
    context = ray.data.DataContext.get_current()
    previous, context.execution_options.preserve_order = context.execution_options.preserve_order, True
    try:
        scored = score_dataset(paths_dataset(paths), model, workers=workers, threads=threads,
                               batch_size=batch_size, providers=providers)
        expected = 0
        for batch in scored.iter_batches(batch_format="pyarrow", batch_size=None):
            rows = batch.select([INDEX_COLUMN, *RESULT_COLUMNS]).to_pydict()
            for index, score, error, crops, seconds in zip(*(rows[c] for c in (INDEX_COLUMN, *RESULT_COLUMNS))):
                if index != expected:   # preserve_order is Ray's promise; a break of it must not pass silently
                    raise RayEngineError("ray engine", f"result {index} arrived where {expected} was due")
                if isinstance(error, bytes):
                    error = error.decode("utf-8", "surrogateescape")
                yield index, paths[index], score, error, crops, seconds
                expected += 1
    finally:
        context.execution_options.preserve_order = previous
