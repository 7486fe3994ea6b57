"""`pinet score --engine ray`: the same scoring on a Ray cluster (pinet_runtime.ray does the work).

`pinet score` opens its local Scorer as usual (the model is checked before anything starts), then
hands it to :func:`engine_scorer`: for ``--engine local`` the Scorer itself comes back; for
``--engine ray`` an object with the same ``score_many`` that streams ScoreResults from the actor
pool in input order, so every output format, --sort, --output and the exit codes stay the local
path's. ``--ray-output DIR`` instead writes the results with Ray's own writers (Parquet, or CSV
with ``--format csv``) from the workers, for runs too large to gather in one process.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path
from typing import Iterator

import typer

from pinet.cli.common import EXIT_FAILURE, EXIT_USAGE, fail, reported_errors, require_modules, stderr

RAY_MODULES = ("ray", "pyarrow")


class Engine(str, Enum):
    local = "local"
    ray = "ray"


ENGINE_OPTION = typer.Option(Engine.local, "--engine", help="local: this process; ray: a Ray Data actor pool "
                                                            "(the ray extra)")
RAY_ADDRESS_OPTION = typer.Option(None, "--ray-address", help="--engine ray: a running cluster (auto, "
                                                              "ray://HOST:PORT); default: start a local instance "
                                                              "and shut it down at the end")
WORKERS_OPTION = typer.Option(None, "--workers", min=1, help="--engine ray: actors, each with one model "
                                                             "(default: the cluster's CPUs // --threads)")
RAY_OUTPUT_OPTION = typer.Option(None, "--ray-output", help="--engine ray: write the results as Parquet files "
                                                            "(CSV with --format csv) into this folder with Ray's "
                                                            "writers instead of gathering them")


class RayScorer:
    """``score_many`` of a local Scorer's model, run by a Ray Data actor pool."""

    def __init__(self, scorer, provider: str, address: str | None, workers: int | None, threads: int):
        self.model = scorer.info.path
        self.provider = provider
        self.address = address
        self.workers = workers
        self.threads = threads

    def score_many(self, files: list[str], batch_size: int) -> Iterator:
        from pinet_runtime.ray import ray_session, score_paths
        from pinet_runtime.scorer import ScoreResult

        if not files:                 # e.g. only videos were given: they are scored locally
            return
        with ray_session(self.address):
            for _, path, score, error, crops, seconds in score_paths(
                    files, self.model, workers=self.workers, threads=self.threads, batch_size=batch_size,
                    providers=self.provider):
                yield ScoreResult(path, score, error, crops, seconds)


def engine_scorer(scorer, files: list[str], engine: Engine, provider: str, address: str | None,
                  workers: int | None, threads: int | None, batch_size: int, ray_output: Path | None,
                  csv_output: bool):
    """The object whose ``score_many`` `pinet score` calls. With ``--ray-output`` the results are
    written here and the command ends (exit 0 when all scored, 1 when some failed)."""
    if engine is Engine.local:
        used = [name for name, value in (("--ray-address", address), ("--workers", workers),
                                         ("--ray-output", ray_output)) if value is not None]
        if used:
            raise fail(f"{', '.join(used)} only apply to --engine ray", EXIT_USAGE)
        return scorer
    require_modules("score --engine ray", RAY_MODULES, "ray")
    if ray_output is None:
        return RayScorer(scorer, provider, address, workers, threads or 1)
    with reported_errors():
        _write_with_ray(scorer.info.path, files, provider, address, workers, threads or 1, batch_size, ray_output,
                        csv_output)


def _write_with_ray(model: Path, files: list[str], provider: str, address: str | None, workers: int | None,
                    threads: int, batch_size: int, folder: Path, csv_output: bool) -> None:
    from pinet_runtime.ray import paths_dataset, ray_session, score_dataset

    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise fail(f"--ray-output {folder} must be a new or empty folder", EXIT_USAGE)
    with ray_session(address):
        scored = score_dataset(paths_dataset(files), model, workers=workers, threads=threads,
                               batch_size=batch_size, providers=provider).materialize()
        (scored.write_csv if csv_output else scored.write_parquet)(os.fspath(folder))
        errors = scored.select_columns(["error"]).iter_batches(batch_format="pyarrow")
        failed = sum(len(batch) - batch["error"].null_count for batch in errors)
    kind = "CSV" if csv_output else "Parquet"
    stderr.print(f"{len(files) - failed} of {len(files)} images scored, {failed} failed; results in {folder} "
                 f"({kind}, columns index, path, score, error, crops, seconds)", highlight=False)
    raise typer.Exit(EXIT_FAILURE if failed else 0)
