"""secmsg store: the system of record (messages, delivery state, audit, object lifecycle)."""
