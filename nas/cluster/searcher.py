"""The Optuna-search adapter: Ray Tune asks the run's own study for candidates.

`StudySearch` is Ray's `OptunaSearch` whose study is the run's study (same storage, sampler and
seeds), and which stores each outcome exactly as the local loop does: the same attributes,
constraints and objectives, the same reuse of a candidate evaluated before, the same
interrupted-and-queued-again handling of a trial Tune stopped. Importing this module imports
Ray.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from nas.compress.space import CompressionSpace
from nas.config import RunConfig
from nas.errors import SearchError
from nas.record import (
    CANDIDATE,
    COMPRESSION,
    DUPLICATE_OF,
    FAILURE_REASON,
    MAXIMIZE,
    OBJECTIVES,
    trial_key,
)
from nas.search.study import checkpoints, describe_outcome, reusable_attrs, tell_outcome
from nas.storage import fail_interrupted


class StudySearch(OptunaSearch):
    """`OptunaSearch` on the run's study that stores each outcome the way the local loop does.

    Suggestions carry the Optuna trial number, the candidate's key, a completed trial's outcome
    when the candidate was evaluated before (the trial then only reports it), and early
    stopping's history.
    """

    def __init__(
        self,
        *,
        study: optuna.Study,
        dists: dict[str, Any],
        space: Any,
        compression: CompressionSpace,
        config: RunConfig,
    ) -> None:
        super().__init__(
            space=dists,
            metric=list(OBJECTIVES),
            mode=["max" if m else "min" for m in MAXIMIZE],
            sampler=study.sampler,
            study_name=study.study_name,
            storage=study._storage,
        )
        self.study, self.space_, self.compression, self.config = study, space, compression, config
        self.known = {
            trial_key(t.user_attrs): t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        }
        self.lines: dict[str, tuple[int, str]] = {}

    @property
    def ot_study(self) -> optuna.Study:
        """The study `OptunaSearch` asks and tells (the run's study, opened by Ray)."""
        study = self._ot_study
        if study is None:
            raise SearchError("the Optuna search has no study; it was not set up with a space")
        return study

    def __getstate__(self) -> dict[str, Any]:
        # A run resumes from its study, never from a copy of this searcher: the storage's
        # connections and some samplers (Optuna 5.1's NSGA-II holds a lock) do not pickle.
        return {}

    def save(self, checkpoint_path: str) -> None:
        """What Tune's experiment checkpoint keeps of this searcher: where its state is.

        `OptunaSearch.save` pickles the searcher whole, sampler included, and a sampler that
        does not pickle ended the search; the study in the run's storage already holds every
        trial, and `nas search` resumes from it, so only its name is written.
        """
        # Tune writes this to a temporary name and renames it into place.
        Path(checkpoint_path).write_text(
            json.dumps({"study": self.study.study_name, "resume": "rerun `nas search`"})
        )

    def restore(self, checkpoint_path: str) -> None:
        raise SearchError(
            "a Ray search resumes from its study, not from Tune's experiment folder: rerun "
            "the `nas search` command that started it"
        )

    def running(self) -> list[int]:
        """Storage ids of this searcher's trials that have not been told yet."""
        return [
            t._trial_id for i, t in list(self._ot_trials.items()) if i not in self._completed_trials
        ]

    def abandon(self) -> int:
        """Mark this searcher's untold trials interrupted and queue them again; how many."""
        storage = self.ot_study._storage
        return sum(
            fail_interrupted(
                self.ot_study,
                storage.get_trial(i),
                "interrupted: the search stopped during this trial; retried",
            )
            for i in self.running()
            if storage.get_trial(i).state.name == "RUNNING"
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        super().suggest(trial_id)
        ot = self._ot_trials[trial_id]
        ot.set_user_attr(CANDIDATE, self.space_.encode(self.space_.from_params(ot.params)))
        if self.compression.enabled:
            ot.set_user_attr(COMPRESSION, self.compression.from_params(ot.params).encode())
        key = trial_key(ot.user_attrs)
        original = self.known.get(key)
        early = self.config.search.early_stopping.enabled
        return {
            "params": dict(ot.params),
            "number": ot.number,
            "key": key,
            "reuse": reusable_attrs(original) if original is not None else None,
            "history": [dataclasses.astuple(c) for c in checkpoints(self.ot_study)]
            if early
            else [],
        }

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        if trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        ot = self._ot_trials[trial_id]
        result = result or {}
        status = result.get("status")
        try:
            if status in ("done", "reused"):
                self._told(trial_id, ot, json.loads(result["outcome"]), reused=status == "reused")
                return
            if status == "stopped":
                for key, value in json.loads(result["outcome"]).items():
                    ot.set_user_attr(key, value)
                self.ot_study.tell(ot, state=TrialState.PRUNED)
                self.lines[trial_id] = (ot.number, f"stopped early: {result['reason']}")
                return
        except SearchError as e:
            status, result = "failed", {"reason": str(e)}
        if status == "failed" or error:
            reason = (
                result["reason"]
                if status == "failed"
                else "its Ray worker or node died and the retries (cluster.max_retries) ran out"
            )
            ot.set_user_attr(FAILURE_REASON, reason)
            self.ot_study.tell(ot, state=TrialState.FAIL)
            self.lines[trial_id] = (ot.number, f"failed: {reason}")
            return
        # Stopped by Tune before it reported (time budget, Ctrl-C): run it again later.
        frozen = self.ot_study.get_trials(deepcopy=False)[ot.number]
        fail_interrupted(self.ot_study, frozen, "interrupted: the search stopped; retried")
        self.lines[trial_id] = (ot.number, "interrupted; queued again")

    def _told(self, trial_id: str, ot: optuna.Trial, attrs: dict[str, Any], reused: bool) -> None:
        """Store a completed (or reused) evaluation on its trial, as the local loop does."""
        tell_outcome(self.ot_study, ot, attrs, self.config.search)
        frozen = self.ot_study.get_trials(deepcopy=False)[ot.number]
        self.known.setdefault(trial_key(frozen.user_attrs), frozen)
        line = describe_outcome(attrs)
        if reused:
            line = f"same candidate as trial {attrs[DUPLICATE_OF]}; reused its results"
        self.lines[trial_id] = (ot.number, f"done: {line}")
