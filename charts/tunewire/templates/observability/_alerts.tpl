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

{{/* How much a counter grew in a window, counting series born in it. increase() cannot see
the first increment of a labelled counter (the series appears already at 1), so the first
failure of an objective, or its first rejection, would never alert: series that exist now but
did not a window ago count with their whole value. Call with (dict "metric" "name" "matchers"
"label matchers" "window" "1h"); gives an instant vector to aggregate. */}}
{{- define "tunewire.alerts.increase" -}}
{{- $x := printf "%s{%s}" .metric .matchers -}}
(increase({{ $x }}[{{ .window }}]) and {{ $x }} offset {{ .window }})
  or ({{ $x }} unless {{ $x }} offset {{ .window }})
{{- end }}

{{/* A multi-window, multi-burn-rate condition (the SRE workbook's): for any window pair, the
share of bad requests over the long window and over the short one are both above burnRate
times the error budget (1 - objective), while at least minRate requests per second arrive.
Call with (dict "alert" <its values> "bad" "<PromQL with %[1]s for the window>" "total"
"<the same for all requests>"); both aggregate to the same labels. */}}
{{- define "tunewire.alerts.burn" -}}
{{- $a := .alert }}
{{- $bad := .bad }}
{{- $total := .total }}
{{- range $i, $w := $a.windows }}
{{- if $i }}
or
{{ end -}}
(
  {{ printf $bad $w.long }}
    / {{ printf $total $w.long }}
    > {{ $w.burnRate }} * (1 - {{ $a.objective }})
  and
  {{ printf $bad $w.short }}
    / {{ printf $total $w.short }}
    > {{ $w.burnRate }} * (1 - {{ $a.objective }})
  and
  {{ printf $total $w.short }}
    > {{ $a.minRate }}
)
{{- end }}
{{- end }}

{{/* A histogram bucket bound as prometheus-client writes it in the `le` label: 30 is
"30.0", 0.25 is "0.25". */}}
{{- define "tunewire.alerts.le" -}}
{{- $bound := float64 . }}
{{- if eq $bound (floor $bound) }}{{ printf "%.1f" $bound }}{{ else }}{{ $bound }}{{ end }}
{{- end }}

{{/* A burn-rate alert's window pairs, for people to read: "1h and 5m at 14.4x, ...". */}}
{{- define "tunewire.alerts.windows" -}}
{{- $pairs := list }}
{{- range .windows }}
{{- $pairs = append $pairs (printf "%s and %s at %vx" .long .short .burnRate) }}
{{- end }}
{{- join ", " $pairs }}
{{- end }}
