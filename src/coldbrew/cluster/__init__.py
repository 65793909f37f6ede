"""What makes several gateways one platform without a cluster engine (docs/CLUSTER.md).

- ``leases``: ``max_instances`` across gateways (Redis keys with a heartbeat);
- ``members``: which gateways are up, on which node, with what (``GET /v1/nodes``);
- ``supervisor``: ``coldbrew serve --workers N``, N gateway processes on one port;
- ``identity``: this gateway's id and the namespace gateways sharing one registry agree on.

Everything here is built by the composition root (``platform.py``) from settings: one gateway
without Redis gets in-process implementations that cost nothing.
"""
