"""Traces over OTLP/HTTP: on with TELEMETRY_ENABLED and OTEL_EXPORTER_OTLP_ENDPOINT.

FastAPI's built-in telemetry writes a span for each request (and for its dependencies
and endpoint) to the global tracer provider; this module installs the SDK's provider
with a batching OTLP exporter. The SDK and exporter are imported here only, so without
telemetry they cost neither start-up time nor, in an image built without the
`telemetry` extra, any space.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from app.core.config import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

logger = logging.getLogger(__name__)


def configure_tracing(settings: Settings) -> None:
    if not settings.TELEMETRY_ENABLED:
        return
    if not settings.OTEL_EXPORTER_OTLP_ENDPOINT:
        logger.warning(
            "TELEMETRY_ENABLED without OTEL_EXPORTER_OTLP_ENDPOINT: no traces"
        )
        return
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
    except ImportError as exc:
        raise RuntimeError(
            "TELEMETRY_ENABLED needs the `telemetry` extra: build the image with "
            "--build-arg REQUIREMENTS=requirements-telemetry.txt"
        ) from exc
    # A provider set up before, by an earlier app of this process or by the platform
    # (opentelemetry-instrument, a vendor's agent), is kept with its exporters.
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(
            otlp_provider(
                settings.OTEL_EXPORTER_OTLP_ENDPOINT, settings.OTEL_SERVICE_NAME
            )
        )


def otlp_provider(endpoint: str, service_name: str) -> TracerProvider:
    """A tracer provider that batches spans to `endpoint`/v1/traces over OTLP/HTTP."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    exporter = OTLPSpanExporter(endpoint=endpoint.rstrip("/") + "/v1/traces")
    # The batch's export thread is started again in each forked worker.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider
