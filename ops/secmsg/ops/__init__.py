"""secmsg operator commands: ``python -m secmsg.ops.backup`` (dump, verify, restore) and
``python -m secmsg.ops.migrate`` (indexes, streams and the bucket before an upgrade)."""
