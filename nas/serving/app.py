"""The Ray Serve application of a deployment: one Serve deployment per variant (its replicas
and dynamic batcher), the ingress (one endpoint for all of them) and the ramp controller.

Imported only where Ray Serve runs (`nas deploy` and the replicas): Ray is a heavy, optional
dependency and `import nas` works without it.
"""

# No `from __future__ import annotations` here: FastAPI reads the route handlers' annotations
# (`request: Request`) at runtime, and Ray Serve's class-based ingress cannot resolve strings.
import logging
import threading
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from ray import serve

from nas.serving.config import DeployConfig
from nas.serving.ingress import Endpoint, app
from nas.serving.ramp import RampState, advance, observations
from nas.serving.replica import Item, VariantReplica, rows_in
from nas.serving.runtime import VariantSpec
from nas.serving.store import Store

log = logging.getLogger(__name__)
INGRESS_MAX_ONGOING = 2048


@serve.deployment(health_check_period_s=2, health_check_timeout_s=10)
class Variant(VariantReplica):
    def __init__(
        self, deployment: str, spec: VariantSpec, max_batch_size: int, max_wait_ms: float
    ) -> None:
        super().__init__(deployment, spec)
        self.batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.batch.set_batch_wait_timeout_s(max_wait_ms / 1000)  # type: ignore[attr-defined]

    async def predict(self, x: Any, enqueued: float) -> dict[str, Any]:
        self.waiting += 1
        answer: dict[str, Any] = await self.batch(Item(x, enqueued))
        return answer

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.005, batch_size_fn=rows_in)
    async def batch(self, items: list[Item]) -> list[dict[str, Any]]:
        return await self.run_batch(items)


@serve.deployment(max_ongoing_requests=INGRESS_MAX_ONGOING)
@serve.ingress(app)
class Ingress(Endpoint):
    @app.post("/predict")
    async def _predict(self, request: Request) -> JSONResponse:
        return await self.predict(request)

    @app.post("/feedback")
    async def _feedback(self, request: Request) -> JSONResponse:
        return await self.feedback(request)

    @app.get("/status")
    async def _status(self) -> JSONResponse:
        return await self.status()

    def __del__(self) -> None:
        try:
            self._flush()
        except Exception:
            log.exception("exposures not flushed at shutdown")


@serve.deployment(num_replicas=1, max_ongoing_requests=4)
class RampController:
    """Checks the ramp every `check_interval_s`: guardrails, step, promote or roll back."""

    def __init__(self, config: dict[str, Any], store_url: str) -> None:
        self.config = DeployConfig.model_validate(config)
        self.store = Store(store_url, self.config.name)
        self.last_error = ""
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        plan = self.config.ramp
        assert plan is not None
        while True:
            time.sleep(plan.check_interval_s)
            try:
                self.check()
                self.last_error = ""
            except Exception as e:  # keep checking; status shows the error
                self.last_error = f"{type(e).__name__}: {e}"
                log.exception("ramp check failed")

    def check(self) -> None:
        plan = self.config.ramp
        state = self.store.state()
        if plan is None or state is None:
            return
        traffic, raw, read_at = state
        if raw is None:
            return
        ramp = RampState.from_json(raw)
        if ramp.status != "ramping":
            return
        log_since = self.store.exposures(since=ramp.started)
        obs = observations(log_since, ramp, self.config.control_name, plan.candidate)
        now = time.time()
        new, change = advance(
            ramp, plan, self.config.guardrails, obs, traffic, self.config.control_name, now
        )
        if change is not None and self.store.set_traffic(
            change.traffic, change.kind, change.reason, new.to_json(), now, expect=read_at
        ):
            log.warning("%s: %s", self.config.name, change.reason)

    def health(self) -> str:
        return self.last_error


def build(config: DeployConfig, specs: dict[str, VariantSpec], store_url: str) -> Any:
    """The Serve application for `config`."""
    raw = config.model_dump(mode="json")
    handles = {}
    for name, spec in specs.items():
        batching = config.batching_of(name)
        variant = config.variant(name)
        scaling: dict[str, Any] = (
            {"autoscaling_config": variant.autoscaling.model_dump()}
            if variant.autoscaling is not None
            else {"num_replicas": variant.replicas}
        )
        handles[name] = Variant.options(  # type: ignore[attr-defined]
            name=f"variant-{name}",
            **scaling,
            max_ongoing_requests=max(2 * batching.max_batch_size, 2),
            max_queued_requests=batching.max_queue,
            ray_actor_options={"num_cpus": 0},
        ).bind(config.name, spec, batching.max_batch_size, batching.max_wait_ms)
    controller = (
        RampController.options(  # type: ignore[attr-defined]
            ray_actor_options={"num_cpus": 0}
        ).bind(raw, store_url)
        if config.ramp is not None
        else None
    )
    return Ingress.options(  # type: ignore[attr-defined]
        num_replicas=config.ingress_replicas, ray_actor_options={"num_cpus": 0}
    ).bind(raw, specs, handles, store_url, controller)
