// Package telemetry is a member's metrics and traces: the Prometheus
// vectors it registers on its own registry, wrapped as Go kit metrics, and
// the OpenTelemetry setup read from the standard OTEL_* variables. It knows
// nothing of Consul or of how a member is wired.
package telemetry
