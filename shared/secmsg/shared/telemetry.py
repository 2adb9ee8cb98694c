"""What every service shares for operators: consumer-lag gauges, events-published counts, and
OpenTelemetry tracing (off unless ``SECMSG_OTEL_ENABLED=true``).

Tracing spans HTTP (FastAPI instrumentation in ingest and retrieve) and NATS: publishing with
nats-py (``bus.EventPublisher``) opens a producer span and puts a W3C ``traceparent`` in the
message headers; FastStream's ``NatsTelemetryMiddleware`` in the workers continues that trace.
The OpenTelemetry packages are imported only when tracing is switched on, so a service that
never enables it never loads them.

Label values stay bounded: durable consumer names, event kinds, outcomes -- never message ids
or addresses.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge

from secmsg.shared import subjects

if TYPE_CHECKING:
    from nats.js import JetStreamContext
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from secmsg.shared.settings import CommonSettings

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter(
    "secmsg_events_published_total",
    "Events published to JetStream, by event kind and outcome (published: stored by the "
    "stream; duplicate: dropped by the stream's Nats-Msg-Id dedupe; failed: not confirmed)",
    ["kind", "outcome"])
CONSUMER_PENDING = Gauge(
    "secmsg_consumer_pending_messages",
    "Events in the stream not yet delivered to this durable consumer (consumer lag)",
    ["consumer"])
CONSUMER_ACK_PENDING = Gauge(
    "secmsg_consumer_ack_pending_messages",
    "Events delivered to this durable consumer and not yet acked (in flight or awaiting "
    "redelivery)", ["consumer"])

LAG_INTERVAL_S = 10.0


async def poll_consumer_lag(js: JetStreamContext, durables: Sequence[str]) -> None:
    """One round: read each durable's pending counts into the gauges."""
    for durable in durables:
        try:
            info = await js.consumer_info(subjects.STREAM, durable)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # not created yet, or NATS away: the next round retries
            log.debug("consumer info for %s unavailable (%s)", durable, type(exc).__name__)
            continue
        CONSUMER_PENDING.labels(durable).set(info.num_pending or 0)
        CONSUMER_ACK_PENDING.labels(durable).set(info.num_ack_pending or 0)


async def watch_consumer_lag(js: JetStreamContext, durables: Sequence[str], *,
                             interval_s: float = LAG_INTERVAL_S) -> None:
    """Keep the lag gauges current until cancelled (run it as a task next to the broker)."""
    while True:
        await poll_consumer_lag(js, durables)
        await asyncio.sleep(interval_s)


# --- tracing ------------------------------------------------------------------------------

_provider: TracerProvider | None = None


def setup_tracing(service: str, common: CommonSettings, *,
                  exporter: SpanExporter | None = None,
                  install_global: bool = True) -> TracerProvider | None:
    """The process's tracer provider, created on first call; ``None`` when tracing is off.

    Spans go to ``SECMSG_OTEL_ENDPOINT`` (OTLP over HTTP; unset: the exporter's own default,
    including ``OTEL_EXPORTER_OTLP_*``). Tests pass an in-memory ``exporter`` and
    ``install_global=False`` so the process-wide OpenTelemetry provider stays untouched.
    """
    global _provider
    if not common.otel_enabled:
        return None
    if _provider is not None:
        return _provider
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"secmsg-{service}"}))
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = common.otel_endpoint
        if endpoint and not endpoint.rstrip("/").endswith("/v1/traces"):
            endpoint = endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    if install_global:
        trace.set_tracer_provider(provider)
    _provider = provider
    log.info("OpenTelemetry tracing on", extra={"event": "otel.enabled"})
    return provider


def tracer_provider() -> TracerProvider | None:
    return _provider


def shutdown_tracing() -> None:
    """Flush and forget the provider (shutdown, and between tests)."""
    global _provider
    if _provider is not None:
        _provider.shutdown()
    _provider = None


def instrument_fastapi(app: Any, provider: TracerProvider | None) -> None:
    """Server spans for every request of a FastAPI app; a no-op when tracing is off."""
    if provider is None:
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    # Health and metrics are scraped every few seconds: tracing them is only noise.
    FastAPIInstrumentor.instrument_app(app, tracer_provider=provider,
                                       excluded_urls="healthz,readyz,metrics")


def nats_middleware(provider: TracerProvider | None) -> Any | None:
    """FastStream's NATS tracing middleware for a worker's broker (``None`` when off)."""
    if provider is None:
        return None
    from faststream.nats.opentelemetry import NatsTelemetryMiddleware

    return NatsTelemetryMiddleware(tracer_provider=provider)


@contextmanager
def publish_span(subject: str, headers: dict[str, str]) -> Iterator[None]:
    """Around a nats-py publish: a producer span, its ``traceparent`` injected in ``headers``
    (so the consumer's FastStream middleware continues the trace). Nothing when off."""
    if _provider is None:
        yield
        return
    from opentelemetry import trace
    from opentelemetry.propagate import inject

    tracer = _provider.get_tracer("secmsg.shared.bus")
    with tracer.start_as_current_span(f"{subject} publish", kind=trace.SpanKind.PRODUCER,
                                      attributes={"messaging.system": "nats",
                                                  "messaging.destination.name": subject}):
        inject(headers)
        yield
