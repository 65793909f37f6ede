"""Async invocations: the durable queue, its worker, dead letters, destinations and schedules
(docs/ASYNC.md). ``service.AsyncInvocations`` is what the gateway holds."""
