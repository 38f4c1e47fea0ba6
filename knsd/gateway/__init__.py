"""`knsd gateway`: an always-on CPU service in front of the Stable Diffusion route, all of its state in Redis.

It serves the same A1111 and OpenAI routes and forwards them to the Knative route (or the local route):
generation requests, synchronous or async (`Prefer: respond-async`), become jobs in one Redis Stream read by
a consumer group, dispatched with a bounded number in flight; a gateway killed mid-job loses nothing (its
pending entries are reclaimed). Tenants (bearer keys), their token buckets and queue limits, the result
cache, the circuit breaker and the in-flight slots live in Redis too, so replicas share them.

Modules: `settings` (flags, pure), `tenants` (keys and limits, pure), `keys` (Redis key names), `scripts`
(the Lua that makes every transition atomic), `store` (jobs over those scripts), `record` (a job as JSON),
`cachekey` (what may be cached, pure), `resultcache`, `ratelimit`, `breaker`, `slots` (shared state),
`sse` (the event-stream parser), `upstream` (HTTP to the route), `dispatcher` (the workers), `events`
(Redis pub/sub to waiting requests), `handlers` + `app` (HTTP), `metrics`, `server` (run it).
"""
