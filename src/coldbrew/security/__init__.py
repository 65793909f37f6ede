"""Security and tenancy: who may call what, how often, from where, and with which artifacts.

    keys.py        API keys: generation, parsing, hashing, constant-time checks
    tokens.py      JWT bearer tokens (HS256 secret, RS256/ES256 JWKS file)
    principal.py   roles, permissions and function scopes of an authenticated caller
    policy.py      which permission each endpoint of each protocol needs
    authn.py       turning request credentials into a principal (keys cached briefly)
    limits.py      token bucket and quota arithmetic (pure functions of explicit times)
    limiter.py     limit state: in-process, or Redis shared by several gateways
    network.py     client address, trusted proxies, CIDR allowlists
    middleware.py  the ASGI middleware that applies all of the above to every request
    audit.py       the audit log of administrative actions
    artifacts.py   bundle re-verification, pickle policy, encryption at rest
    errors.py      UNAUTHORIZED, FORBIDDEN, RATE_LIMITED, QUOTA_EXCEEDED, DEADLINE_EXCEEDED

See docs/SECURITY.md.
"""
