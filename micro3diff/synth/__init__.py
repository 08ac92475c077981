"""Synthetic microstructures: the generators (``generators``), their placement geometry (``placement``) and
``m3d synth``'s files (``files``)."""
