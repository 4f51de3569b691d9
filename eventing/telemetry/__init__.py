"""The bus's own instruments, used by the transport and the consumer: Prometheus counters
(``metrics``) and OpenTelemetry spans and trace context (``tracing``)."""
