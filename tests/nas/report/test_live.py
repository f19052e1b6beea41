"""A run kept open by a reader (the service, the dashboard) sees each trial the search commits."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from nas.report.live import LiveRun
from nas.run import Run
from nas.storage import close_storage, open_storage
from tests.conftest import SMALL_CONFIG


def _finished_trial(accuracy: float) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        params={"x": accuracy},
        distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        values=[accuracy, 1.0],
        user_attrs={"accuracy": accuracy, "latency_p50_ms": 1.0},
    )


def test_a_reader_sees_trials_the_writer_has_not_checkpointed(tmp_path: Path) -> None:
    run = Run(tmp_path / "small")
    run.root.mkdir()
    run.config_path.write_text(yaml.safe_dump(SMALL_CONFIG))
    study = optuna.create_study(
        storage=open_storage(run.storage_url),
        study_name=SMALL_CONFIG["name"],
        directions=["maximize", "minimize"],
    )
    live = LiveRun(run)
    try:
        assert live.progress(None).done == 0
        for done in (1, 2, 3):
            study.add_trial(_finished_trial(0.1 * done))
            # The commits sit in study.db-wal while the search holds the file open.
            assert run.study_path.with_name("study.db-wal").stat().st_size > 0
            assert live.progress(None).done == done
    finally:
        close_storage(live.study)
        close_storage(study)
