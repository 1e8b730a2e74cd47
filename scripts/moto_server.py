"""moto_server, with DynamoDB's item writes made atomic, as DynamoDB's are.

scripts/emulator.sh starts moto through this file (`python scripts/moto_server.py -H … -p …`,
the same arguments as moto_server). moto's threaded server checks a write's condition and
applies the write without a lock, so two concurrent conditional writes on one item can both
succeed: measured on moto 5.2.5 with two UpdateItem calls conditioned on the same value, racing
while other clients scanned, both were accepted in 1 of 300 tries. DynamoDB never accepts both,
and the job ledger's exactly-once count of a chunk relies on that (tests/jobs.rs,
two_copies_of_a_continuation_do_not_both_run_to_the_end, counted a 40-row chunk twice on moto).
This wrapper holds one lock around each item write of moto's DynamoDB backend, then runs
moto_server unchanged; reads, SQS and everything else are moto's own.
"""

import functools
import sys
import threading

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main

_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_lock = threading.RLock()


def _atomic(write):
    @functools.wraps(write)
    def locked(self, *args, **kwargs):
        with _lock:
            return write(self, *args, **kwargs)

    return locked


for _name in _WRITES:
    setattr(DynamoDBBackend, _name, _atomic(getattr(DynamoDBBackend, _name)))

if __name__ == "__main__":
    sys.exit(main())
