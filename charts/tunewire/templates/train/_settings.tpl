{{/* Settings only train has, fixed by the chart: its limits and its launcher. */}}
{{- define "tunewire.train.env" -}}
{{- $limits := .root.Values.train.limits }}
TUNEWIRE_TRAIN__MAX_RUNNING: {{ $limits.maxRunning | int | quote }}
TUNEWIRE_TRAIN__GPU_BUDGET: {{ $limits.gpuBudget | int | quote }}
TUNEWIRE_TRAIN__MAX_ATTEMPTS: {{ $limits.maxAttempts | int | quote }}
{{ include "tunewire.launcher.env" .root }}
{{- end }}

{{/* What train adds to the shared pod: ingress from evaluate's pods for the console's
overview (_console.tpl). */}}
{{- define "tunewire.train.pod" -}}
ingress:
  {{- include "tunewire.console.ingress" . | trim | nindent 2 }}
{{- end }}
