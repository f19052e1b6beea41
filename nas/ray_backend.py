"""The Ray Tune backend: the local backend's evaluation function, run as Tune trials.

Ray Tune schedules one trial per candidate and asks Optuna's sampler for them through
`OptunaSearch`, whose study is the run's own study: a Ray run has the same storage, tables and
plot as a local one, and every other command reads it unchanged.

Placement: a trial reserves ``cluster.trial_cpus/trial_gpus/trial_memory_gb`` on any node. A
node that carries the target device says so with the custom resource ``device:NAME``
(``ray start --resources '{"device:NAME": 1}'``); the search starts one `Meter` actor on each
such node, holding that resource, and every latency measurement goes to a meter, so each device
node measures one model at a time. Trained weights come back to the run directory through a
small actor on the driver's node.

Faults: Tune restarts a trial whose worker or node died (``cluster.max_retries``); its Optuna
trial stays the same, so nothing is counted twice. A driver that dies leaves its running trials
RUNNING in the study; the next `nas search` marks them interrupted and queues them again.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import socket
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nas.config import RunConfig
from nas.errors import NASError, RunError, SearchError
from nas.run import Run, write_atomic

log = logging.getLogger("nas.ray")

CONNECT_TIMEOUT_S = 5.0


def device_resource(config: RunConfig) -> str:
    """The custom Ray resource a node advertises when it carries the config's device."""
    return f"device:{config.latency.device}"


def needs_device(config: RunConfig) -> bool:
    return config.latency.mode != "predicted" or config.compression.enabled


def check_address(address: str) -> None:
    """Fail within seconds, with one line, when nothing answers at `address`.

    Raises:
        RunError: `address` is not HOST:PORT, or no server listens there.
    """
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RunError(
            f"--address {address!r} is not HOST:PORT; give the address `ray start --head` "
            "printed, e.g. 127.0.0.1:6379"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as e:
        raise RunError(
            f"cannot reach the Ray cluster at {address}: {e.strerror or e}; start its head with "
            f"`ray start --head --port {port}`, or leave out --address to start a local Ray "
            "instance"
        ) from None


def connect(address: str | None, config: RunConfig) -> None:
    """Join the cluster at `address`, or start a local instance that carries the device."""
    if address is not None:
        check_address(address)
    else:
        # A local instance serves this machine only: loopback addresses, no dashboard.
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError:
        raise RunError(
            "--backend ray needs Ray: pip install 'hwnas[cluster]' (scripts/env.sh installs it)"
        ) from None

    common: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        ray.init(
            resources={device_resource(config): 1},
            include_dashboard=False,
            **common,
        )
    else:
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise RunError(
                f"cannot join the Ray cluster at {address}: {first}; check that it runs the same "
                "Ray version and, with token authentication, that this machine has its token"
            ) from None


def check_device(config: RunConfig, address: str | None, space: Any, runs_dir: Path) -> bool:
    """Whether latency can be measured on the cluster; if not, whether to predict it.

    Returns:
        True when a node carries the device (or none is needed); False when latency will be
        predicted instead because no node carries it.

    Raises:
        RunError: no node carries the device and latency cannot be predicted.
    """
    import ray

    resource = device_resource(config)
    if not needs_device(config) or ray.cluster_resources().get(resource, 0) > 0:
        return True
    where = f"the Ray cluster at {address}" if address else "the local Ray instance"
    hint = (
        f"start one on a machine with that device: ray start --address {address or 'HEAD:PORT'} "
        f"--resources '{{\"{resource}\": 1}}'"
    )
    if config.compression.enabled:
        raise RunError(
            f"no node of {where} advertises {resource}, and compressed candidates are scored "
            f"on measured artifacts; {hint}"
        )
    from latency_predictors.sources import latency_source

    try:
        latency_source(predicted_config(config), space, runs_dir)
    except NASError as e:
        raise RunError(
            f"no node of {where} advertises {resource}, and latency cannot be predicted ({e}); "
            f"{hint}"
        ) from None
    log.warning("no node advertises %s: latency is predicted, not measured", resource)
    return False


def predicted_config(config: RunConfig) -> RunConfig:
    return config.model_copy(
        update={"latency": config.latency.model_copy(update={"mode": "predicted"})}
    )


# Measurement on the nodes that carry the device.


def _backend(config_json: str, device: str | None) -> Any:
    from latency_predictors.devices import config_backend

    return config_backend(RunConfig.model_validate_json(config_json), device)


class Meter:
    """Measures models on one node that carries the device; one actor per such node.

    The actor holds the node's ``device:NAME`` resource for the whole search, so measurements
    on a node run one at a time in a process that stays warm (a task per measurement would
    start a fresh worker whenever Ray had reaped the idle one).
    """

    def __init__(self, config_json: str) -> None:
        self.config_json = config_json

    def identity(self, device: str | None) -> Any:
        return _backend(self.config_json, device).device

    def measure(
        self, device: str | None, files: dict[str, bytes], name: str, shape: tuple[int, ...]
    ) -> tuple[Any, str]:
        """(latency result, id of this node)."""
        import ray

        with tempfile.TemporaryDirectory(prefix="nas-measure-") as tmp:
            for fname, data in files.items():
                (Path(tmp) / fname).write_bytes(data)
            result = _backend(self.config_json, device).measure(Path(tmp) / name, shape)
        return result, ray.get_runtime_context().get_node_id()


def start_meters(config: RunConfig) -> list[Any]:
    """A `Meter` on every live node that advertises the config's device."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    resource = device_resource(config)
    nodes = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get(resource, 0) >= 1]
    return [
        ray.remote(Meter)
        .options(
            num_cpus=0,
            resources={resource: 1},
            scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        )
        .remote(config.model_dump_json())
        for n in nodes
    ]


def measuring_on(meters: list[Any]) -> Any:
    """The backend factory that measures on `meters`; None (this machine) when there are none."""
    return functools.partial(RemoteBackend, meters=meters) if meters else None


class RemoteBackend:
    """A `LatencyBackend` whose measurements run on the meters of the device's nodes.

    Running a model on real inputs (accuracy of a quantized artifact) stays on the trial's own
    node, with the same runtime. A meter whose node died is dropped and the next one is asked.
    """

    def __init__(self, config: RunConfig, device: str | None, *, meters: list[Any]) -> None:
        self._json, self._name = config.model_dump_json(), device
        self._meters = list(meters)
        self._turn = 0
        self._local: Any = None
        self.nodes: set[str] = set()  # where measurements ran, for the trial's record
        self.seconds = 0.0  # spent waiting for measurements, queueing included
        self.device = self._call("identity", device)

    def _call(self, method: str, *args: Any) -> Any:
        import ray

        while self._meters:
            meter = self._meters[self._turn % len(self._meters)]
            self._turn += 1
            try:
                return ray.get(getattr(meter, method).remote(*args))
            except ray.exceptions.RayActorError:
                self._meters.remove(meter)
        raise SearchError("every node that carried the device has left the Ray cluster")

    def measure(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Any:
        files = {
            p.name: p.read_bytes()
            for p in onnx_path.parent.iterdir()
            if p.is_file() and p.name.startswith(onnx_path.stem)
        }
        began = time.perf_counter()
        result, node = self._call("measure", self._name, files, onnx_path.name, tuple(input_shape))
        self.seconds += time.perf_counter() - began
        self.nodes.add(node)
        return result

    def runner(self, onnx_path: Path, input_shape: tuple[int, ...]) -> Any:
        if self._local is None:
            self._local = _backend(self._json, self._name)
        return self._local.runner(onnx_path, input_shape)


# The trial, on a worker.


@dataclass
class Payload:
    """What every trial needs, shipped once through the object store."""

    config_json: str
    meters: list[Any]  # empty when latency is predicted
    runs_dir: str
    writer: Any
    files: dict[str, bytes] = field(default_factory=dict)

    @property
    def key(self) -> str:
        import hashlib

        return hashlib.sha256(self.config_json.encode()).hexdigest()[:16]


_WORKER: dict[str, Any] = {}


def _worker_state(payload: Payload) -> tuple[Any, Any, RunConfig]:
    """(evaluator, compression space, config), built once per worker process."""
    if payload.key in _WORKER:
        return _WORKER[payload.key]
    import torch

    from nas import api
    from nas.compression import CompressionSpace

    config = RunConfig.model_validate_json(payload.config_json)
    root = Path(tempfile.gettempdir()) / "nas-ray" / f"{config.name}-{payload.key}"
    root.mkdir(parents=True, exist_ok=True)
    for name, data in payload.files.items():
        write_atomic(root / name, data)
    # The driver's runs folder where this node shares it (fitted predictors, latency cache).
    runs_dir = Path(payload.runs_dir) if Path(payload.runs_dir).is_dir() else root
    if config.training.threads is None:
        torch.set_num_threads(max(1, int(config.cluster.trial_cpus)))
    else:
        torch.set_num_threads(config.training.threads)
    prepared = api.prepare(config, runs_dir, backend=measuring_on(payload.meters))
    space = CompressionSpace(config.compression, n_stages=len(getattr(prepared.space, "base", ())))
    _WORKER[payload.key] = (api.evaluator(prepared, root), space, config)
    return _WORKER[payload.key]


def _report(status: str, **extra: Any) -> None:
    from ray import tune

    # Tune checks every result for the searcher's metrics, so they are always present.
    tune.report({"accuracy": math.nan, "latency_p50_ms": math.nan, "status": status, **extra})


def run_trial(spec: dict[str, Any], payload: Payload) -> None:
    """Tune's function trainable: evaluate one suggested candidate and report the outcome."""
    import ray

    from nas.early_stopping import Checkpoint
    from nas.evaluate import StoppedEarly
    from nas.search import stop_check

    if spec.get("reuse") is not None:
        _report("reused", outcome=json.dumps(spec["reuse"]))
        return
    number, params = spec["number"], spec["params"]
    with tempfile.TemporaryDirectory(prefix="nas-trial-") as tmp:
        try:
            evaluator, compression_space, config = _worker_state(payload)
            for backend in _remote_backends(evaluator):
                backend.nodes.clear()
                backend.seconds = 0.0
            stopping = config.search.early_stopping
            stop = (
                stop_check(stopping, number, [Checkpoint(*c) for c in spec["history"]])
                if stopping.enabled
                else None
            )
            outcome = evaluator(
                evaluator.space.from_params(params),
                compression=compression_space.from_params(params),
                weights_path=Path(tmp) / "weights.pt",
                stop=stop,
            )
        except StoppedEarly as stopped:
            _report("stopped", reason=stopped.reason, outcome=json.dumps(stopped.attrs))
            return
        except ray.exceptions.RayError:
            raise  # a node or worker went away: Tune runs the trial again
        except Exception as e:
            reason = str(e) if isinstance(e, NASError) else f"{type(e).__name__}: {e}"
            _report("failed", reason=f"{reason} (on {socket.gethostname()})")
            return
        files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
        ray.get(payload.writer.save.remote(number, files))
    attrs = outcome.attrs()
    attrs["ray_trained_on"] = ray.get_runtime_context().get_node_id()
    remote = _remote_backends(evaluator)
    attrs["ray_measured_on"] = sorted({n for b in remote for n in b.nodes})
    attrs["ray_measure_seconds"] = sum(b.seconds for b in remote)
    _report(
        "done",
        accuracy=outcome.accuracy,
        latency_p50_ms=outcome.latency.p50_ms,
        outcome=json.dumps(attrs),
    )


def _remote_backends(evaluator: Any) -> list[RemoteBackend]:
    """The evaluator's measurement backends that run on device nodes."""
    measured = getattr(evaluator.latency, "measured", evaluator.latency)  # hybrid wraps one
    found = [getattr(measured, "backend", None)]
    if evaluator.compressor is not None:
        found += list(evaluator.compressor.backends.values())
    return [b for b in found if isinstance(b, RemoteBackend)]


class RunWriter:
    """Writes a trial's files into the run directory; lives on the driver's node."""

    def __init__(self, root: str) -> None:
        self.run = Run(Path(root))

    def save(self, number: int, files: dict[str, bytes]) -> None:
        folder = self.run.weights_path(number).parent
        for name, data in files.items():
            write_atomic(folder / name, data)


# The driver.


def ray_search(
    config: RunConfig, runs_dir: Path, *, address: str | None, hint: str, reporter: Any
) -> Any:
    """Run (or resume) a search on Ray; see `nas.api.search`."""
    import ray

    from nas import api
    from nas.storage import check_storage
    from search_spaces import get_space

    space = get_space(config.space.name, config.space)
    run = Run.check(runs_dir, config)
    check_storage(config.cluster, run.root)
    connect(address, config)
    try:
        measure = check_device(config, address, space, runs_dir)
        used = config if measure else predicted_config(config)
        meters = start_meters(used) if measure and needs_device(used) else []
        prepared = api.prepare(used, runs_dir, backend=measuring_on(meters))
        with run.lock():
            write_atomic(run.config_path, config.to_yaml())
            handler = api.file_logging(run)
            try:
                return _drive(run, config, used, prepared, meters, hint, reporter, runs_dir)
            finally:
                logging.getLogger("nas").removeHandler(handler)
                handler.close()
    finally:
        ray.shutdown()


def _drive(
    run: Run,
    config: RunConfig,
    used: RunConfig,
    prepared: Any,
    meters: list[Any],
    hint: str,
    reporter: Any,
    runs_dir: Path,
) -> Any:
    import optuna
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from latency_predictors.sources import HybridLatency
    from nas import api
    from nas.compression import CompressionSpace
    from nas.progress import NullReporter
    from nas.report import front_frame, trials_frame, write_plot, write_tables
    from nas.search import (
        check_any_completed,
        distributions,
        enqueue_seeds,
        is_finished,
        open_study,
        recover_interrupted,
    )
    from nas.storage import fail_stale, heartbeat

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    reporter = reporter or NullReporter()
    start = time.monotonic()
    # With a shared storage, `nas worker`s may work on the study too: only trials whose
    # heartbeats stopped are recovered, and this driver beats for the trials it runs.
    shared = config.cluster.storage is not None
    study = open_study(run, config, shared=shared)
    api.describe_study(study, prepared)
    recovered = fail_stale(study) if shared else recover_interrupted(study)
    if recovered:
        log.warning("%d interrupted trial(s) marked failed and queued again", recovered)
    compression = CompressionSpace(
        config.compression, n_stages=len(getattr(prepared.space, "base", ()))
    )
    enqueue_seeds(study, config, prepared.space, compression)
    target = config.search.n_trials

    def finished() -> int:
        return sum(is_finished(t) for t in study.get_trials(deepcopy=False))

    running = sum(t.state.name == "RUNNING" for t in study.get_trials(deepcopy=False))
    remaining = target - finished() - running
    reporter.start(finished(), target)
    searcher: StudySearch | None = None
    try:
        if remaining > 0:
            writer = (
                ray.remote(num_cpus=0)(RunWriter)
                .options(
                    scheduling_strategy=NodeAffinitySchedulingStrategy(
                        ray.get_runtime_context().get_node_id(), soft=False
                    )
                )
                .remote(str(run.root.resolve()))
            )
            payload = Payload(
                config_json=used.model_dump_json(),
                meters=meters,
                runs_dir=str(Path(runs_dir).resolve()),
                writer=writer,
                files=_teacher_files(prepared, run),
            )
            searcher = StudySearch(
                study=study,
                dists=distributions(prepared.space.dimensions() + compression.dimensions()),
                space=prepared.space,
                compression=compression,
                config=config,
            )
            progress = Progress(
                study=study, run=run, searcher=searcher, reporter=reporter, finished=finished
            )
            with heartbeat(study._storage, searcher.running):
                _fit(run, config, searcher, progress, payload, remaining)
    finally:
        reporter.stop()
    # Trials Tune stopped (time budget, Ctrl-C) before they reported: queued again.
    left = searcher.abandon() if searcher is not None else 0
    trials = trials_frame(study)
    write_tables(run, trials)
    write_plot(run, trials)
    done = finished()
    timed_out = config.search.timeout is not None and done < target
    if left and done < target and not timed_out:
        raise SearchError(f"search interrupted; resume with: {hint}")
    check_any_completed(study, run)
    if isinstance(prepared.latency, HybridLatency):
        api.remeasure_front(study, prepared.space, prepared.latency, run, reporter)
    front = front_frame(trials_frame(study))
    return api.SearchResult(run, done, target, front, timed_out, time.monotonic() - start)


def _teacher_files(prepared: Any, run: Run) -> dict[str, bytes]:
    """Train (or load) the distillation teacher here once; workers get its files."""
    from nas import api

    teacher = api.teacher(prepared, run.root)
    if teacher is None:
        return {}
    teacher.model()
    return {p.name: p.read_bytes() for p in (teacher.weights_path, teacher.card_path)}


def _fit(
    run: Run,
    config: RunConfig,
    searcher: Any,
    progress: Any,
    payload: Payload,
    remaining: int,
) -> None:
    # Tune's own console output would interleave with this search's progress and stdout.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    from ray import tune

    c = config.cluster
    resources: dict[str, float] = {"cpu": c.trial_cpus, "gpu": c.trial_gpus}
    if c.trial_memory_gb is not None:
        resources["memory"] = c.trial_memory_gb * 2**30
    trainable = tune.with_resources(tune.with_parameters(run_trial, payload=payload), resources)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=remaining,
            max_concurrent_trials=c.max_concurrent_trials,
            reuse_actors=True,
            time_budget_s=config.search.timeout,
        ),
        run_config=tune.RunConfig(
            name=time.strftime("tune-%Y%m%d-%H%M%S"),
            storage_path=str((run.root / "ray").resolve()),
            failure_config=tune.FailureConfig(max_failures=c.max_retries),
            callbacks=[progress],
            verbose=0,
        ),
    )
    tuner.fit()


def _searcher_base() -> type:
    from ray.tune.search.optuna import OptunaSearch

    return OptunaSearch


class StudySearch(_searcher_base()):  # type: ignore[misc]
    """`OptunaSearch` on the run's study that stores each outcome the way the local loop does.

    Suggestions carry the Optuna trial number, the candidate's key, a completed trial's outcome
    when the candidate was evaluated before (the trial then only reports it), and early
    stopping's history.
    """

    def __init__(
        self, *, study: Any, dists: dict[str, Any], space: Any, compression: Any, config: RunConfig
    ) -> None:
        from nas.search import DIRECTIONS, METRIC_NAMES

        super().__init__(
            space=dists,
            metric=list(METRIC_NAMES),
            mode=["max" if d.name == "MAXIMIZE" else "min" for d in DIRECTIONS],
            sampler=study.sampler,
            study_name=study.study_name,
            storage=study._storage,
        )
        from optuna.trial import TrialState

        from nas.search import trial_key

        self.study, self.space_, self.compression, self.config = study, space, compression, config
        self.known = {
            trial_key(t.user_attrs): t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        }
        self.lines: dict[str, tuple[int, str]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its searcher into the experiment folder for `Tuner.restore`; a run
        # resumes from its study instead, and the storage's connections do not pickle.
        return {}

    def running(self) -> list[int]:
        """Storage ids of this searcher's trials that have not been told yet."""
        return [
            t._trial_id for i, t in list(self._ot_trials.items()) if i not in self._completed_trials
        ]

    def abandon(self) -> int:
        """Mark this searcher's untold trials interrupted and queue them again; how many."""
        from nas.storage import fail_interrupted

        storage = self._ot_study._storage
        return sum(
            fail_interrupted(
                self._ot_study,
                storage.get_trial(i),
                "interrupted: the search stopped during this trial; retried",
            )
            for i in self.running()
            if storage.get_trial(i).state.name == "RUNNING"
        )

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        from nas.search import checkpoints, reusable_attrs, trial_key

        super().suggest(trial_id)
        ot = self._ot_trials[trial_id]
        ot.set_user_attr("candidate", self.space_.encode(self.space_.from_params(ot.params)))
        if self.compression.enabled:
            ot.set_user_attr("compression", self.compression.from_params(ot.params).encode())
        key = trial_key(ot.user_attrs)
        original = self.known.get(key)
        early = self.config.search.early_stopping.enabled
        return {
            "params": dict(ot.params),
            "number": ot.number,
            "key": key,
            "reuse": reusable_attrs(original) if original is not None else None,
            "history": [dataclasses.astuple(c) for c in checkpoints(self._ot_study)]
            if early
            else [],
        }

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        from optuna.trial import TrialState

        from nas.search import describe_outcome, tell_outcome, trial_key
        from nas.storage import fail_interrupted

        if trial_id in self._completed_trials:
            return
        self._completed_trials.add(trial_id)
        ot = self._ot_trials[trial_id]
        status = (result or {}).get("status")
        try:
            if status in ("done", "reused"):
                attrs = json.loads(result["outcome"])  # type: ignore[index]
                tell_outcome(self._ot_study, ot, attrs, self.config.search)
                frozen = self._ot_study.get_trials(deepcopy=False)[ot.number]
                self.known.setdefault(trial_key(frozen.user_attrs), frozen)
                line = describe_outcome(attrs)
                if status == "reused":
                    line = f"same candidate as trial {attrs['duplicate_of']}; reused its results"
                self.lines[trial_id] = (ot.number, f"done: {line}")
                return
            if status == "stopped":
                for key, value in json.loads(result["outcome"]).items():  # type: ignore[index]
                    ot.set_user_attr(key, value)
                self._ot_study.tell(ot, state=TrialState.PRUNED)
                self.lines[trial_id] = (ot.number, f"stopped early: {result['reason']}")  # type: ignore[index]
                return
        except SearchError as e:
            status, result = "failed", {"reason": str(e)}
        if status == "failed" or error:
            reason = (
                result["reason"]  # type: ignore[index]
                if status == "failed"
                else "its Ray worker or node died and the retries (cluster.max_retries) ran out"
            )
            ot.set_user_attr("failure_reason", reason)
            self._ot_study.tell(ot, state=TrialState.FAIL)
            self.lines[trial_id] = (ot.number, f"failed: {reason}")
            return
        # Stopped by Tune before it reported (time budget, Ctrl-C): run it again later.
        frozen = self._ot_study.get_trials(deepcopy=False)[ot.number]
        fail_interrupted(self._ot_study, frozen, "interrupted: the search stopped; retried")
        self.lines[trial_id] = (ot.number, "interrupted; queued again")


def _callback_base() -> type:
    from ray.tune import Callback

    return Callback


class Progress(_callback_base()):  # type: ignore[misc]
    """Tune callback: progress lines, the log, and the run's tables after every trial."""

    def __init__(
        self, *, study: Any, run: Run, searcher: StudySearch, reporter: Any, finished: Any
    ) -> None:
        self.study, self.run, self.searcher = study, run, searcher
        self.reporter, self.finished = reporter, finished

    def __getstate__(self) -> dict[str, Any]:
        return {}  # as StudySearch: kept in Tune's experiment state, never restored from it

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.reporter.trial_started(trial.config["number"], trial.config["key"])

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        line = (
            f"trial {trial.config['number']}: its Ray worker or node died; Tune runs it again "
            f"({trial.run_metadata.num_failures} of {trial.max_failures} retries)"
        )
        log.warning(line)
        self.reporter.note(line)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished(trial)

    def _finished(self, trial: Any) -> None:
        from nas.report import trials_frame, write_tables

        number, summary = self.searcher.lines.pop(trial.trial_id, (trial.config["number"], "ended"))
        seconds = (trial.last_result or {}).get("time_total_s", math.nan)
        line = f"trial {number} {summary} ({seconds:.1f} s on Ray)"
        log.info(line)
        front = write_tables(self.run, trials_frame(self.study))
        self.reporter.trial_finished(number, line, self.finished(), len(front))
