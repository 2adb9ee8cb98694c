"""Who may send what: the rules for user tokens on ``POST /v1/messages``.

An API key sends as anyone of its tenant (the organisation vouches for its systems). A token
with the ``send`` scope sends only as its own address; if that address is not a tenant user
it belongs to an external recipient replying, who may write only to the tenant's users and to
people who sent them a message through the tenant -- a reply channel, never an open relay.
``in_reply_to`` must name a message of the tenant (an external replier: one addressed to
them).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from secmsg.ingest.ports import AccessRepo, Credentials, MessageRepo
from secmsg.shared.errors import Forbidden, InvalidInput
from secmsg.shared.events import Recipient
from secmsg.shared.ids import is_message_id


@dataclass
class SendGuard:
    """Checks a submission once its envelope is parsed (before any content is stored) and
    remembers the message it replies to, so the route can audit the reply afterwards."""

    creds: Credentials
    messages: MessageRepo
    access: AccessRepo
    in_reply_to: str | None = field(default=None, init=False)

    async def __call__(self, sender: str, recipients: list[Recipient],
                       in_reply_to: str | None) -> None:
        creds = self.creds
        tenant_id = creds.tenant.tenant_id
        external = creds.is_token and creds.role is None
        if creds.is_token and sender.lower() != creds.email:
            raise Forbidden("a token may send only from its own address "
                            f"(from must be {creds.email})")
        if in_reply_to is not None:
            if not is_message_id(in_reply_to):
                raise InvalidInput("in_reply_to must be a message id (32 hex characters)")
            original = await self.messages.get(tenant_id, in_reply_to)
            addressed = original is not None and creds.email in {
                a.lower() for a, _ in original.recipients}
            if original is None or (external and not addressed):
                raise InvalidInput("in_reply_to does not name a message you can reply to")
            self.in_reply_to = in_reply_to
        if not external or creds.email is None:
            return
        wanted = sorted({r.address.lower() for r in recipients})
        users = {str(u.get("email", "")).lower()
                 for u in await self.access.users(tenant_id, wanted)}
        others = [a for a in wanted if a not in users]
        allowed = (await self.messages.received_from(tenant_id, creds.email, others)
                   if others else set())
        refused = [a for a in others if a not in allowed]
        if refused:
            raise Forbidden(
                "you may write only to this organisation's users and to people who sent you "
                f"a message through it; not allowed: {', '.join(refused[:5])}")
