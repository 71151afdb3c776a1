{{/* Settings only evaluate has, fixed by the chart: its retries and its launcher. */}}
{{- define "tunewire.evaluate.env" -}}
TUNEWIRE_EVALUATE__MAX_ATTEMPTS: {{ .root.Values.evaluate.limits.maxAttempts | int | quote }}
{{ include "tunewire.launcher.env" .root }}
{{- end }}

{{/* Nothing evaluate adds to the shared pod. */}}
{{- define "tunewire.evaluate.pod" -}}
{}
{{- end }}
