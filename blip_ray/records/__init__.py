"""The experiment directory's files, read and written without Ray: where each file lives and the
JSON records kept there (``layout``), a finished task's result row and its file (``rows``), and
the trials read back from a directory (``trials``). Imports only ``blip_ray.metrics`` and
``blip_ray.errors``: the trainables (``supervised``, ``rl``), ``experiments.run`` and ``report``
import it, never the reverse. A change to what a row holds or where it is written touches
``rows`` alone."""
