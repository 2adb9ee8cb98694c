# Over 400 lines: one typed read-only view per collection, side by side
"""Typed read-only views of the MongoDB documents one service writes and others read.

Every collection has exactly one writer (its owner, ``OWNER``; the table is in docs/design.md,
"Who owns which collection"). A service that needs another one's documents reads them here:
a frozen pydantic model per document (the fields readers rely on; fields the owner adds later
are ignored, so the owner can grow its document without breaking a reader), the indexes the
readers' queries rely on (``INDEXES``: the owner creates them, tests/shared/test_documents.py
checks it does), and ``ReadView``, an accessor with find and count only -- no write method
exists to call.

A reader that needs a field the model lacks adds it here, in the owner's words, so a rename in
the owner breaks a test instead of another service at run time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Generic, Literal, NamedTuple, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from secmsg.shared import mongo


def _utc(value: datetime) -> datetime:
    # FerretDB and old documents may hand back naive datetimes; they are UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


UtcDatetime = Annotated[datetime, AfterValidator(_utc)]


class Index(NamedTuple):
    """An index a reader's query relies on, as the owner creates it."""

    name: str
    keys: tuple[tuple[str, int], ...]
    unique: bool = False


class Document(BaseModel):
    """Base of the read views: ``_id`` as ``id``, unknown fields ignored, immutable."""

    model_config = ConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    COLLECTION: ClassVar[str]
    OWNER: ClassVar[str]
    INDEXES: ClassVar[tuple[Index, ...]] = ()

    id: str = Field(alias="_id")


# --- messages (store) ---------------------------------------------------------------------

MessageState = Literal["stored", "purging", "purged", "recalled"]


class ObjectDoc(BaseModel):
    """One encrypted object of a message (``secmsg.shared.events.StoredObject`` on record)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    object_id: str
    key: str
    role: Literal["text", "html", "attachment", "original"]
    filename: str | None = None
    content_type: str = "application/octet-stream"
    size: int = 0
    sha256: str = ""
    wrapped_key: str = ""
    segment_size: int = 1


class RecipientDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    address: str
    kind: Literal["to", "cc", "bcc"] = "to"


class MessageDoc(Document):
    """``messages``: one per message, ``_id`` = the message id. A reader asking with a
    projection gets the defaults for the fields it left out."""

    COLLECTION = mongo.MESSAGES
    OWNER = "store"
    INDEXES = (
        Index("tenant_recipient", (("tenant_id", 1), ("recipient_addresses", 1))),
    )

    tenant_id: str = ""
    sender: str = ""
    submitted_by: str = ""
    recipients: tuple[RecipientDoc, ...] = ()
    recipient_addresses: tuple[str, ...] = ()  # lower-case, unique, in recipient order
    subject: str = ""
    objects: tuple[ObjectDoc, ...] = ()
    attachment_count: int = 0
    total_size: int = 0
    disclaimer: str | None = None
    expires_at: UtcDatetime | None = None
    received_at: UtcDatetime | None = None
    stored_at: UtcDatetime | None = None
    state: MessageState = "stored"
    purged_at: UtcDatetime | None = None
    recalled_at: UtcDatetime | None = None
    notify: bool = True
    # Ciphertext of the objects kept inline (small ones), by object id; removed on purge
    # and recall. An object listed here has nothing in the object store.
    inline: dict[str, bytes] = Field(default_factory=dict)


# --- mailbox (store) ------------------------------------------------------------------------

MailboxBox = Literal["in", "sent"]
MAILBOX_KEY_LEN = 48  # 16 hex digits of milliseconds since the epoch + the 32-hex message id


class MailboxDoc(Document):
    """``mailbox``: the listing index, one small entry per (message, recipient address) in box
    ``in`` and one per (message, sender) in box ``sent``, written by store with the message
    and removed when it is recalled or purged.

    ``_id`` = ``<tenant>:<box>:<address>:<key>``, ``key`` = ``mailbox_key(received_at, id)``
    (time-sortable, fixed width), so one person's box is one ``_id`` range, newest first by
    ``_id`` descending, and a page after a cursor is the same range cut at the cursor's key:
    an index range scan on MongoDB whatever the collection holds, no secondary index. The
    fields are what a listing shows, so a page reads nothing else; expiry is checked on the
    entry (``expires_at``)."""

    COLLECTION = mongo.MAILBOX
    OWNER = "store"

    tenant_id: str
    box: MailboxBox
    address: str  # lower-case
    message_id: str
    sender: str = ""
    recipients: tuple[RecipientDoc, ...] = ()  # ``sent`` entries only (the sent list shows them)
    subject: str = ""
    attachment_count: int = 0
    total_size: int = 0
    received_at: UtcDatetime
    expires_at: UtcDatetime | None = None
    # ``in`` entries: set by store when it records the recipient's first ``message.opened``
    opened: bool = False
    opened_at: UtcDatetime | None = None

    @staticmethod
    def prefix(tenant_id: str, box: MailboxBox, address: str) -> str:
        return f"{tenant_id}:{box}:{address.lower()}:"

    @staticmethod
    def key_range(tenant_id: str, box: MailboxBox, address: str,
                  before: str | None = None) -> dict[str, str]:
        """The ``_id`` range of one box (``$gt`` the prefix, ``$lt`` the prefix with its last
        ':' raised to ';'), cut below ``before`` (a key) for the page after a cursor."""
        start = MailboxDoc.prefix(tenant_id, box, address)
        return {"$gt": start, "$lt": start + before if before else start[:-1] + ";"}

    @property
    def key(self) -> str:
        return self.id[-MAILBOX_KEY_LEN:]

    @staticmethod
    def entries(message: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The entries of one message document as store writes it (``messages``): one per
        recipient address (box ``in``) and one for the sender (box ``sent``)."""
        key = mailbox_key(_utc(message["received_at"]), message["_id"])
        common = {"tenant_id": message["tenant_id"], "message_id": message["_id"],
                  "sender": message.get("sender", ""), "subject": message.get("subject", ""),
                  "attachment_count": message.get("attachment_count", 0),
                  "total_size": message.get("total_size", 0),
                  "received_at": message["received_at"],
                  "expires_at": message.get("expires_at")}
        out = [{"_id": MailboxDoc.prefix(message["tenant_id"], "in", a) + key, "box": "in",
                "address": a.lower(), **common}
               for a in message.get("recipient_addresses", ())]
        sender = str(message.get("sender", "")).lower()
        if sender:
            out.append({"_id": MailboxDoc.prefix(message["tenant_id"], "sent", sender) + key,
                        "box": "sent", "address": sender,
                        "recipients": list(message.get("recipients", ())), **common})
        return out


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def mailbox_key(received_at: datetime, message_id: str) -> str:
    """Time-sortable, fixed width: milliseconds since the epoch (16 hex digits; BSON keeps
    times to the millisecond, so the key made from a stored time is the same) and the id."""
    millis = (_utc(received_at) - _EPOCH) // timedelta(milliseconds=1)
    return f"{max(millis, 0):016x}{message_id}"


# --- audit_events, delivery_status, undeliverable, key_rotations (store) -------------------

AUDIT_TIME_LEN = 24  # ``2030-01-01T10:00:00.000Z``


def audit_time(at: datetime) -> str:
    """Fixed width, sortable as text, to the millisecond (what BSON keeps: the ``_id`` made
    from an event's time and the one made from the stored ``at`` are the same)."""
    t = _utc(at).astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


class AuditDoc(Document):
    """``audit_events``: append-only, deterministic ``_id``s. Extra fields (an attachment
    download's ``object_id``, ``range_start``, ``range_end``) are kept for the export.

    ``_id`` = ``<tenant>:<time>:<event id>`` (``id_for``): tenant and time first, so a
    tenant's trail between two times is one ``_id`` range (``id_range``), read in ``_id``
    order = time order; ``event_id`` is the event's own id (or the key store derives from
    what makes the fact unique), so a redelivered event builds the same ``_id`` and its insert
    collides. One message's events are read through ``tenant_message_id`` (equality on tenant
    and message, then the same ``_id`` order)."""

    model_config = ConfigDict(frozen=True, extra="allow", populate_by_name=True)
    COLLECTION = mongo.AUDIT
    OWNER = "store"
    INDEXES = (Index("tenant_message_id",
                     (("tenant_id", 1), ("message_id", 1), ("_id", 1))),)

    @staticmethod
    def id_for(tenant_id: str, at: datetime, event_id: str) -> str:
        return f"{tenant_id}:{audit_time(at)}:{event_id}"

    @staticmethod
    def id_range(tenant_id: str, since: datetime | None = None,
                 until: datetime | None = None) -> dict[str, str]:
        """``[<tenant>:<since>, <tenant>:<until>)``; the whole trail without bounds (tenant
        ids never hold ':' or ';')."""
        return {"$gte": f"{tenant_id}:{audit_time(since)}" if since else f"{tenant_id}:",
                "$lt": f"{tenant_id}:{audit_time(until)}" if until else f"{tenant_id};"}

    @staticmethod
    def is_current_id(doc_id: object, tenant_id: str) -> bool:
        """Whether ``doc_id`` is of the ``id_for`` shape (documents written before it have
        ``<message id>:...``, an event id or ``key.rotated:...``)."""
        if not isinstance(doc_id, str) or not doc_id.startswith(f"{tenant_id}:"):
            return False
        t = doc_id[len(tenant_id) + 1:len(tenant_id) + 1 + AUDIT_TIME_LEN + 1]
        return len(t) == AUDIT_TIME_LEN + 1 and t[4] == "-" and t[10] == "T" \
            and t[-2:] == "Z:"

    tenant_id: str
    event_id: str | None = None  # on documents written before it: the ``_id`` alone
    message_id: str = ""
    kind: str
    actor: str = ""
    recipient: str | None = None
    subject_address: str | None = None
    detail: dict[str, str] = Field(default_factory=dict)
    client_ip: str | None = None
    user_agent: str | None = None
    at: UtcDatetime
    # an attachment download's (``attachment.downloaded``)
    object_id: str | None = None
    range_start: int | None = None
    range_end: int | None = None


DeliveryState = Literal["sent", "deferred", "failed", "bounced"]


class DeliveryStatusDoc(Document):
    """``delivery_status``: the state that stands per recipient, ``_id`` =
    ``<message id>:<address>``. ``tenant_updated``: the admin delivery figures of one tenant
    over a time range (an index range on MongoDB, not a scan of every tenant's rows)."""

    COLLECTION = mongo.DELIVERY_STATUS
    OWNER = "store"
    INDEXES = (Index("message", (("message_id", 1),)),
               Index("tenant_updated", (("tenant_id", 1), ("updated_at", 1))))

    tenant_id: str
    message_id: str
    recipient: str
    state: DeliveryState
    attempt: int | None = None
    reason: str | None = None
    retry_at: UtcDatetime | None = None
    bounce_status: str | None = None
    hard: bool | None = None
    occurred_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None


class UndeliverableDoc(Document):
    """``undeliverable``: an address that hard-bounced, ``_id`` = ``<tenant>:<address>``."""

    COLLECTION = mongo.UNDELIVERABLE
    OWNER = "store"

    tenant_id: str
    address: str = ""  # also the ``_id`` after "<tenant>:"
    status: str = ""
    message_id: str = ""
    at: UtcDatetime | None = None

    @staticmethod
    def id_for(tenant_id: str, address: str) -> str:
        return f"{tenant_id}:{address.lower()}"


RotationState = Literal["requested", "running", "done", "failed"]


class KeyRotationDoc(Document):
    """``key_rotations``: progress of one re-wrap job, ``_id`` = the rotation id."""

    COLLECTION = mongo.KEY_ROTATIONS
    OWNER = "store"

    tenant_id: str
    generation: int
    state: RotationState
    total: int | None = None
    done: int | None = None
    rewrapped: int | None = None
    reason: str | None = None
    requested_by: str | None = None
    started_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None
    finished_at: UtcDatetime | None = None


# --- dnsbl_status (notify) -----------------------------------------------------------------

class ListingDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    target: str
    zone: str
    answer: str = ""


class DnsblStatusDoc(Document):
    """``dnsbl_status``: one document, ``_id`` = ``mongo.DNSBL_STATUS_ID``."""

    COLLECTION = mongo.DNSBL_STATUS
    OWNER = "notify"

    listed: bool = False
    listings: tuple[ListingDoc, ...] = ()
    checked_at: UtcDatetime | None = None
    relay: Literal["primary", "standby"] = "primary"
    switched_at: UtcDatetime | None = None


# --- tenants, tenant_users, revocations (ingest) -------------------------------------------

class TemplateDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    source: str
    version: int = 1
    updated_at: UtcDatetime | None = None
    updated_by: str | None = None


class BrandingDoc(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    logo_url: str | None = None
    primary_color: str | None = None


class TenantDoc(Document):
    """``tenants``: the tenant's profile and settings. ``smtp``, ``dkim`` and ``policy`` stay
    mappings here: their shapes are ingest's (``secmsg.ingest.tenant_smtp`` and the admin
    policy model) and each reader checks the few keys it uses."""

    COLLECTION = mongo.TENANTS
    OWNER = "ingest"

    name: str | None = None
    display_name: str | None = None
    footer: str | None = None
    disclaimers: tuple[str, ...] = ()
    branding: BrandingDoc = Field(default_factory=BrandingDoc)
    templates: dict[str, TemplateDoc] = Field(default_factory=dict)
    policy: dict[str, Any] = Field(default_factory=dict)
    smtp: dict[str, Any] | None = None
    dkim: dict[str, Any] | None = None
    list_unsubscribe: dict[str, Any] | None = None
    key_generation: int = 0
    disabled_at: UtcDatetime | None = None

    def shown_name(self) -> str:
        return self.display_name or self.name or self.id


class TenantUserDoc(Document):
    """``tenant_users``: who at the tenant sends or administers, ``_id`` =
    ``<tenant>:<address>``."""

    COLLECTION = mongo.TENANT_USERS
    OWNER = "ingest"

    tenant_id: str = ""
    email: str = ""
    role: Literal["sender", "admin"] | None = None

    @staticmethod
    def id_for(tenant_id: str, address: str) -> str:
        return f"{tenant_id}:{address.lower()}"


class RevocationDoc(Document):
    """``revocations``: access withdrawn by the tenant. ``_id`` = ``<message id>:<address>``
    (one recipient) or ``<message id>:*`` (a recall: everyone), kinds ``revoked`` /
    ``recalled``; or ``token:<token id>`` (kind ``token``: an admin revoked a user's token --
    retrieve owns ``tokens``, so its token checks read this too)."""

    COLLECTION = mongo.REVOCATIONS
    OWNER = "ingest"

    tenant_id: str = ""
    message_id: str = ""
    recipient: str = "*"
    kind: Literal["revoked", "recalled", "token"] = "revoked"
    token_id: str | None = None
    revoked_at: UtcDatetime | None = None
    revoked_by: str | None = None

    @staticmethod
    def id_for(message_id: str, address: str | None) -> str:
        return f"{message_id}:{address.lower() if address else '*'}"

    @staticmethod
    def id_for_token(token_id: str) -> str:
        return f"token:{token_id}"


class TokenUseDoc(Document):
    """``token_use``: when a user token was last used at ingest, ``_id`` = the token id
    (written at most once a minute per token). Retrieve records its own uses in ``tokens``;
    the later of the two is the token's last use."""

    COLLECTION = mongo.TOKEN_USE
    OWNER = "ingest"

    tenant_id: str = ""
    last_used_at: UtcDatetime | None = None


# --- accounts, tokens (retrieve) -----------------------------------------------------------

class AccountDoc(Document):
    """``accounts``: the fields other services may read (never the secrets)."""

    COLLECTION = mongo.ACCOUNTS
    OWNER = "retrieve"

    tenant_id: str = ""
    email_lower: str = ""
    sessions_valid_after: UtcDatetime | None = None

    @staticmethod
    def id_for(tenant_id: str, address: str) -> str:
        return f"{tenant_id}:{address.lower()}"


class TokenDoc(Document):
    """``tokens``: a user token, ``_id`` = the SHA-256 of the token (the token itself is
    never stored)."""

    COLLECTION = mongo.TOKENS
    OWNER = "retrieve"

    token_id: str = ""
    tenant_id: str = ""
    email: str = ""
    scopes: tuple[str, ...] = ()
    client: str | None = None
    label: str | None = None
    created_at: UtcDatetime | None = None
    expires_at: UtcDatetime | None = None
    last_used_at: UtcDatetime | None = None
    revoked_at: UtcDatetime | None = None


# --- the accessor ------------------------------------------------------------------------

D = TypeVar("D", bound=Document)
Filter = Mapping[str, Any]
Projection = Mapping[str, Any] | Sequence[str] | None
Sort = Sequence[tuple[str, int]] | None


class ReadView(Generic[D]):
    """Find and count on one collection, documents decoded into ``model``; nothing else.

    Database errors that mean "unreachable" become ``DependencyUnavailable`` (503 / retry).
    """

    def __init__(self, db: AsyncDatabase[Any], model: type[D]) -> None:
        self._col: AsyncCollection[Any] = db[model.COLLECTION]
        self._model = model

    @property
    def model(self) -> type[D]:
        return self._model

    async def get(self, doc_id: str, projection: Projection = None) -> D | None:
        return await self.find_one({"_id": doc_id}, projection)

    async def find_one(self, query: Filter, projection: Projection = None, *,
                       sort: Sort = None) -> D | None:
        async with mongo.unavailable_as_503():
            doc = await self._col.find_one(dict(query), projection, sort=sort)
        return None if doc is None else self._model.model_validate(doc)

    async def find(self, query: Filter, projection: Projection = None, *, sort: Sort = None,
                   limit: int = 0, batch_size: int = 0) -> list[D]:
        async with mongo.unavailable_as_503():
            cursor = self._col.find(dict(query), projection, sort=sort, limit=limit,
                                    batch_size=batch_size)
            return [self._model.model_validate(d) async for d in cursor]

    async def iterate(self, query: Filter, projection: Projection = None, *, sort: Sort = None,
                      batch_size: int = 0) -> AsyncIterator[D]:
        """``find`` one document at a time (constant memory, e.g. an export)."""
        async with mongo.unavailable_as_503():
            cursor = self._col.find(dict(query), projection, sort=sort, batch_size=batch_size)
            async for doc in cursor:
                yield self._model.model_validate(doc)

    async def count(self, query: Filter) -> int:
        async with mongo.unavailable_as_503():
            return await self._col.count_documents(dict(query))

    async def count_by(self, query: Filter, field: str) -> dict[str, int]:
        """How many documents match ``query``, per value of ``field``, in one pass (one
        ``aggregate``: ``$match`` then ``$group``), not one count per value."""
        pipeline = [{"$match": dict(query)}, {"$group": {"_id": f"${field}", "n": {"$sum": 1}}}]
        async with mongo.unavailable_as_503():
            cursor = await self._col.aggregate(pipeline)
            return {str(d["_id"]): int(d["n"]) async for d in cursor}


VIEWS: tuple[type[Document], ...] = (
    MessageDoc, MailboxDoc, AuditDoc, DeliveryStatusDoc, UndeliverableDoc, KeyRotationDoc,
    DnsblStatusDoc, TenantDoc, TenantUserDoc, RevocationDoc, TokenUseDoc, AccountDoc, TokenDoc,
)


def later(*values: datetime | None) -> datetime | None:
    """The latest of the given times (None when there is none): a token's last use."""
    known = [v for v in values if v is not None]
    return max(known) if known else None
