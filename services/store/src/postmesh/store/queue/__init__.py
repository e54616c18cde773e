"""The store's coordination state: the delivery service's deferred queue and POP3 maildrop locks.

Both are leases that several replicas compete for, kept in the store's backend (SQLite or the
MongoDB API) next to the mailboxes. ``repository.py`` is the interface, ``sqlite.py`` and
``mongodb.py`` the backends (one contract suite, ``contract_suite.py``), ``servicer.py`` the gRPC
services ``DeliveryQueueService`` and ``MaildropLockService`` (``proto/.../store/v1/queue.proto``).
"""
