"""The only modules of retrieve that import pymongo, aiosmtplib or talk to NATS."""
