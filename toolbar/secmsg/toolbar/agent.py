"""One pass over a mailbox: every notification replaced by the real message, in an order that
survives a crash at any point.

For each notification (found by ``X-Secure-Message-Id`` and confirmed by its body markers):

1. look for a copy already appended for that message id (``X-Secure-Message-Retrieved``
   carries ``id=<message id>``); if there is one, go to 4 -- an earlier run died after
   appending, so appending again would duplicate it;
2. fetch the original from retrieve (streamed to a spool file);
3. APPEND it with the notification's flags and INTERNALDATE, then SEARCH until the copy is
   seen -- no copy, no deletion;
4. mark the notification ``\\Deleted`` and expunge it (UID EXPUNGE when the server has UIDPLUS);
5. acknowledge to retrieve (audit trail).

A crash before 3 leaves the notification; between 3 and 4 leaves both, and the next run
finishes at 4; after 4 the real message alone. Never neither.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from secmsg.toolbar.client import Retrieve
from secmsg.toolbar.errors import AgentError, ImapUnavailable, RetrieveUnavailable
from secmsg.toolbar.mailbox import Mailbox, Placeholder

log = logging.getLogger("secmsg.toolbar")

EXIT_OK = 0  # every notification found was replaced (or could not be: see "unavailable")
EXIT_PARTIAL = 1  # the run finished but some messages failed; a later run retries them
# Test hook: end the process abruptly at a named step ("after-append", "after-delete").
CRASH_ENV = "SECMSG_TOOLBAR_TEST_CRASH"


@dataclass
class Summary:
    replaced: int = 0
    finished: int = 0  # a copy was already there (an earlier run died before deleting)
    unavailable: int = 0  # not yours, expired, purged, revoked or recalled: left in place
    failed: int = 0
    seen: set[str] = field(default_factory=set)

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.failed else EXIT_OK

    def line(self) -> str:
        return (f"run done: {self.replaced} replaced, {self.finished} finished from an earlier "
                f"run, {self.unavailable} unavailable, {self.failed} failed")


def _crash_point(name: str) -> None:
    if os.environ.get(CRASH_ENV) == name:
        log.warning("test hook %s=%s: exiting abruptly", CRASH_ENV, name)
        os._exit(70)


def replace_one(*, box: Mailbox, api: Retrieve, mailbox: str, p: Placeholder,
                summary: Summary) -> None:
    mid = p.message_id
    copies = box.find_copies(mid)
    if copies:
        box.delete(p.uid)
        summary.finished += 1
        log.info("%s: already in the mailbox (uid %s); notification uid %s removed",
                 mid, copies[0], p.uid)
    elif p.deleted:
        # The user deleted the notification and there is no copy: their choice stands.
        log.info("%s: notification uid %s is marked deleted; left alone", mid, p.uid)
        return
    else:
        got = api.fetch(mid)
        if got.status != "ok" or got.body is None:
            summary.unavailable += 1
            log.info("%s: %s; notification uid %s left in place", mid, got.status, p.uid)
            return
        with got.body:
            data = got.body.read()
        box.append(mailbox, p, data)
        copies = box.find_copies(mid)
        if not copies:
            summary.failed += 1
            log.error("%s: the appended message cannot be found; notification kept", mid)
            return
        _crash_point("after-append")
        box.delete(p.uid)
        _crash_point("after-delete")
        summary.replaced += 1
        log.info("%s: replaced (notification uid %s -> uid %s)", mid, p.uid, copies[-1])
    if not api.ack(mid):
        log.warning("%s: the acknowledgement was not accepted", mid)


def run_once(*, box: Mailbox, api: Retrieve, mailbox: str) -> Summary:
    summary = Summary()
    box.select(mailbox)
    for p in box.placeholders():
        summary.seen.add(p.message_id)
        try:
            replace_one(box=box, api=api, mailbox=mailbox, p=p, summary=summary)
        except (ImapUnavailable, RetrieveUnavailable):
            raise  # the connection is gone: nothing more this pass can do
        except AgentError as exc:
            if exc.exit_code == 5:
                raise  # token refused: every other message would fail the same way
            summary.failed += 1
            log.error("%s: %s", p.message_id, exc.detail)
    log.info("%s", summary.line())
    return summary
