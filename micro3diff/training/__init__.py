"""Training a 2D DDPM: training images (``data``), run settings (``config``), the loop (``loop``), the run
folder (``run_dir``) and the state files of exact resume (``state``)."""
