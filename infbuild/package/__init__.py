"""Packaging artifacts into container images: what goes in (contents), the daemonless OCI builder (oci,
registry) and the Docker engine builder (engine)."""
