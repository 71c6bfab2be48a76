"""The step server's first import (definitions.step_preload): pauses Python's cyclic garbage
collector while the server imports dagster, the loader and the instance's storage and builds the
definitions, every object of which lives as long as the server; step_server.py resumes it once
they are all there (collector.keep_for_good). Collections meanwhile traverse ever more objects and
free next to nothing: ~0.3 s of the server's ~1.5 s of CPU, which the first steps wait for."""

import gc

gc.disable()
