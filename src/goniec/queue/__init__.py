"""The queue: the only code that creates, changes or deletes queued messages.

`api` is the port every caller uses (`QueueStore`, `MessageWriter` and the data
types); `fs` is the embedded filesystem spool (`fsfile` holds the layout of
its message files), `memory` an in-memory double for tests; `records` is the
pure envelope record format and `ids` the queue ids. Only `goniec.app` names a
concrete backend.
"""
