"""Knative's semantics, reimplemented as pure modules that import nothing from the rest of knsd but errors.

- `autoscaler`: the KPA decider (`DeciderSpec`, `Autoscaler`); `windows` its metric windows.
- `config`: `config-autoscaler` (keys, defaults, validation); `annotations`: the autoscaling annotations.
- `target`: the metric target and scaling bounds; `scaler`: the reconciler's bounds and scale-to-zero gate.
- `controller`: one revision's autoscaling loop (injected clock), shared by the local runtime and simulator.
- `routing`: the activator's routing and buffering model; `meter`: the concurrency it reports.
- `validation`, `webhook`: the admission webhook's checks and wording; `fielderror`, `goconv` their formats.

Source of truth: knative/serving knative-v1.23.0.
"""
