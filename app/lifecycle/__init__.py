"""Data lifecycle: how long each kind of record is kept (retention), the pruner that removes what is
older, and erasure of an event's payload on request (issue 15)."""
