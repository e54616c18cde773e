"""Message store: mailboxes, messages and content-addressed blobs behind one repository."""
