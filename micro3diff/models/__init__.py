"""Pretrained models shipped with the package: ``<name>.safetensors`` + ``<name>.json`` (+ ``<name>.md`` card)."""
