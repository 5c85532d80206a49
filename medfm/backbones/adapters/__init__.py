"""Library adapters behind ``create_backbone`` for open names (``hf:``, open_clip towers from the hub)."""
