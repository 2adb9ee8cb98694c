"""notify's deliverability process (``python -m secmsg.notify.deliverability``): the bounce
receiver (an SMTP server for the VERP bounce address, publishing ``notification.bounced``)
and the DNSBL monitor (writes the ``dnsbl_status`` document the notify workers read).

One replica: it listens for inbound mail and owns the ``dnsbl_status`` document, so it is not
scaled like the workers. Operators' guide: docs/deliverability.md.
"""
