"""The step server's first import (definitions.step_preload): pauses Python's cyclic garbage
collector for the import of dagster's executor that follows, as running/preload.py pauses it for
the loader's imports (and resumes it after them) and step_server.py for the definitions. Every
object they make lives as long as the server; collections meanwhile traverse ever more of them
and free next to nothing: ~0.3 s of the server's ~1.5 s of CPU, which the first steps wait for."""

import gc

gc.disable()
