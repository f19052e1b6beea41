"""The sampler contract on the Ray backend (the local loop's and the workers' half is
`tests/nas/search/test_samplers.py`): every registered sampler reaches its exact trial count on
a real Ray cluster and resumes, whether or not it pickles; and a search that fails inside Ray
ends with one line, its traceback in the run's log."""

from __future__ import annotations

import json
import shutil
import threading
from pathlib import Path

import optuna
import pytest

from nas.errors import SearchError
from nas.search.samplers import list_samplers
from tests.conftest import SMALL_CONFIG
from tests.searches import (
    check_clean_finish,
    check_sampler_run,
    in_cluster,
    ray_search,
    write_sampler_config,
)
from tests.services import RayCluster, netns_available

pytestmark = [
    pytest.mark.skipif(not netns_available(), reason="the cluster tests need root and `ip netns`"),
]


@pytest.mark.parametrize("sampler", list_samplers())
def test_sampler_on_ray_reaches_its_count_and_resumes(
    tmp_path: Path, cluster: RayCluster, sampler: str
) -> None:
    config, runs = write_sampler_config(tmp_path, sampler, "onray"), tmp_path / "runs"
    check_clean_finish(in_cluster(cluster, *ray_search(cluster, config, runs)))
    check_sampler_run(runs / "onray", sampler, 2)
    check_clean_finish(in_cluster(cluster, *ray_search(cluster, config, runs), "--trials", 3))
    check_sampler_run(runs / "onray", sampler, 3)


class LockedSampler(optuna.samplers.RandomSampler):
    """A sampler that cannot be pickled, as Optuna 5.1's NSGA-II cannot: it holds a lock."""

    def __init__(self) -> None:
        super().__init__(seed=0)
        self.lock = threading.Lock()


def test_tune_checkpoints_the_searcher_without_pickling_its_sampler(tmp_path: Path) -> None:
    from ray.tune.search import SearchGenerator

    from nas.cluster.searcher import StudySearch
    from nas.compress.space import compression_space
    from nas.config import parse_config
    from nas.search.study import distributions
    from search_spaces import get_space

    config = parse_config(SMALL_CONFIG, source="test")
    space = get_space("efficientnet", config.space)
    compression = compression_space(config.compression, space)
    study = optuna.create_study(
        study_name="locked",
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        directions=["maximize", "minimize"],
        sampler=LockedSampler(),
    )
    searcher = StudySearch(
        study=study,
        dists=distributions(space.dimensions() + compression.dimensions()),
        space=space,
        compression=compression,
        config=config,
    )
    searcher.suggest("t0")
    # What Tune's controller does at every experiment checkpoint.
    SearchGenerator(searcher).save_to_dir(str(tmp_path), session_str="s")
    (saved,) = tmp_path.glob("searcher-state-s.pkl")
    assert json.loads(saved.read_text())["study"] == "locked"
    with pytest.raises(SearchError, match="resumes from its study"):
        searcher.restore(str(saved))


def test_a_failure_inside_ray_ends_in_one_line(tmp_path: Path, cluster: RayCluster) -> None:
    """Tune cannot write its experiment folder: one line with the cause, the log that holds
    the traceback and the command that resumes; after the fix, that command finishes."""
    config, runs = write_sampler_config(tmp_path, "nsga2", "rayfail"), tmp_path / "r"
    check_clean_finish(in_cluster(cluster, *ray_search(cluster, config, runs), "--trials", 1))
    run = runs / "rayfail"
    blocker = run / "ray"
    shutil.rmtree(blocker)
    blocker.write_text("not a folder")  # where Tune keeps its experiment state
    proc = in_cluster(cluster, *ray_search(cluster, config, runs))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("error:")]
    assert "search failed:" in line and f"traceback in {run / 'search.log'}" in line
    assert "resume with: nas search" in line
    assert "Traceback (most recent call last)" in (run / "search.log").read_text()
    blocker.unlink()
    check_clean_finish(in_cluster(cluster, *ray_search(cluster, config, runs)))
    check_sampler_run(run, "nsga2", 2)
