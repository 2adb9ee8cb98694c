"""Tracing (off by default, spans over HTTP and NATS when on), consumer-lag gauges, publish
counts and log redaction -- in-process, against the test's real NATS."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Iterator

import httpx
import pytest
from faststream.nats import JStream, NatsBroker, PullSub
from nats.js.api import AckPolicy, ConsumerConfig
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from secmsg.shared import bus, logs, subjects, telemetry
from secmsg.shared.events import MessageOpened
from secmsg.shared.settings import CommonSettings


@pytest.fixture(autouse=True)
def _fresh_tracing() -> Iterator[None]:
    telemetry.shutdown_tracing()
    yield
    telemetry.shutdown_tracing()


def opened(tenant: str = "acme") -> MessageOpened:
    return MessageOpened(tenant_id=tenant, message_id=uuid.uuid4().hex,
                         event_id=uuid.uuid4().hex, recipient="r@example.org")


def enabled(settings: CommonSettings, exporter: InMemorySpanExporter, service: str
            ) -> TracerProvider:
    common = settings.model_copy(update={"otel_enabled": True})
    provider = telemetry.setup_tracing(service, common, exporter=exporter, install_global=False)
    assert provider is not None
    return provider


async def test_tracing_is_off_by_default(env: dict[str, str]) -> None:
    from secmsg.ingest.app import create_app

    common = CommonSettings()
    assert common.otel_enabled is False
    assert telemetry.setup_tracing("ingest", common) is None
    assert telemetry.tracer_provider() is None
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    app = create_app(common)
    assert not any("OpenTelemetry" in m.cls.__name__ for m in app.user_middleware)  # type: ignore[attr-defined]
    assert telemetry.nats_middleware(None) is None
    headers = {"Nats-Msg-Id": "x"}
    with telemetry.publish_span("secmsg.acme.message.received", headers):
        pass
    assert headers == {"Nats-Msg-Id": "x"}, "no trace context when tracing is off"


async def test_http_request_produces_a_server_span(settings: CommonSettings) -> None:
    from secmsg.ingest.app import create_app

    exporter = InMemorySpanExporter()
    enabled(settings, exporter, "ingest")
    app = create_app(settings.model_copy(update={"otel_enabled": True}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://ingest") as client:
        assert (await client.get("/openapi.json")).status_code == 200
        # probes live on the internal port, not on this app
        assert (await client.get("/healthz")).status_code == 404
    spans = exporter.get_finished_spans()
    server = [s for s in spans if s.kind == trace.SpanKind.SERVER]
    assert [s.attributes.get("http.route") for s in server] == ["/openapi.json"]
    assert server[0].resource.attributes["service.name"] == "secmsg-ingest"


async def test_trace_continues_across_nats(settings: CommonSettings) -> None:
    """A nats-py publish carries traceparent; FastStream's middleware continues the trace."""
    exporter = InMemorySpanExporter()
    provider = enabled(settings, exporter, "store")
    middleware = telemetry.nats_middleware(provider)
    assert middleware is not None
    broker = NatsBroker(settings.nats_url, logger=logging.getLogger("test.broker"))
    got: asyncio.Queue[str] = asyncio.Queue()
    consumer_trace: list[int] = []

    # A JetStream pull consumer as in the workers (a core subscription would answer the
    # publish's reply inbox itself).
    @broker.subscriber(subjects.any_tenant(subjects.MESSAGE_OPENED),
                       stream=JStream(subjects.STREAM, declare=False), durable="trace-probe",
                       pull_sub=PullSub(batch_size=1, timeout=0.5))
    async def on_opened(body: dict[str, object]) -> None:
        consumer_trace.append(trace.get_current_span().get_span_context().trace_id)
        await got.put("ok")

    # Added after the subscriber, as notify does (its broker is built in NotifyWorker).
    broker.add_middleware(middleware)
    nc = await bus.connect(settings.nats_url, "test-publisher")
    await bus.ensure_stream(nc)
    try:
        await broker.start()
        tracer = provider.get_tracer("test")
        with tracer.start_as_current_span("request") as root:
            await bus.EventPublisher(nc).publish(opened(), uuid.uuid4().hex)
        await asyncio.wait_for(got.get(), 10)
    finally:
        await broker.stop()
        await nc.close()
    trace_id = root.get_span_context().trace_id
    assert consumer_trace == [trace_id], "the consumer's span is in the publisher's trace"
    spans = exporter.get_finished_spans()
    producer = [s for s in spans if s.kind == trace.SpanKind.PRODUCER]
    consumer = [s for s in spans if s.kind == trace.SpanKind.CONSUMER]
    assert len(producer) == 1 and producer[0].context.trace_id == trace_id
    assert consumer and all(s.context.trace_id == trace_id for s in consumer)
    assert any(s.parent is not None and s.parent.span_id == producer[0].context.span_id
               for s in consumer)


async def test_publish_counts_and_consumer_lag(settings: CommonSettings) -> None:
    def published() -> float:
        return telemetry.EVENTS_PUBLISHED.labels("message.opened", "published")._value.get()

    def duplicates() -> float:
        return telemetry.EVENTS_PUBLISHED.labels("message.opened", "duplicate")._value.get()

    nc = await bus.connect(settings.nats_url, "test-lag")
    try:
        await bus.ensure_stream(nc)
        js = nc.jetstream()
        await js.add_consumer(subjects.STREAM, ConsumerConfig(
            durable_name="lag-probe", ack_policy=AckPolicy.EXPLICIT,
            filter_subject=subjects.any_tenant(subjects.MESSAGE_OPENED)))
        before, dup_before = published(), duplicates()
        pub = bus.EventPublisher(nc)
        for _ in range(3):
            assert await pub.publish(opened(), uuid.uuid4().hex)
        assert await pub.publish(opened(), "same-id")
        assert not await pub.publish(opened(), "same-id")
        assert published() == before + 4
        assert duplicates() == dup_before + 1
        await telemetry.poll_consumer_lag(js, ["lag-probe", "does-not-exist"])
        assert telemetry.CONSUMER_PENDING.labels("lag-probe")._value.get() == 4
        assert telemetry.CONSUMER_ACK_PENDING.labels("lag-probe")._value.get() == 0
        sub = await js.pull_subscribe_bind("lag-probe", subjects.STREAM)
        msgs = await sub.fetch(2, timeout=5)
        await msgs[0].ack_sync()
        await telemetry.poll_consumer_lag(js, ["lag-probe"])
        assert telemetry.CONSUMER_PENDING.labels("lag-probe")._value.get() == 2
        assert telemetry.CONSUMER_ACK_PENDING.labels("lag-probe")._value.get() == 1
    finally:
        await nc.close()


def test_log_lines_mask_addresses_and_api_keys() -> None:
    formatter = logs.JsonFormatter("test")
    try:
        raise RuntimeError("550 <Bob.Smith+x@mail.example.org> refused")
    except RuntimeError as exc:
        record = logging.LogRecord("t", logging.ERROR, __file__, 1,
                                   "send to %s with smk_0a1b_Zx-9_q failed", ("a@b.example",),
                                   (RuntimeError, exc, exc.__traceback__))
    line = formatter.format(record)
    assert "a@b.example" not in line and "Bob.Smith" not in line and "Zx-9_q" not in line
    assert "<address>" in line and "<api-key>" in line


def test_log_lines_mask_user_tokens_and_keep_alert_fields() -> None:
    formatter = logs.JsonFormatter("test")
    record = logging.LogRecord("t", logging.ERROR, __file__, 1,
                               "token smt_ab12_S3cr3t-x refused", (), None)
    record.alert = "dnsbl_listed"
    line = formatter.format(record)
    assert "S3cr3t" not in line and "<token>" in line
    assert json.loads(line)["alert"] == "dnsbl_listed"
