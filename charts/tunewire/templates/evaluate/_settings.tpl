{{/* Settings only evaluate has, fixed by the chart: its retries, its launcher and where
the console's overview finds label and train (_console.tpl). */}}
{{- define "tunewire.evaluate.env" -}}
TUNEWIRE_EVALUATE__MAX_ATTEMPTS: {{ .root.Values.evaluate.limits.maxAttempts | int | quote }}
{{ include "tunewire.launcher.env" .root }}
{{ include "tunewire.console.env" .root }}
{{- end }}

{{/* What evaluate adds to the shared pod: egress to label's and train's HTTP ports for the
console's overview (_console.tpl). */}}
{{- define "tunewire.evaluate.pod" -}}
egress:
  {{- include "tunewire.console.egress" .root | trim | nindent 2 }}
{{- end }}
