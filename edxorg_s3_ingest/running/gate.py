"""The first module a parked fork server imports (fork_server.py): the import returns once the
CLI opens the server's gate, and the server goes on to import the loading code; closed
unopened, the server ends here, having imported nothing more."""

from edxorg_s3_ingest.running.fork_server import wait_at_gate

wait_at_gate()
