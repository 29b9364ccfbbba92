"""Signatures: who signed a stage folder, a cache entry or an image, and whether that key is trusted
(``dsse``: the envelope and keys; ``stage_signature``: a stage folder's ``stage.sig``; ``trust``: the settings)."""
