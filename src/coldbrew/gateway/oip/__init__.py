"""Open Inference Protocol v2 (KServe v2 / Triton REST) for model functions.

``tensors`` is the datatype and binary-extension codec, ``protocol`` the request/response
framing, ``model`` the mapping onto the built-in model handler, ``catalog`` which functions are
models and their signatures, ``routes`` the HTTP endpoints (``endpoints()``, this protocol's
part of the gateway's route table).
"""

from coldbrew.gateway.oip.routes import endpoints

__all__ = ["endpoints"]
