"""Prometheus metrics of the ingest service (module-level: one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter("secmsg_ingest_http_requests_total", "HTTP requests",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("secmsg_ingest_http_request_seconds", "HTTP request latency",
                         ["method", "route"],
                         buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))
BYTES_IN = Counter("secmsg_ingest_bytes_in_total", "Request body bytes received")
PLAINTEXT_BYTES = Counter("secmsg_ingest_plaintext_bytes_total",
                          "Plaintext bytes encrypted (bodies and attachments)")
ENCRYPT_SECONDS = Counter("secmsg_ingest_encryption_seconds_total",
                          "Seconds spent encrypting content (on the event loop)")
SUBMISSIONS = Counter("secmsg_ingest_submissions_total", "Message submissions by outcome",
                      ["outcome"])
