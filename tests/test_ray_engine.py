"""`pinet score --engine ray` and pinet_runtime.ray: the local path's scores and per-item errors, on Ray.

Every Ray instance here is small (2 CPUs), keeps its files in a short temporary folder (Unix socket
paths have a length limit) and is shut down in a ``finally``; token authentication is off so that
Ray writes nothing under the home folder.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pinet_runtime.scorer import Scorer

TOLERANCE = 1e-6          # the bound on |ray score - local score|


@pytest.fixture
def ray_tmp(monkeypatch):
    folder = tempfile.mkdtemp(prefix="pray", dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", folder)
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def photo_folder(tmp_path, sample_photos, pristine_dir):
    """Real photos (the bundled samples + 4 pristine ones) and one file that is not an image."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in [*sample_photos, *sorted(pristine_dir.glob("*.jpg"))[:4]]:
        shutil.copy(photo, folder / photo.name)
    (folder / "broken.jpg").write_bytes(b"this is not a JPEG")
    return folder


def _local_results(folder: Path) -> dict[str, tuple]:
    """The expectation: the local Scorer (the same default model choice as `pinet score`)."""
    files = sorted(str(p) for p in folder.iterdir())
    return {r.source: (r.score, r.error) for r in Scorer().score_many(files)}


def _assert_same(ray_rows: dict[str, tuple], local: dict[str, tuple]) -> None:
    assert set(ray_rows) == set(local)
    for path, (score, error) in local.items():
        got_score, got_error = ray_rows[path]
        assert got_error == error, path
        if score is None:
            assert got_score is None and "broken.jpg" in path and "not an image" in error
        else:
            assert abs(got_score - score) <= TOLERANCE, (path, got_score, score)


def _processes_using(folder: str) -> list[str]:
    """Command lines of live processes that mention ``folder`` (Ray's daemons name their session dir)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if folder in command:
                found.append(command)
    return found


@pytest.mark.slow
def test_cli_on_a_local_instance_matches_the_local_path(photo_folder, ray_tmp, blocked_imports):
    """No --ray-address: the command starts a 2-CPU local instance and shuts it down; torch is never
    needed (blocked in the driver). A file name that is not valid UTF-8 round-trips through Ray."""
    shutil.copy(sorted(photo_folder.glob("kodak*.jpg"))[0], os.fsdecode(bytes(photo_folder) + b"/odd\xff.jpg"))
    done = blocked_imports.run_cli("score", str(photo_folder), "--engine", "ray", "--workers", "2",
                                   "--batch-size", "2", "--format", "json", timeout=240)
    assert done.returncode == 1, done.stderr          # 1: one item failed, the rest scored
    records = json.loads(done.stdout)
    assert [r["path"] for r in records] == sorted(str(p) for p in photo_folder.iterdir())   # input order
    _assert_same({r["path"]: (r["score"], r["error"]) for r in records}, _local_results(photo_folder))
    assert f"{len(records) - 1} of {len(records)} images scored, 1 failed" in done.stderr
    assert any(Path(ray_tmp).iterdir()), "Ray kept its session files elsewhere than RAY_TMPDIR"
    assert _processes_using(ray_tmp) == [], "the local Ray instance outlived the command"


@pytest.mark.slow
def test_python_api_and_cli_on_a_running_cluster(photo_folder, ray_tmp, tmp_path, monkeypatch):
    """A running instance stands in for a cluster: score_dataset with Ray's Parquet writer, score_paths
    in input order, and `pinet score --ray-address` writing CSV with --ray-output (and leaving the
    cluster running). The actors' copies of the model do not outlive them: Ray ends actors without
    running their finalizers."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))        # inherited by the instance's worker processes
    import pyarrow.csv
    import pyarrow.parquet
    import ray

    from pinet_runtime.ray import ray_session, score_dataset, score_paths

    local = _local_results(photo_folder)
    files = sorted(str(p) for p in photo_folder.iterdir())
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=ray_tmp)
    try:
        with ray_session():                                # joins the instance, does not stop it
            ds = ray.data.from_items([{"path": p, "label": i} for i, p in enumerate(files)])
            scored = score_dataset(ds, workers=2, batch_size=2)
            assert scored.columns() == ["path", "label", "score", "error", "crops", "seconds"]
            scored.write_parquet(str(tmp_path / "parquet"))
            streamed = list(score_paths(files, workers=2, batch_size=1))
        table = pyarrow.parquet.read_table(tmp_path / "parquet").to_pydict()
        _assert_same({p: (s, e) for p, s, e in zip(table["path"], table["score"], table["error"])}, local)
        assert sorted(table["label"]) == list(range(len(files)))
        assert [row[1] for row in streamed] == files and [row[0] for row in streamed] == list(range(len(files)))
        _assert_same({row[1]: (row[2], row[3]) for row in streamed}, local)
        assert [row[4] for row in streamed] == [0 if local[f][0] is None else 5 for f in files]

        address = ray.get_runtime_context().gcs_address
        out = tmp_path / "csv"
        done = subprocess.run([sys.executable, "-m", "pinet.cli", "score", str(photo_folder), "--engine", "ray",
                               "--ray-address", address, "--ray-output", str(out), "--format", "csv"],
                              capture_output=True, text=True, timeout=240, env={**os.environ})
        assert done.returncode == 1, done.stderr
        assert f"{len(files) - 1} of {len(files)} images scored, 1 failed" in done.stderr
        as_text = pyarrow.csv.ConvertOptions(column_types={"error": pyarrow.string()}, strings_can_be_null=True)
        rows = pyarrow.concat_tables([pyarrow.csv.read_csv(f, convert_options=as_text)
                                      for f in sorted(out.iterdir())]).to_pydict()
        _assert_same({p: (s, e) for p, s, e in zip(rows["path"], rows["score"], rows["error"])}, local)
        assert ray.cluster_resources().get("CPU") == 2    # the command left the cluster running
        from pinet_runtime.errors import PinetError

        with pytest.raises(PinetError, match="reserves 1 GPU .* cluster has 0"):
            score_dataset(ray.data.from_items([{"path": files[0]}]), providers="cuda")
    finally:
        ray.shutdown()
    assert list(scratch.glob("pinet-ray-model-*")) == [], "an actor's model copy outlived the job"


def test_ray_options_need_the_ray_engine(sample_photos):
    from typer.testing import CliRunner

    from pinet.cli.app import app

    result = CliRunner().invoke(app, ["score", str(sample_photos[0]), "--workers", "2", "--ray-address", "auto"])
    assert result.exit_code == 2
    assert "--ray-address, --workers only apply to --engine ray" in result.stderr


def test_ray_engine_without_the_extra_names_it(sample_photos, blocked_imports):
    done = blocked_imports.run_cli("score", str(sample_photos[0]), "--engine", "ray",
                                   blocked=(*blocked_imports.HEAVY_PACKAGES, "ray"))
    assert done.returncode == 2, done.stderr
    assert "needs ray" in done.stderr and "pinet-iqa[ray]" in done.stderr
    assert "Traceback" not in done.stderr


def test_api_without_ray_raises_a_pinet_error(blocked_imports):
    done = blocked_imports.run_python(
        "from pinet_runtime.errors import PinetError\n"
        "from pinet_runtime.ray import paths_dataset\n"
        "try:\n    paths_dataset(['a.jpg'])\nexcept PinetError as err:\n    print('refused:', err)\n",
        blocked=(*blocked_imports.HEAVY_PACKAGES, "ray"))
    assert done.returncode == 0, done.stderr
    assert "refused: ray: not installed" in done.stdout and "pinet-iqa[ray]" in done.stdout


def test_actors_reserve_a_gpu_exactly_when_cuda_is_asked_for():
    from pinet_runtime.errors import PinetError
    from pinet_runtime.ray import actor_gpus

    assert actor_gpus("cuda") == 1.0 and actor_gpus("CUDA") == 1.0
    assert actor_gpus("cpu") == 0.0 and actor_gpus(["CPUExecutionProvider"]) == 0.0
    assert actor_gpus(["CUDAExecutionProvider", "CPUExecutionProvider"]) == 1.0
    assert actor_gpus([("CUDAExecutionProvider", {"device_id": 0}), "CPUExecutionProvider"]) == 1.0
    assert actor_gpus("cuda", gpus_per_worker=0.25) == 0.25 and actor_gpus("cpu", gpus_per_worker=0) == 0.0
    with pytest.raises(PinetError, match="gpus_per_worker"):
        actor_gpus("cuda", gpus_per_worker=-1)
