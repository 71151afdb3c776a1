{{/*
Helpers of the PrometheusRule. Alert texts use Prometheus' own templating ({{ $labels.x }},
{{ $value }}), kept out of Helm's reach in raw strings.
*/}}

{{/* The label matchers (no braces) that pick this release's series. */}}
{{- define "tunewire.alerts.selector" -}}
{{- .Values.observability.selector | default (printf "namespace=%q" .Release.Namespace) }}
{{- end }}

{{/* An alert's `for`, labels and annotations. Call with (dict "root" $ "name" "TunewireX"
"alert" <its values> "summary" "..." "description" "..."). The runbook anchor is the alert's
name in lower case: the GitHub anchor of its heading in docs/runbooks.md. */}}
{{- define "tunewire.alerts.meta" -}}
{{- $pr := .root.Values.observability.prometheusRule }}
{{- $labels := merge (dict "severity" .alert.severity) (deepCopy ($pr.additionalAlertLabels | default dict)) -}}
for: {{ .alert.for }}
labels:
  {{- toYaml $labels | nindent 2 }}
annotations:
  summary: {{ .summary | quote }}
  description: {{ .description | quote }}
  runbook_url: {{ printf "%s#%s" $pr.runbookBaseUrl (lower .name) | quote }}
{{- end }}

{{/* Scrape jobs of the enabled services whose ServiceMonitor is on: the Prometheus
Operator names a ServiceMonitor's job after the Service. */}}
{{- define "tunewire.alerts.jobs" -}}
{{- $root := . }}
{{- $jobs := list }}
{{- range splitList " " (include "tunewire.services" $root) }}
{{- $svc := index $root.Values . }}
{{- if and $svc.enabled $svc.metrics.serviceMonitor.enabled }}
{{- $jobs = append $jobs (include "tunewire.componentName" (dict "root" $root "component" .)) }}
{{- end }}
{{- end }}
{{- join " " $jobs }}
{{- end }}
