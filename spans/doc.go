// Package spans carries OpenTelemetry trace spans down the read path: a
// sampled FUSE request's span (started by the metrics package's
// transport observer) rides on the request's context.Context into the
// filesystem, the storage layer and the backend, which open child spans
// with Start and mark retries and redirects with Event.
//
// Start derives its tracer from the span already in the context, so the
// lower layers need no tracer of their own and no package-level state: a
// request that was not sampled carries no span, and Start then returns the
// context unchanged with a no-op span, allocating nothing.
//
// Setup builds the daemon's tracer provider with the OTLP/HTTP exporter
// (go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp), which
// reads the standard OTEL_EXPORTER_OTLP_* environment variables; tracing
// is off unless an endpoint is configured.
package spans
