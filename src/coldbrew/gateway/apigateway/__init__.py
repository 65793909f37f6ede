"""API Gateway proxy integration: functions mounted on HTTP routes receive REST API (payload
1.0) or HTTP API (payload 2.0) events, and their proxy responses become HTTP responses.

``events`` builds the events, ``responses`` reads the handler's answer, ``routing`` finds the
route of a request, ``handler`` serves the catch-all, ``admin`` is ``/v1/routes``."""
