"""Prometheus metrics of retrieve (module level: one registry per process)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("secmsg_retrieve_requests_total", "HTTP requests",
                   ["method", "route", "status"])
LATENCY = Histogram("secmsg_retrieve_request_seconds", "HTTP request latency (to last byte)",
                    ["method", "route"])
BYTES_OUT = Counter("secmsg_retrieve_bytes_out_total", "Response body bytes sent", ["route"])
DECRYPT_SECONDS = Counter("secmsg_retrieve_decrypt_seconds_total",
                          "Seconds spent decrypting content")
# Labels never tell a known address from an unknown one: a code request is counted when it is
# admitted (accepted) or refused (rate_limited), both decided before the address is looked up.
CODES = Counter("secmsg_retrieve_codes_total",
                "Sign-in code requests, by outcome (accepted | rate_limited)", ["outcome"])
CODE_MAIL_ERRORS = Counter("secmsg_retrieve_code_mail_errors_total",
                           "Admitted code requests whose lookup or email failed (database or "
                           "SMTP trouble; see the log)")
CODE_REQUESTS_DONE = Counter("secmsg_retrieve_code_requests_done_total",
                             "Admitted code requests whose background lookup (and email, for a "
                             "known address) has finished, whatever its outcome")
SIGNINS = Counter("secmsg_retrieve_signins_total", "Code verifications, by outcome", ["outcome"])
CLEANUP_DELETED = Counter("secmsg_retrieve_cleanup_deleted_total",
                          "Expired documents deleted by the periodic cleanup", ["collection"])
