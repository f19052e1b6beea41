"""The deployment's endpoint: decode the request, choose the variant, call its replicas, log the
exposure, answer. Also `POST /feedback` (a label for an answered request) and `GET /status`.

Routes, under ``/<deployment name>``:

- ``POST /predict``: a JSON body ``{"inputs": [...]}`` (normalised NCHW or CHW numbers) or
  ``{"image": "<base64 PNG/JPEG>"}``, or a raw PNG/JPEG body, or a ``.npy`` body. A unit id
  (``unit_id`` field, ``X-Unit-Id`` header or ``?unit_id=``) makes the assignment sticky; a
  ``variant`` field or ``X-Variant`` header forces one variant (for debugging).
- ``POST /feedback``: ``{"request_id": ..., "label": 3}`` (a class index or name).
- ``GET /status``: traffic, ramp state, variants.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nas.serving.assignment import assign, bucket_order
from nas.serving.config import DeployConfig
from nas.serving.metrics import IngressMetrics, labels
from nas.serving.runtime import (
    IMAGE_TYPES,
    NPY_TYPES,
    InputError,
    VariantSpec,
    decode_image,
    decode_json_input,
    decode_npy,
)
from nas.serving.store import Exposure, Store

log = logging.getLogger(__name__)
TRAFFIC_REFRESH_S = 0.5
FLUSH_S = 0.1
RETRY_AFTER_S = 1
MAX_PENDING = 200_000  # exposures kept while the store cannot be written; the oldest go first

app = FastAPI(title="nas deployment", docs_url=None, redoc_url=None)


def problem(status: int, message: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers or None)


class Endpoint:
    """State and logic of the ingress replica; `nas.serving.app` binds it to Ray Serve."""

    def __init__(
        self,
        config: dict[str, Any],
        specs: dict[str, VariantSpec],
        handles: dict[str, Any],
        store_url: str,
        controller: Any = None,
    ) -> None:
        self.controller = controller  # the ramp controller's handle (None without a ramp)
        self.config = DeployConfig.model_validate(config)
        self.name = self.config.name
        self.specs, self.handles = specs, handles
        self.store = Store(store_url, self.name)
        self.io = ThreadPoolExecutor(2, thread_name_prefix="store")
        self.metrics = IngressMetrics()
        self.rng = np.random.default_rng()
        self.pending: list[Exposure] = []  # answered, not yet in the store
        self.lock = threading.Lock()
        self.traffic: dict[str, float] = self.config.starting_traffic()
        self.ramp: dict[str, Any] | None = None
        candidate = self.config.ramp.candidate if self.config.ramp else None
        self.order = bucket_order([v.name for v in self.config.variants], candidate)
        self._refresh()
        self._tasks: list[asyncio.Task[None]] = []

    # -- background work -------------------------------------------------------------------

    def _refresh(self) -> None:
        state = self.store.state()
        if state is not None:
            self.traffic, self.ramp, _ = state
        for v, w in self.traffic.items():
            self.metrics.weight.set(w, labels(self.name, v))

    def _start_tasks(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._loop(self._refresh, TRAFFIC_REFRESH_S)),
                asyncio.create_task(self._loop(self._flush, FLUSH_S)),
            ]

    async def _loop(self, work: Any, every: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(every)
            try:
                await loop.run_in_executor(self.io, work)
            except Exception:  # a database hiccup must not stop the endpoint
                log.exception("background %s failed", work.__name__)

    def _log(self, row: Exposure) -> None:
        with self.lock:
            self.pending.append(row)

    def _flush(self) -> None:
        with self.lock:
            rows, self.pending = self.pending, []
        try:
            self.store.record(rows)
        except Exception:
            with self.lock:  # keep them for the next flush, up to a bound
                self.pending = (rows + self.pending)[-MAX_PENDING:]
            raise

    async def flush(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self.io, self._flush)

    # -- requests --------------------------------------------------------------------------

    async def predict(self, request: Request) -> JSONResponse:
        self._start_tasks()
        t0 = time.time()
        request_id = uuid.uuid4().hex
        variant = "-"
        try:
            body, unit_id, forced = await self._parse(request)
            variant = self._choose(unit_id, forced)
            x = self._decode(self.specs[variant], request, body)
            limit = self.config.batching_of(variant).max_batch_size
            if len(x) > max(limit, 1):
                raise InputError(
                    422,
                    f"{len(x)} rows in one request; variant {variant} batches "
                    f"at most {limit}: send at most {limit}",
                )
            result = await self.handles[variant].predict.remote(x, time.time())
        except InputError as e:
            return self._refuse(request_id, variant, t0, e.status, str(e))
        except Exception as e:  # the replica refused (queue full) or died mid-request
            return self._failed(request_id, variant, t0, e)
        return self._answer(request_id, variant, unit_id, t0, result)

    async def _parse(
        self, request: Request
    ) -> tuple[dict[str, Any] | bytes, str | None, str | None]:
        try:
            length = int(request.headers.get("content-length") or 0)
        except ValueError:
            raise InputError(400, "Content-Length is not a number") from None
        if length > self.config.max_body_bytes:
            raise InputError(413, f"body of {length} bytes; at most {self.config.max_body_bytes}")
        data = await request.body()
        if len(data) > self.config.max_body_bytes:
            raise InputError(
                413, f"body of {len(data)} bytes; at most {self.config.max_body_bytes}"
            )
        unit_id = request.headers.get("x-unit-id") or request.query_params.get("unit_id")
        forced = request.headers.get("x-variant") or request.query_params.get("variant")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            return data, unit_id, forced
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InputError(400, "body is not valid JSON") from None
        if not isinstance(body, dict):
            raise InputError(422, "JSON body must be an object with 'inputs' or 'image'")
        for key in ("unit_id", "variant"):
            if key in body and not isinstance(body[key], str | int):
                raise InputError(422, f"{key}: a string")
        unit_id = str(body["unit_id"]) if "unit_id" in body else unit_id
        forced = str(body["variant"]) if "variant" in body else forced
        return body, unit_id, forced

    def _choose(self, unit_id: str | None, forced: str | None) -> str:
        if forced is not None:
            if forced not in self.specs:
                raise InputError(
                    404, f"unknown variant {forced!r}; variants: {', '.join(self.specs)}"
                )
            return forced
        return assign(self.traffic, self.order, unit_id=unit_id, salt=self.name, rng=self.rng)

    def _decode(
        self, spec: VariantSpec, request: Request, body: dict[str, Any] | bytes
    ) -> np.ndarray:
        if isinstance(body, dict):
            return decode_json_input(spec, body)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in IMAGE_TYPES:
            return decode_image(spec, body)
        if kind in NPY_TYPES:
            return decode_npy(spec, body)
        raise InputError(
            415,
            f"content type {kind or 'none'!r} not served; send "
            f"application/json, {', '.join(IMAGE_TYPES)} or application/x-npy",
        )

    def _answer(
        self, request_id: str, variant: str, unit_id: str | None, t0: float, result: dict[str, Any]
    ) -> JSONResponse:
        logits = np.asarray(result["logits"], dtype=np.float64)
        scores = np.exp(logits - logits.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
        classes = self.specs[variant].classes
        preds = [
            {
                "class": int(np.argmax(s)),
                "label": classes[int(np.argmax(s))] if classes else None,
                "scores": [round(float(p), 6) for p in s],
            }
            for s in scores
        ]
        seconds = time.time() - t0
        self._log(
            Exposure(
                request_id,
                self.name,
                t0,
                unit_id,
                variant,
                200,
                None,
                1000 * seconds,
                result["queue_ms"],
                result["inference_ms"],
                int(result["batch_size"]),
                int(preds[0]["class"]),  # type: ignore[arg-type]
            )
        )
        self.metrics.request(labels(self.name, variant), 200, seconds)
        body: dict[str, Any] = {
            "request_id": request_id,
            "variant": variant,
            **preds[0],
            "batch_size": int(result["batch_size"]),
            "timing_ms": {
                "total": round(1000 * seconds, 3),
                "queue": round(result["queue_ms"], 3),
                "inference": round(result["inference_ms"], 3),
            },
        }
        if len(preds) > 1:
            body["predictions"] = preds
        return JSONResponse(body, headers={"x-variant": variant})

    def _refuse(
        self, request_id: str, variant: str, t0: float, status: int, message: str
    ) -> JSONResponse:
        self._log(Exposure(request_id, self.name, t0, None, variant, status, message[:500]))
        self.metrics.request(labels(self.name, variant), status, None)
        return problem(status, message)

    def _failed(self, request_id: str, variant: str, t0: float, error: Exception) -> JSONResponse:
        from ray.serve.exceptions import BackPressureError

        overloaded = isinstance(error, BackPressureError)
        status = 503 if overloaded or _replica_gone(error) else 500
        message = (
            f"variant {variant} is at its queue limit; retry after {RETRY_AFTER_S} s"
            if overloaded
            else f"variant {variant} replica unavailable ({type(error).__name__}); retry after "
            f"{RETRY_AFTER_S} s"
            if status == 503
            else f"variant {variant} failed: {type(error).__name__}: {error}"
        )
        seconds = time.time() - t0
        self._log(
            Exposure(
                request_id, self.name, t0, None, variant, status, message[:500], 1000 * seconds
            )
        )
        self.metrics.request(labels(self.name, variant), status, None)
        headers: dict[str, str] = {}
        if status == 503:
            headers["retry-after"] = str(RETRY_AFTER_S)
        if status == 500:
            log.error("request %s: %s", request_id, message)
        return problem(status, message, **headers)

    async def feedback(self, request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError):
            return problem(400, "body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
            return problem(422, "request_id: required, a string from a /predict answer")
        label = body.get("label")
        classes = next(iter(self.specs.values())).classes
        if isinstance(label, str) and label in classes:
            label = classes.index(label)
        if (
            isinstance(label, bool)
            or not isinstance(label, int)
            or not (0 <= label < max(len(classes), 1))
        ):
            allowed = f"0..{len(classes) - 1} or one of {list(classes)}" if classes else "an int"
            return problem(422, f"label = {body.get('label')!r}: allowed {allowed}")
        outcome = await self._add_feedback(body["request_id"], label)
        if outcome == "unknown":
            return problem(404, f"request_id {body['request_id']!r} was not answered here")
        if outcome == "conflict":
            return problem(409, f"request_id {body['request_id']!r} already has another label")
        return JSONResponse({"request_id": body["request_id"], "label": label, "status": outcome})

    async def _add_feedback(self, request_id: str, label: int) -> str:
        """Store a label; a request answered by another endpoint replica may still be in that
        replica's buffer, so an unknown id is looked up once more after its flush interval."""
        loop = asyncio.get_running_loop()
        outcome = "unknown"
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(3 * FLUSH_S)
            await self.flush()
            outcome = await loop.run_in_executor(
                self.io, self.store.add_feedback, request_id, label
            )
            if outcome != "unknown":
                break
        return outcome

    async def status(self) -> JSONResponse:
        controller = await self.controller.health.remote() if self.controller else None
        return JSONResponse(
            {
                "deployment": self.name,
                "traffic": self.traffic,
                "ramp": self.ramp,
                "ramp_check_error": controller or None,
                "variants": {n: {**asdict(s), "path": str(s.path)} for n, s in self.specs.items()},
            }
        )


def _replica_gone(error: Exception) -> bool:
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    return isinstance(error, ActorDiedError | ActorUnavailableError | RayActorError)
