"""The agent's errors, each with the process exit code it ends a run with.

    AgentError
    ├── UsageError          2  bad or missing configuration
    ├── ImapLoginFailed     3  the IMAP server refused the user or password
    ├── ImapUnavailable     4  the IMAP server cannot be reached (or broke off)
    ├── RetrieveUnavailable 4  retrieve cannot be reached (network, TLS, 5xx)
    ├── TokenRefused        5  retrieve refused the token (unknown, revoked, expired, no read)
    └── FetchFailed         -  one message's download broke off: counted, the run goes on

A run that completes but could not replace some messages exits 1 (see ``agent.EXIT_*``).
"""

from __future__ import annotations


class AgentError(Exception):
    exit_code = 1

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


class UsageError(AgentError):
    exit_code = 2


class ImapLoginFailed(AgentError):
    exit_code = 3


class ImapUnavailable(AgentError):
    exit_code = 4


class RetrieveUnavailable(AgentError):
    exit_code = 4


class TokenRefused(AgentError):
    exit_code = 5


class FetchFailed(AgentError):
    exit_code = 1
