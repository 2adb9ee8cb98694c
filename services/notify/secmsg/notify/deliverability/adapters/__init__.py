"""The only modules of the deliverability process that import pymongo, aiosmtpd or dnspython."""
