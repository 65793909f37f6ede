"""Deploying functions: unpack an upload, check it loads in a real instance, then publish."""
