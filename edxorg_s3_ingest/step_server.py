"""Imported once by the fork server of Dagster's multiprocess executor (definitions.multiprocess):
builds the code location's definitions there, so that each step process forked from the server
finds them built (`definitions.defs` keeps them per process) rather than building them again.

The server starts with the run's environment and working directory, which its step processes
inherit: they ask `defs` for exactly what was built here.
"""

from edxorg_s3_ingest.definitions import defs

defs()
