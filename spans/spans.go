package spans

import (
	"context"
	"errors"
	"os"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Instrumentation is the tracer name of the daemon's spans.
const Instrumentation = "github.com/nydus-virtiofsd/nydus-virtiofsd"

// Start opens a child span of the span in ctx; without a recording span
// in ctx it returns ctx and a no-op span. Set attributes only when
// span.IsRecording(), so that untraced requests build none.
func Start(ctx context.Context, name string) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.IsRecording() {
		return ctx, parent
	}
	return parent.TracerProvider().Tracer(Instrumentation).Start(ctx, name)
}

// Event adds an event to the span in ctx, if it is recording.
func Event(ctx context.Context, name string, attrs ...attribute.KeyValue) {
	if s := trace.SpanFromContext(ctx); s.IsRecording() {
		s.AddEvent(name, trace.WithAttributes(attrs...))
	}
}

// Recording says whether ctx carries a recording span (to skip building
// event attributes otherwise).
func Recording(ctx context.Context) bool { return trace.SpanFromContext(ctx).IsRecording() }

// End ends span, marking it failed with err.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// Options configure Setup.
type Options struct {
	// Endpoint is the OTLP/HTTP endpoint URL (http://host:4318, the
	// /v1/traces path is added). Empty: OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; if neither is set, tracing is
	// off.
	Endpoint string
	// Service is the service.name resource attribute.
	Service string
	// Getenv reads the environment (nil: os.Getenv).
	Getenv func(string) string
}

// ErrOff is returned by Setup when no endpoint is configured.
var ErrOff = errors.New("tracing is off: no OTLP endpoint configured")

// Setup returns a tracer provider exporting over OTLP/HTTP in batches,
// and its shutdown (which flushes).
func Setup(ctx context.Context, o Options) (*sdktrace.TracerProvider, error) {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var opts []otlptracehttp.Option
	switch {
	case o.Endpoint != "":
		opts = append(opts, otlptracehttp.WithEndpointURL(trimSlash(o.Endpoint)+"/v1/traces"))
	case getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "":
		// otlptracehttp reads them.
	default:
		return nil, ErrOff
	}
	exp, err := otlptracehttp.New(ctx, opts...)
	if err != nil {
		return nil, err
	}
	service := o.Service
	if service == "" {
		service = "nydus-virtiofsd"
	}
	res := resource.NewSchemaless(semconv.ServiceName(service))
	// Requests are sampled by the transport before a span exists; every
	// span that is started is recorded.
	return sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.AlwaysSample())), nil
}

func trimSlash(s string) string {
	for len(s) > 0 && s[len(s)-1] == '/' {
		s = s[:len(s)-1]
	}
	return s
}
