"""Files: arrays in every format (``arrays``, ``vti``), pictures (``pictures``), model checkpoints
(``checkpoint``), atomic writes, JSON sidecars and provenance (``files``)."""
