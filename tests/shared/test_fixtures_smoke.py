"""The harness itself: each real server answers, and tests are isolated from each other."""

from secmsg.shared import bus
from secmsg.shared.blobstore import S3BlobStore
from secmsg.shared.settings import CommonSettings


async def test_real_servers_answer(settings: CommonSettings, mongo_db) -> None:
    await mongo_db["probe"].insert_one({"_id": "x", "v": 1})
    assert (await mongo_db["probe"].find_one({"_id": "x"}))["v"] == 1

    blobs = S3BlobStore.from_settings(settings)
    await blobs.ensure_bucket()
    await blobs.put_bytes("probe/key", b"hello")
    assert await blobs.get_bytes("probe/key") == b"hello"

    nc = await bus.connect(settings.nats_url, "probe")
    await bus.ensure_stream(nc)
    await bus.EventPublisher(nc).ping()
    await nc.close()
